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

NCCL is the backend on GPUs (the fast one); Gloo on the CPU, so the same code
runs, and is tested, on a machine without GPUs (``devices=["cpu", "cpu"]``
gives two Gloo ranks).

torch is imported inside the functions, so importing this module is cheap and
works where torch is not installed.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["DistributedError", "RankContext", "devices_from_env", "run"]

# Set by the training runner in a job's process: the devices it leased.
DEVICES_ENV = "DEEPAAS_DEVICES"

# How long a rank that is being stopped gets before it is killed.
_TERMINATE_GRACE_S = 5.0


class DistributedError(RuntimeError):
    """A rank failed: raised in the caller of :func:`run`.

    ``rank`` is the rank that failed first; ``remote_traceback`` its traceback
    as text (exceptions cannot always be pickled, their text always can).
    """

    def __init__(self, rank: int, message: str, remote_traceback: str = "") -> None:
        self.rank = rank
        self.remote_traceback = remote_traceback
        text = f"rank {rank} failed: {message}"
        if remote_traceback:
            text += f"\n\nTraceback in rank {rank}:\n{remote_traceback}"
        super().__init__(text)


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
    ``torch.distributed`` initialised for it: rank ``i`` of ``len(devices)``,
    on ``devices[i]`` (``torch.cuda.set_device`` is done for GPUs). ``ctx`` is
    a :class:`RankContext`.

    ``devices`` defaults to the job's leased devices (:func:`devices_from_env`);
    ``backend`` to ``nccl`` when they are all GPUs, else ``gloo``.

    ``fn``, ``args`` and ``kwargs`` are pickled to reach the ranks, so ``fn``
    must be a module-level function (not a lambda, a nested function or a
    method of a local object), and a script that calls :func:`run` must do so
    under ``if __name__ == "__main__":``. Return values come back pickled too:
    return plain Python values or CPU tensors.

    Returns the ranks' return values, in rank order. If a rank raises, or dies,
    the other ranks are stopped and :class:`DistributedError` names it.
    """
    import torch.multiprocessing as mp

    devices = list(devices) if devices is not None else devices_from_env()
    if not devices:
        raise ValueError("run() needs at least one device")
    if backend is None:
        backend = _default_backend(devices)
    _check_picklable(fn, args, kwargs)

    init_method = f"tcp://127.0.0.1:{_free_port()}"
    context = mp.get_context("spawn")
    # SimpleQueue: put() writes to the pipe before returning, so once a rank's
    # process has exited, everything it sent can be read (see _collect).
    messages = context.SimpleQueue()
    world_size = len(devices)
    processes = [
        context.Process(
            target=_rank_main,
            args=(rank, world_size, device, backend, init_method, fn, args, kwargs),
            kwargs={"messages": messages},
            name=f"deepaas-rank-{rank}",
            # Not daemonic: a rank may start DataLoader worker processes.
            daemon=False,
        )
        for rank, device in enumerate(devices)
    ]
    try:
        for process in processes:
            process.start()
        return _collect(processes, messages)
    finally:
        _stop(processes)
        messages.close()


def _rank_main(
    rank: int,
    world_size: int,
    device_name: str,
    backend: str,
    init_method: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    messages: Any,
) -> None:
    """The body of one rank's process: set up, call ``fn``, report, tear down."""
    initialised = False
    try:
        import torch
        import torch.distributed as dist

        device = torch.device(device_name)
        if device.type == "cuda":
            torch.cuda.set_device(device.index if device.index is not None else rank)
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            # Share the cores between CPU ranks instead of oversubscribing them.
            torch.set_num_threads(max(1, _cpu_count() // world_size))
        dist.init_process_group(
            backend, init_method=init_method, world_size=world_size, rank=rank
        )
        initialised = True
        result = fn(RankContext(rank, world_size, device), *args, **kwargs)
        payload = pickle.dumps(result)
    except BaseException as exc:
        messages.put((rank, False, f"{type(exc).__name__}: {exc}", _format(exc)))
    else:
        messages.put((rank, True, payload, ""))
    finally:
        if initialised:
            import torch.distributed as dist

            dist.destroy_process_group()


def _collect(processes: list[Any], messages: Any) -> list[Any]:
    """Wait for every rank's result; raise as soon as one rank fails.

    Polls instead of blocking in ``join()``, so a rank that raised (while the
    others wait for it in a collective and would wait forever) or died without
    a word (killed, out of memory) is noticed.
    """
    results: dict[int, Any] = {}

    def drain() -> None:
        while not messages.empty():
            rank, ok, payload, remote_traceback = messages.get()
            if not ok:
                # A rank that died without a word (killed) makes the others
                # fail in their next collective: name the cause, not them.
                silent = died_silently(besides=rank)
                if silent is not None:
                    raise DistributedError(silent, exit_message(silent))
                raise DistributedError(rank, payload, remote_traceback)
            results[rank] = pickle.loads(payload)

    def died_silently(besides: int) -> int | None:
        for rank, process in enumerate(processes):
            if rank in results or rank == besides:
                continue
            if process.exitcode not in (None, 0):
                return rank
        return None

    def exit_message(rank: int) -> str:
        code = processes[rank].exitcode
        if code is not None and code < 0:
            return f"its process was killed by signal {-code}"
        return f"its process exited with code {code} without a result"

    while len(results) < len(processes):
        drain()
        for rank, process in enumerate(processes):
            if rank in results or process.exitcode is None:
                continue
            drain()  # it exited, so whatever it sent is in the pipe by now
            if rank not in results:
                raise DistributedError(rank, exit_message(rank))
        time.sleep(0.05)
    for process in processes:
        process.join()
    return [results[rank] for rank in range(len(processes))]


def _stop(processes: list[Any]) -> None:
    """Terminate ranks still running (after a failure), then kill stragglers."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + _TERMINATE_GRACE_S
    for process in processes:
        if process.pid is None:  # never started
            continue
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


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


def _free_port() -> int:
    """A TCP port free right now, for rank 0's rendezvous store."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
