"""Background tasks with an owner.

A task created with ``loop.create_task`` and forgotten can die with nobody
noticing ("Task exception was never retrieved" in the log, long after) and
can outlive the object that started it. Every background task in deepaas is
started through a :class:`TaskSet` instead: a failure is logged at once and
handed to the task's ``on_error`` so its owner can recover (free a slot,
settle waiters), and :meth:`TaskSet.close` cancels and awaits whatever is
still running when the owner stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

LOG = logging.getLogger(__name__)

T = TypeVar("T")

ErrorHook = Callable[[BaseException], None]


class TaskSet:
    """The background tasks of one owner (a pool, the job manager, the server)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(
        self,
        coro: Coroutine[Any, Any, T],
        name: str,
        on_error: ErrorHook | None = None,
    ) -> asyncio.Task[T]:
        """Run ``coro`` in the background; its failure is logged, then
        ``on_error(exc)`` is called (its own failure is logged too)."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.owner} is stopped: cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, on_error))
        return task

    def _done(self, task: asyncio.Task[Any], on_error: ErrorHook | None) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        LOG.error(
            "%s: background task %s failed",
            self.owner,
            task.get_name(),
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        if on_error is not None:
            try:
                on_error(exc)
            except Exception:
                LOG.exception(
                    "%s: recovering from the failure of %s failed too",
                    self.owner,
                    task.get_name(),
                )

    async def close(self, timeout: float | None = None) -> None:
        """Cancel every task still running and wait for them (at most
        ``timeout`` seconds; a task that ignores cancellation is left)."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), timeout
            )


def _settle(future: concurrent.futures.Future[T], call: Callable[[], T]) -> None:
    """Run ``call`` for ``future`` unless its caller gave up before it began."""
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = call()
    except BaseException as exc:  # delivered to the caller, which decides
        future.set_exception(exc)
    else:
        future.set_result(result)


def on_daemon_thread(call: Callable[[], T], name: str) -> concurrent.futures.Future[T]:
    """Run ``call`` on a new daemon thread; its outcome in a future.

    Not an executor: a ThreadPoolExecutor's threads (the loop's default
    executor's too) are joined when the interpreter exits, so one call that
    never returns (an NVML call, a plugin's import stuck on a lock) would
    keep the server from exiting; and this thread is taken from no one else.
    """
    future: concurrent.futures.Future[T] = concurrent.futures.Future()
    threading.Thread(
        target=_settle, args=(future, call), name=name, daemon=True
    ).start()
    return future


class DaemonThread:
    """One daemon thread, started on first use, that runs the calls given
    to :meth:`submit` one after the other, in order (as the event loop
    would have, without holding it up): a model's ``get_metadata()``, a
    training store's SQLite calls. A call that never returns holds up only
    the calls queued behind it, and not the interpreter's exit (which a
    ``ThreadPoolExecutor`` would: it joins its threads)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None
        ] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """``fn(*args)`` after what was submitted before; its outcome."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name=self.name, daemon=True
                )
                self._thread.start()
        self._calls.put((future, functools.partial(fn, *args) if args else fn))
        return future

    def stop(self) -> None:
        """Exit once what was submitted before has run."""
        self._calls.put(None)

    def _serve(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            _settle(*item)
