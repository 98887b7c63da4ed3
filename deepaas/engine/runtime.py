"""One model as the API sees it: calls in, results out, and a status snapshot.

The API calls :meth:`ModelRuntime.predict` (or :meth:`ModelRuntime.infer`,
for a tensor-native plugin) and awaits a rendered result (output arrays) or
a :class:`~deepaas.exceptions.DeepaasError`; health, ``/v2/system/`` and
``/metrics`` read :meth:`ModelRuntime.status`, a frozen snapshot of plain
values. Queues, workers and processes stay behind this facade. It also keeps
the promises about time: a full queue answers at once (503 with
``Retry-After``), and a call past its deadline answers 504 (its worker is
replaced only if it was running that call). And it keeps a caller's
uploads for as long as a worker may read them: a caller that leaves early
(its client hung up, or it timed out) hands them to the call, removed once
the worker is done with it (:func:`deepaas.engine.outcomes.unpin`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Hashable
from typing import Any

from deepaas.engine.batching import INFER, BatchPolicy, Call, CallQueue
from deepaas.engine.dispatcher import Dispatcher, DispatchEvents
from deepaas.engine.outcomes import discard_value
from deepaas.engine.pool import PoolConfig, PoolEvents, WorkerPool, WorkerState
from deepaas.engine.reload import EDITED, TRAINED, Reloader, ReloadStatus
from deepaas.engine.replacement import TIMED_OUT
from deepaas.exceptions import DeepaasError, ModelUnavailable, ShuttingDown
from deepaas.model.v2.results import PredictResult

RETRY_AFTER_S = 1
WORKER_STATES = tuple(state.value for state in WorkerState)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Admission and time limits of one model."""

    predict_timeout: float = 0.0  # seconds; 0: none
    max_queue: int = 0  # calls waiting for a worker; 0: no limit


class EngineEvents(DispatchEvents, PoolEvents):
    """Everything the engine reports (the metrics implement it)."""


@dataclasses.dataclass(frozen=True)
class WorkerStatus:
    """One worker process at the time of the snapshot."""

    index: int  # its slot, 0 .. --workers - 1 (a replacement takes the slot)
    device: str  # "cpu", "cuda:0", "cuda:<uuid>"
    pid: int | None
    state: str  # starting | ready | retiring | stopping | dead
    in_flight: int  # calls it holds
    # Replacements of its slot so far, shown on the slot's current worker
    # only: a worker being replaced shows 0 (its replacement carries the
    # count), so one replacement counts once, also when summing over workers.
    restarts: int
    error: str | None  # why it could not start, if it could not
    # How many times the model's files had changed (trainings ended) when it
    # started: workers of an older generation run older files.
    generation: int = 0


@dataclasses.dataclass(frozen=True)
class RuntimeStatus:
    """One model's engine at the time of the snapshot."""

    model: str
    workers: tuple[WorkerStatus, ...]
    queue_depth: int  # calls waiting for a worker
    # The largest batch a worker is given: calls of predict_batch, or rows
    # of a tensor-native plugin's infer (its signature's max_batch_size, as
    # lowered by --max-batch-size), whichever is larger; 1: not batched.
    max_batch_size: int
    # How a batch that is not full waits for companions: "adaptive" (at
    # most max_batch_delay), "fixed" (max_batch_delay after its oldest call;
    # 0: never), or "none" (the model is not batched).
    batch_window: str
    max_batch_delay: float  # seconds
    start_error: str | None  # why the model cannot run, when no worker can
    reload: ReloadStatus | None = None  # the latest reload after a training

    @property
    def ready_workers(self) -> int:
        return sum(w.state in ("ready", "retiring") for w in self.workers)

    @property
    def restarts(self) -> int:
        """Worker replacements of this model so far, each counted once."""
        return sum(w.restarts for w in self.workers)


class ModelRuntime:
    """The queue, dispatcher and workers of one model."""

    def __init__(
        self,
        config: PoolConfig,
        policy: BatchPolicy | None = None,
        limits: Limits | None = None,
        events: EngineEvents | None = None,
    ) -> None:
        self.model = config.model
        self.limits = limits or Limits()
        self.queue = CallQueue(policy or BatchPolicy())
        self.dispatcher = Dispatcher(self.model, self.queue, events)
        self.pool = WorkerPool(config, self.dispatcher, events)
        self.reloader = Reloader(self.pool)
        self.stopped = False
        # --reload: since when (time.time()) the plugin's source fails to
        # load; None while its latest version loaded.
        self.broken_since: float | None = None

    @property
    def policy(self) -> BatchPolicy:
        return self.queue.policy

    async def start(self) -> None:
        await self.pool.start()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until a worker is ready; False on timeout."""
        return await self.pool.wait_ready(timeout)

    def settled(self) -> bool:
        """A worker is ready, or the model failed to start one."""
        return bool(self.pool.ready_workers or self.pool.start_error)

    def reload(self, cause: str, kind: str = TRAINED) -> None:
        """The model's files changed (``cause``: e.g. a training ended;
        ``kind``: :data:`~deepaas.engine.reload.TRAINED` or ``EDITED``):
        replace its workers one at a time, each warmed before the one it
        replaces retires (:mod:`deepaas.engine.reload`)."""
        if kind == EDITED:
            self.broken_since = None
        if not self.stopped:
            self.reloader.request(cause, kind)

    def files_broken(self) -> None:
        """--reload: the plugin's latest version failed to load (the
        watcher logged why). The workers keep serving the version they run,
        but one that must restart (it crashed) loads the file as it is: when
        it cannot, the model's 503 says so (:meth:`_cannot_start`)."""
        if self.broken_since is None:
            self.broken_since = time.time()

    def _cannot_start(self, error: str) -> ModelUnavailable:
        """The 503 when no worker is ready and one failed to start."""
        if self.broken_since is None:
            return ModelUnavailable(f"model {self.model!r} cannot start: {error}")
        since = time.strftime("%H:%M:%S", time.localtime(self.broken_since))
        return ModelUnavailable(
            f"the worker of model {self.model!r} could not restart: its plugin "
            f"is broken since {since}: {error}; fix the file (it reloads on "
            "save)"
        )

    def abort(self, error: DeepaasError) -> None:
        """Answer every call, queued or running, with ``error`` now."""
        self.stopped = True
        self.dispatcher.fail_all(error)

    async def stop(self, grace: float = 5.0) -> None:
        """Answer what is left with 503 and stop the workers (``grace`` + 1 s)."""
        self.abort(ShuttingDown())
        try:
            await self.pool.stop(grace)
        finally:  # the workers are gone: what they held may be removed
            self.dispatcher.release_all()

    def status(self) -> RuntimeStatus:
        pool = self.pool
        dispatcher = self.dispatcher
        policy = self.queue.policy
        return RuntimeStatus(
            model=self.model,
            workers=tuple(
                WorkerStatus(
                    index=worker.index,
                    device=worker.device.label,
                    pid=worker.pid,
                    state=worker.state.value,
                    in_flight=dispatcher.held(worker),
                    restarts=(
                        pool.restarts[worker.index]
                        if pool.slots[worker.index] is worker
                        else 0
                    ),
                    error=worker.start_error,
                    generation=worker.generation,
                )
                for worker in pool.workers
            ),
            queue_depth=len(self.queue),
            # Not policy.max_batch_size alone: that is predict_batch's, 1 for
            # a tensor-native plugin that stacks up to 8 infer rows.
            max_batch_size=policy.full,
            batch_window=policy.window_kind,
            max_batch_delay=policy.window_bound,
            start_error=pool.start_error,
            reload=self.reloader.status,
        )

    def predict(
        self,
        kwargs: dict[str, Any],
        uploads: list[str] | None = None,
        big: bool = False,
    ) -> Awaitable[PredictResult]:
        """Run ``predict(**kwargs)`` in a worker and return its rendered result.

        ``uploads`` are the temporary files ``kwargs`` name, which the caller
        removes when this returns. If this ends (its caller cancelled, a 504,
        a 503 at shutdown...) while a worker may still read them, they are
        taken over (the list is
        emptied in place) and removed once no worker can: the caller then
        removes nothing, and the worker never finds its input gone.

        ``big``: ``kwargs`` came from a big body (a tree of plain values),
        sent with :func:`~deepaas.engine.protocol.pack_tree`.

        Not a coroutine function itself: it returns the one that queues the
        call, so that a request's task resumes through one frame less on
        the hot path (``await runtime.predict(...)`` as with any).
        """
        return self._run(Call(kwargs, self._future(), big), uploads)

    def infer(
        self, arrays: dict[str, Any], rows: int = 1, group: Hashable = None
    ) -> Awaitable[dict[str, Any]]:
        """Run a tensor-native plugin's ``infer(**arrays)`` in a worker and
        return its output arrays by name (checked there against its
        signature). ``rows`` and ``group``: the call's batch size and what
        calls must share to be batched with it
        (:class:`~deepaas.model.signature.CheckedInputs`). The same queue,
        limits and deadlines as :meth:`predict`."""
        call = Call(arrays, self._future(), method=INFER, rows=rows, group=group)
        return self._run(call, None)

    def _future(self) -> asyncio.Future[Any]:
        # The running loop (Python 3.11 asks getpid() for it).
        return self.dispatcher.loop.create_future()

    async def _run(self, call: Call, uploads: list[str] | None) -> Any:
        """Queue ``call`` within the limits; its answer (see :meth:`predict`)."""
        if self.stopped:
            raise ShuttingDown()
        if not self.dispatcher.lanes:  # no worker ready: has one failed?
            error = self.pool.start_error
            if error is not None:
                raise self._cannot_start(error)
        limits = self.limits
        queue = self.queue
        if limits.max_queue and len(queue) >= limits.max_queue:
            raise DeepaasError(
                503,
                f"model {self.model!r} is overloaded: "
                f"{_waiting(len(queue))} already waiting; retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        if limits.predict_timeout:
            loop = self.dispatcher.loop
            call.timer = loop.call_at(
                loop.time() + limits.predict_timeout, self._expire, call
            )
        self.dispatcher.submit(call)
        try:
            return await call.future
        except asyncio.CancelledError:
            # Its client left in the moment its answer came (the result set,
            # this task not yet resumed): nobody sends that result's file.
            future = call.future
            if future.done() and not future.cancelled() and not future.exception():
                discard_value(future.result())
            raise
        except ModelUnavailable as exc:  # the pool's: no worker could start
            error = self.pool.start_error
            if isinstance(exc, ShuttingDown) or error is None:
                raise
            raise self._cannot_start(error) from None
        finally:
            call.settle()
            queue.discard(call)  # still queued only if its client went away
            if uploads:
                call.adopt(uploads)  # only while a worker may still read them

    def _expire(self, call: Call) -> None:
        """A call reached its deadline: answer 504; replace the worker it ran in."""
        call.timer = None
        worker = self.dispatcher.expire(call, self.limits.predict_timeout)
        if worker is not None:
            self.pool.kill(worker, TIMED_OUT)  # type: ignore[arg-type]


def _waiting(count: int) -> str:
    return "1 request is" if count == 1 else f"{count} requests are"
