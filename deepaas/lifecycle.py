"""The server's life cycle: serving, leaving, draining, stopped; and the
requests in flight.

One object owns "draining", so readiness, the predict and train routes, log
streams and the job manager all read the same answer. The shutdown it
supports is bounded (``deepaas-run`` on SIGTERM):

0. :meth:`Lifecycle.leave` (with ``--drain-delay``): readiness turns 503,
   so that load balancers take the server out, but new requests are still
   served (a "lame duck");
1. :meth:`Lifecycle.drain`: readiness is 503, new requests are refused
   with 503, streams end; requests in flight (uploads included) go on;
2. :meth:`Lifecycle.wait_idle` until none is left or the shutdown timeout;
3. :meth:`Lifecycle.abort`: every request still in flight is answered 503
   at once (its handler is cancelled where it waits), then workers and
   training jobs are stopped.

Handlers that do work enter :meth:`Lifecycle.request` (``with``, in the
request's task): that is what "in flight" counts.
"""

from __future__ import annotations

import asyncio
import enum
from types import TracebackType

from deepaas.exceptions import SHUTTING_DOWN, ShuttingDown

__all__ = ["SHUTTING_DOWN", "Lifecycle", "ShuttingDown", "State"]


class State(str, enum.Enum):
    SERVING = "serving"
    LEAVING = "leaving"  # readiness 503, new requests still served (lame duck)
    DRAINING = "draining"  # no new requests; those in flight go on
    ABORTING = "aborting"  # the shutdown timeout passed: all in flight answer 503


# An Enum member read from its class costs a descriptor call on Python 3.11;
# this one is read on every request.
_SERVING = State.SERVING
_LEAVING = State.LEAVING


class Lifecycle:
    """Whether the server takes work, and which requests are in flight."""

    def __init__(self) -> None:
        self.state = State.SERVING
        self._in_flight: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = asyncio.Event()

    @property
    def ready(self) -> bool:
        """False from :meth:`leave` (or :meth:`drain`) on: readiness 503."""
        return self.state is State.SERVING

    @property
    def draining(self) -> bool:
        """True from :meth:`drain` on: readiness 503, new work refused."""
        return self.state is not State.SERVING and self.state is not State.LEAVING

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def check(self) -> None:
        """Raise :class:`ShuttingDown` (503) when no new work is taken."""
        state = self.state
        if state is not _SERVING and state is not _LEAVING:
            raise ShuttingDown()

    def request(self) -> InFlight:
        """``with lifecycle.request():`` around a handler's work, in its task."""
        return InFlight(self)

    def leave(self) -> None:
        """Turn readiness 503 (balancers take the server out); new work is
        still taken until :meth:`drain`."""
        if self.state is State.SERVING:
            self.state = State.LEAVING

    def drain(self) -> None:
        """Stop taking new work; the work in flight goes on."""
        if self.state is State.SERVING or self.state is State.LEAVING:
            self.state = State.DRAINING
            self._draining.set()

    async def wait_draining(self) -> None:
        """Wait until :meth:`drain` is called (streams end then)."""
        await self._draining.wait()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False after ``timeout`` s."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def abort(self) -> int:
        """Answer every request still in flight with 503 now; returns how many."""
        self.drain()
        self.state = State.ABORTING
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel(SHUTTING_DOWN)
        return len(tasks)


class InFlight:
    """One request's work, counted while it lasts; see :meth:`Lifecycle.request`."""

    __slots__ = ("_lifecycle", "_task")

    def __init__(self, lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle
        self._task: asyncio.Task[object] | None = None

    # Entered and left on every request: the bookkeeping is written out
    # here rather than in calls to Lifecycle methods.

    def __enter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        lifecycle = self._lifecycle
        lifecycle.check()
        in_flight = lifecycle._in_flight
        if not in_flight:
            lifecycle._idle.clear()
        in_flight.add(task)
        self._task = task

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        assert task is not None
        lifecycle = self._lifecycle
        in_flight = lifecycle._in_flight
        in_flight.discard(task)
        if not in_flight:
            lifecycle._idle.set()
        if (
            exc_type is asyncio.CancelledError
            and self._lifecycle.state is State.ABORTING
            and exc is not None
            and SHUTTING_DOWN in exc.args
        ):
            # Our own cancellation (abort), not the client's: answer 503.
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:
                uncancel()
            raise ShuttingDown() from None
