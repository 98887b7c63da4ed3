"""The blocking client: :class:`AsyncClient` run on a private event loop.

Each :class:`Client` owns one daemon thread running an asyncio loop; every
method hands its coroutine to that loop and waits for the result. So the
sync and async clients behave the same (one implementation), the client
works where an event loop already runs in the calling thread (Jupyter), and
it can be shared by threads. Ctrl-C while waiting cancels the request.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from deepaas.client._body import Files
from deepaas.client.aio import (
    DEFAULT_URL,
    JSON,
    UNSET,
    AsyncClient,
    LogChunk,
    RawResult,
)
from deepaas.client.errors import ClientError

T = TypeVar("T")


class _LoopThread:
    """An event loop running on a daemon thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="deepaas-client", daemon=True
        )
        self.thread.start()
        self.closed = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.closed:
            coro.close()
            raise ClientError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:  # Ctrl-C included: the request stops too
            future.cancel()
            raise

    def stop(self, client: AsyncClient) -> None:
        if self.closed:
            return
        if threading.current_thread() is self.thread:  # collected on the loop
            self.closed = True
            task = self.loop.create_task(client.close())
            task.add_done_callback(lambda _: self.loop.stop())
            return
        try:
            self.run(client.close())
        finally:
            self.closed = True
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class Client:
    """A blocking client of one DEEPaaS server.

    Takes the arguments of :class:`~deepaas.client.aio.AsyncClient` (``url``,
    ``timeout``, ``connect_timeout``, ``headers``) and has the same
    methods, which return their results instead of coroutines; see
    :class:`~deepaas.client.aio.AsyncClient` for what each sends, returns
    and raises.

    Use it as ``with Client(url) as client: ...``, or call :meth:`close`
    (a client that is garbage-collected is closed too).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float | None = 300.0,
        connect_timeout: float | None = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._async = AsyncClient(
            url, timeout=timeout, connect_timeout=connect_timeout, headers=headers
        )
        self._thread = _LoopThread()
        self._finalizer = weakref.finalize(self, self._thread.stop, self._async)

    @property
    def url(self) -> str:
        """The server's root URL (no trailing slash)."""
        return self._async.url

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the client's thread."""
        self._finalizer()

    def models(self) -> list[dict[str, JSON]]:
        """The served models' documents (``GET /v2/models/``)."""
        return self._thread.run(self._async.models())

    def metadata(self, model: str) -> dict[str, JSON]:
        """One model's document (``GET /v2/models/{model}/``)."""
        return self._thread.run(self._async.metadata(model))

    def predict(
        self,
        model: str,
        args: Mapping[str, Any] | None = None,
        *,
        files: Files | None = None,
        json: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        accept: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = UNSET,
    ) -> JSON | RawResult:
        """Run a prediction: parsed JSON, or a :class:`RawResult`; see
        :meth:`AsyncClient.predict <deepaas.client.aio.AsyncClient.predict>`."""
        return self._thread.run(
            self._async.predict(
                model,
                args,
                files=files,
                json=json,
                query=query,
                accept=accept,
                headers=headers,
                timeout=timeout,
            )
        )

    def train(
        self,
        model: str,
        args: Mapping[str, Any] | None = None,
        *,
        files: Files | None = None,
        json: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        gpus: int | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = UNSET,
    ) -> dict[str, JSON]:
        """Start a training: its record (``uuid``, ``status``, ...); see
        :meth:`AsyncClient.train <deepaas.client.aio.AsyncClient.train>`."""
        return self._thread.run(
            self._async.train(
                model,
                args,
                files=files,
                json=json,
                query=query,
                gpus=gpus,
                headers=headers,
                timeout=timeout,
            )
        )

    def trainings(self, model: str) -> list[dict[str, JSON]]:
        """The model's trainings' records, oldest first."""
        return self._thread.run(self._async.trainings(model))

    def training(self, model: str, uuid: str) -> dict[str, JSON]:
        """One training's record."""
        return self._thread.run(self._async.training(model, uuid))

    def cancel(
        self, model: str, uuid: str, *, timeout: float | None = UNSET
    ) -> dict[str, JSON]:
        """Cancel a training; its record once it has stopped."""
        return self._thread.run(self._async.cancel(model, uuid, timeout=timeout))

    def wait(
        self,
        model: str,
        uuid: str,
        *,
        interval: float = 1.0,
        timeout: float | None = None,
    ) -> dict[str, JSON]:
        """Poll every ``interval`` seconds until the training is finished;
        its final record (:class:`Timeout` after ``timeout`` seconds)."""
        return self._thread.run(
            self._async.wait(model, uuid, interval=interval, timeout=timeout)
        )

    def training_metrics(
        self,
        model: str,
        uuid: str,
        *,
        since: int = 0,
        max_points: int | None = None,
        x: str = "auto",
    ) -> dict[str, JSON]:
        """The values the training reported, as curves; see
        :meth:`deepaas.client.AsyncClient.training_metrics`."""
        return self._thread.run(
            self._async.training_metrics(
                model, uuid, since=since, max_points=max_points, x=x
            )
        )

    def logs(self, model: str, uuid: str, offset: int = 0) -> LogChunk:
        """The training's output from byte ``offset``; ``.offset`` of the
        answer is where to continue."""
        return self._thread.run(self._async.logs(model, uuid, offset))

    def follow_logs(self, model: str, uuid: str, offset: int = 0) -> Iterator[str]:
        """Stream the training's output (text pieces) until it ends or the
        server starts to shut down. Leaving the loop early closes the
        stream."""
        stream = self._async.follow_logs(model, uuid, offset)
        try:
            while True:
                try:
                    piece = self._thread.run(_await(stream.__anext__()))
                except StopAsyncIteration:
                    return
                yield piece
        finally:
            if not self._thread.closed:
                self._thread.run(_await(stream.aclose()))
