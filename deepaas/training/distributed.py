"""Data-parallel training over a job's leased devices, with ``torch.distributed``.

A training job that was granted ``deepaas_gpus=K`` GPUs runs in its own process
and sees exactly those GPUs (``CUDA_VISIBLE_DEVICES``), listed in the
``DEEPAAS_DEVICES`` environment variable as ``cuda:0,...,cuda:K-1`` (``cpu``
for a job without GPUs). :func:`run` starts one process per device, the
"ranks", joins them in one process group, and calls the scientist's function
in each::

    from deepaas.training import distributed

    def train_rank(ctx, epochs):            # module level: it must be picklable
        model = DistributedDataParallel(Net().to(ctx.device))
        for batch in ctx.shard(batches):    # this rank's share of the data
            ...
        return loss                          # returned to the caller, by rank

    losses = distributed.run(train_rank, 10)

Why processes and not threads: one Python process per GPU is how PyTorch runs
data-parallel training (``DistributedDataParallel``); each rank has its own
interpreter, CUDA context and GIL. Why ``spawn`` and never ``fork``: a forked
child inherits the parent's CUDA state and threads, which CUDA does not
support, so each rank starts a fresh interpreter and re-imports ``fn`` by name.

Across nodes: when ``torchrun`` or Slurm's ``srun`` started this process as
one task of a group (their environment says so: :mod:`deepaas.training.launch`),
the ranks :func:`run` starts here join that group rather than making their
own, so the same plugin code trains on one GPU server or on several nodes.

NCCL is the backend on GPUs (the fast one); Gloo on the CPU, so the same code
runs, and is tested, on a machine without GPUs (``devices=["cpu", "cpu"]``
gives two Gloo ranks).

torch is imported inside the functions, so importing this module is cheap and
works where torch is not installed.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deepaas.training import launch as launcher
from deepaas.training.launch import Launch, LaunchError
from deepaas.training.ranks import (
    DistributedError,
    collect,
    cpu_count,
    format_exception,
    free_port,
    stop,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "DistributedError",
    "LaunchError",
    "RankContext",
    "devices_from_env",
    "run",
]

LOG = logging.getLogger(__name__)

# Set by the training runner in a job's process: the devices it leased.
DEVICES_ENV = "DEEPAAS_DEVICES"


@dataclass(frozen=True)
class RankContext:
    """What a rank knows about itself; the first argument of ``fn``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True in rank 0: the one that should save weights and log."""
        return self.rank == 0

    def shard(self, data: Any, *, even: bool = False) -> Any:
        """This rank's share of ``data``: items ``rank, rank + world_size, ...``.

        The shards of all ranks are disjoint and together cover ``data``. A
        torch ``Dataset`` gives a ``torch.utils.data.Subset`` (to hand to a
        ``DataLoader``), any other sequence a list.

        ``even=True`` drops the last ``len(data) % world_size`` items so every
        rank gets the same number. Use it when each item is a step of
        ``DistributedDataParallel`` (a list of batches): every rank must take
        the same number of steps, or the ranks with more wait forever for the
        others in the gradient all-reduce.
        """
        n = len(data)
        if even:
            n -= n % self.world_size
        indices = range(self.rank, n, self.world_size)
        if _is_torch_dataset(data):
            from torch.utils.data import Subset

            return Subset(data, list(indices))
        return [data[i] for i in indices]

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over all ranks (a new tensor, in every rank).

        Handy for a loss or a metric each rank computed on its own shard.
        """
        import torch.distributed as dist

        total = tensor.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total / self.world_size

    def barrier(self) -> None:
        """Wait until every rank gets here (e.g. rank 0 finished writing)."""
        import torch.distributed as dist

        dist.barrier()


def devices_from_env() -> list[str]:
    """The devices leased to this job, from ``DEEPAAS_DEVICES``.

    The training runner sets it to a comma list such as ``cuda:0,cuda:1``
    (indices as this process sees them, after ``CUDA_VISIBLE_DEVICES``) or
    ``cpu``. Unset, empty or ``auto`` (the server's own ``--devices`` value,
    when this runs outside a job) means every GPU this process sees, else one
    CPU rank.
    """
    value = os.environ.get(DEVICES_ENV, "").strip()
    if value in ("", "auto"):
        import torch

        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(count)] if count else ["cpu"]
    devices = [item.strip() for item in value.split(",") if item.strip()]
    for device in devices:
        if device != "cpu" and not device.startswith("cuda"):
            raise ValueError(
                f"{DEVICES_ENV}={value!r}: expected a comma list of 'cuda:N' "
                "or 'cpu' (the devices leased to the training job)"
            )
    return devices


def run(
    fn: Callable[..., Any],
    *args: Any,
    devices: Sequence[str] | None = None,
    backend: str | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Call ``fn(ctx, *args, **kwargs)`` once per device, data-parallel.

    Each call runs in its own process (started with ``spawn``), with
    ``torch.distributed`` initialised for it: one rank per device, on
    ``devices[i]`` (``torch.cuda.set_device`` is done for GPUs). ``ctx`` is
    a :class:`RankContext`.

    Alone, the ranks are ``0 .. len(devices) - 1`` on this host, meeting at
    ``tcp://127.0.0.1:<free port>``. When a launcher started this process as
    one task of a group (torchrun's or Slurm's environment, see
    :mod:`deepaas.training.launch`), they join that group instead: task
    ``r`` of ``n`` with ``k`` devices runs ranks ``r*k .. r*k + k - 1`` of
    ``n*k``, meeting at the launcher's ``MASTER_ADDR:MASTER_PORT``; every
    task must have as many devices.

    ``devices`` defaults to the job's leased devices (:func:`devices_from_env`);
    in a launched task without a lease, to one device: the GPU of its
    ``LOCAL_RANK`` (torchrun's convention; ``cuda:0`` when the task sees a
    single GPU, as with ``srun --gpus-per-task=1``), or the CPU.
    ``backend`` defaults to ``nccl`` when they are all GPUs, else ``gloo``.

    ``fn``, ``args`` and ``kwargs`` are pickled to reach the ranks, so ``fn``
    must be a module-level function (not a lambda, a nested function or a
    method of a local object), and a script that calls :func:`run` must do so
    under ``if __name__ == "__main__":``. Return values come back pickled too:
    return plain Python values or CPU tensors.

    Returns every rank's return value, in rank order (in a launched group,
    gathered from all tasks, in each task). If a rank here raises, or dies,
    the other ranks here are stopped and :class:`DistributedError` names it;
    ranks in other tasks are the launcher's to stop. A malformed launcher
    environment raises :class:`LaunchError` before any process starts.
    """
    import torch.multiprocessing as mp

    launch = launcher.from_env(os.environ)
    if devices is not None:
        devices = list(devices)
    elif launch is not None and not _leased():
        devices = _task_devices(launch)
    else:
        devices = devices_from_env()
    if not devices:
        raise ValueError("run() needs at least one device")
    if backend is None:
        backend = _default_backend(devices)
    _check_picklable(fn, args, kwargs)

    local = len(devices)
    if launch is None:
        first, world_size = 0, local
        init_method = f"tcp://127.0.0.1:{free_port()}"
    else:
        first, world_size = launch.rank * local, launch.tasks * local
        init_method = launch.init_method
        LOG.info(
            "joining the process group %s started: task %d of %d, ranks %d-%d "
            "of %d, rendezvous at %s",
            launch.source,
            launch.rank,
            launch.tasks,
            first,
            first + local - 1,
            world_size,
            init_method,
        )
    context = mp.get_context("spawn")
    # SimpleQueue: put() writes to the pipe before returning, so once a rank's
    # process has exited, everything it sent can be read (see ranks.collect).
    messages = context.SimpleQueue()
    plan = _Plan(world_size, local, backend, init_method, launch is not None)
    processes = [
        context.Process(
            target=_rank_main,
            args=(plan, index, first + index, device, fn, args, kwargs),
            kwargs={"messages": messages},
            name=f"deepaas-rank-{first + index}",
            # Not daemonic: a rank may start DataLoader worker processes.
            daemon=False,
        )
        for index, device in enumerate(devices)
    ]
    try:
        for process in processes:
            process.start()
        results = collect(processes, messages, first)
    finally:
        stop(processes)
        messages.close()
    # Launched: each rank returned everyone's results, gathered.
    return results[0] if launch is not None else results


@dataclass(frozen=True)
class _Plan:
    """What every rank of this host's share of the group has in common."""

    world_size: int
    local_size: int
    backend: str
    init_method: str
    gather: bool  # launched: gather every rank's result in each


def _leased() -> bool:
    """Whether the training runner leased this process devices."""
    return os.environ.get(DEVICES_ENV, "").strip() not in ("", "auto")


def _task_devices(launch: Launch) -> list[str]:
    """A launched task's device when nothing leased any: the GPU of its
    local rank (torchrun's convention), the only GPU it sees, or the CPU."""
    import torch

    count = torch.cuda.device_count()
    if count <= 1:
        return ["cuda:0"] if count else ["cpu"]
    if launch.local_rank >= count:
        raise LaunchError(
            f"{launch.source} started this task as local rank {launch.local_rank}, "
            f"but it sees {count} GPUs: start at most one task per GPU on each "
            "node, or pass devices= to run()"
        )
    return [f"cuda:{launch.local_rank}"]


def _rank_main(
    plan: _Plan,
    index: int,
    rank: int,
    device_name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    messages: Any,
) -> None:
    """The body of one rank's process: set up, call ``fn``, report, tear down.

    ``index`` is its place among this host's ranks (how its messages are
    told apart), ``rank`` its rank in the group.
    """
    initialised = False
    try:
        import torch
        import torch.distributed as dist

        device = torch.device(device_name)
        if device.type == "cuda":
            torch.cuda.set_device(device.index if device.index is not None else index)
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            # Share the cores between CPU ranks instead of oversubscribing them.
            torch.set_num_threads(max(1, cpu_count() // plan.local_size))
        dist.init_process_group(
            plan.backend,
            init_method=plan.init_method,
            world_size=plan.world_size,
            rank=rank,
        )
        initialised = True
        result = fn(RankContext(rank, plan.world_size, device), *args, **kwargs)
        if plan.gather:
            gathered: list[Any] = [None] * plan.world_size
            dist.all_gather_object(gathered, result)
            result = gathered
        payload = pickle.dumps(result)
    except BaseException as exc:
        failure = f"{type(exc).__name__}: {exc}"
        messages.put((index, False, failure, format_exception(exc)))
    else:
        messages.put((index, True, payload, ""))
    finally:
        if initialised:
            import torch.distributed as dist

            dist.destroy_process_group()


def _default_backend(devices: Sequence[str]) -> str:
    kinds = {device.split(":")[0] for device in devices}
    if kinds == {"cuda"}:
        return "nccl"
    if kinds == {"cpu"}:
        return "gloo"
    raise ValueError(f"cannot mix GPUs and the CPU in one process group: {devices}")


def _check_picklable(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Fail here, with a clear message, rather than in a half-started rank."""
    try:
        pickle.dumps(fn)
    except Exception as exc:
        raise TypeError(
            f"deepaas.training.distributed.run: {fn!r} cannot be sent to the "
            "rank processes; define it at module level (not a lambda, a nested "
            f"function or a local class's method) ({exc})"
        ) from exc
    try:
        pickle.dumps((args, kwargs))
    except Exception as exc:
        raise TypeError(
            "deepaas.training.distributed.run: the arguments for the ranks "
            f"cannot be pickled ({exc})"
        ) from exc


def _is_torch_dataset(data: Any) -> bool:
    try:
        from torch.utils.data import Dataset
    except ImportError:
        return False
    return isinstance(data, Dataset)
