"""One model as the API sees it: a queue in front of a pool of workers.

The API calls :meth:`ModelRuntime.predict` and awaits a rendered result or a
:class:`~deepaas.exceptions.DeepaasError`; everything about processes stays
behind this facade. The runtime also keeps the promises about time: a full
queue answers at once (503 with ``Retry-After``), and a call past its
deadline answers 504 and has its worker replaced.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from deepaas.engine.batching import BatchPolicy, Call, CallQueue
from deepaas.engine.pool import PoolConfig, WorkerPool
from deepaas.exceptions import DeepaasError, ModelUnavailable
from deepaas.model.v2.results import PredictResult

RETRY_AFTER_S = 1


@dataclasses.dataclass(frozen=True)
class Limits:
    """Admission and time limits of one model."""

    predict_timeout: float = 0.0  # seconds; 0: none
    max_queue: int = 0  # calls waiting for a worker; 0: no limit


class ModelRuntime:
    """The queue and workers of one model."""

    def __init__(
        self,
        config: PoolConfig,
        policy: BatchPolicy | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.model = config.model
        self.limits = limits or Limits()
        self.queue = CallQueue(policy or BatchPolicy())
        self.pool = WorkerPool(config, self.queue)
        self.draining = False  # stopping: new calls are refused, old ones finish

    async def start(self) -> None:
        await self.pool.start()

    async def stop(self) -> None:
        self.pool.fail_queued(ModelUnavailable("the server is shutting down"))
        await self.pool.stop()

    @property
    def pending(self) -> int:
        """Calls waiting or running: zero means the model is idle."""
        return len(self.queue) + sum(len(w.inflight) for w in self.pool.workers)

    async def predict(self, kwargs: dict[str, Any]) -> PredictResult:
        """Run ``predict(**kwargs)`` in a worker and return its rendered result."""
        if self.draining or self.pool.stopping:
            raise ModelUnavailable("the server is shutting down")
        error = self.pool.start_error
        if error is not None:
            raise ModelUnavailable(f"model {self.model!r} cannot start: {error}")
        limits = self.limits
        if limits.max_queue and len(self.queue) >= limits.max_queue:
            raise DeepaasError(
                503,
                f"model {self.model!r} is overloaded: {len(self.queue)} requests "
                "are already waiting; retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PredictResult] = loop.create_future()
        call = Call(kwargs, future)
        if limits.predict_timeout:
            call.timer = loop.call_at(
                loop.time() + limits.predict_timeout, self._expire, call
            )
        self.queue.append(call)
        self.pool.schedule_pump()
        try:
            return await future
        finally:
            call.settle()

    def _expire(self, call: Call) -> None:
        """A call reached its deadline: answer 504; recycle its worker."""
        call.timer = None
        if call.future.done():
            return
        seconds = self.limits.predict_timeout
        worker = self.pool.holds(call)
        if worker is None:
            call.future.set_exception(
                DeepaasError(
                    504,
                    f"model {self.model!r} did not start this request within "
                    f"{seconds:g} s (all its workers were busy)",
                )
            )
            return
        call.future.set_exception(
            DeepaasError(
                504,
                f"model {self.model!r} did not answer within {seconds:g} s; "
                "its worker is being replaced",
            )
        )
        del worker.inflight[call.id]
        self.pool.kill(worker)
