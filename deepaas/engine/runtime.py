"""One model as the API sees it: a queue in front of a pool of workers.

The API calls :meth:`ModelRuntime.predict` and awaits a rendered result or a
:class:`~deepaas.exceptions.DeepaasError`; everything about processes stays
behind this facade.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from typing import Any

from deepaas.engine.pool import Call, PoolConfig, WorkerPool
from deepaas.exceptions import ModelUnavailable
from deepaas.model.v2.results import PredictResult

_call_ids = itertools.count(1)


class ModelRuntime:
    """The queue and workers of one model (implements the pool's WorkSource)."""

    def __init__(self, config: PoolConfig) -> None:
        self.model = config.model
        self.queue: collections.deque[Call] = collections.deque()
        self.pool = WorkerPool(config, self)

    # -- WorkSource ---------------------------------------------------------

    def has_work(self) -> bool:
        return bool(self.queue)

    def next_call(self) -> Call | None:
        while self.queue:
            call = self.queue.popleft()
            if not call.future.done():  # skip calls whose client gave up
                return call
        return None

    # -- API ------------------------------------------------------------------

    async def start(self) -> None:
        await self.pool.start()

    async def stop(self) -> None:
        self.pool.fail_queued(ModelUnavailable("the server is shutting down"))
        await self.pool.stop()

    async def predict(self, kwargs: dict[str, Any]) -> PredictResult:
        """Run ``predict(**kwargs)`` in a worker and return its rendered result."""
        if self.pool.stopping:
            raise ModelUnavailable("the server is shutting down")
        error = self.pool.start_error
        if error is not None:
            raise ModelUnavailable(f"model {self.model!r} cannot start: {error}")
        future: asyncio.Future[PredictResult] = (
            asyncio.get_running_loop().create_future()
        )
        self.queue.append(Call(next(_call_ids), "predict", kwargs, future))
        self.pool.schedule_pump()
        return await future
