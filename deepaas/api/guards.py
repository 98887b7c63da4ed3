"""Guards on a request body's stream: its pace, and its line budget.

:class:`Pace` notices a body that stops arriving; :class:`LineBudget` caps
the lines aiohttp's multipart reader reads between parts. Both are used by
:class:`deepaas.api.body.BodyReader`, one per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from deepaas.api.limits import (
    MAX_PREAMBLE_SIZE,
    part_headers_too_large,
    preamble_too_large,
)


class Pace:
    """Cancels the reading task when its body makes no progress for a while.

    No timer per read: one timer per request checks, every quarter of the
    timeout, whether new bytes arrived (the stream's ``total_bytes``) or the
    reader took a piece, and fires only after ``timeout`` seconds without
    either while nothing is being written on our side. A body already
    received whole (the usual small request) never starts one. Written for
    Python 3.10 as well (no ``asyncio.timeout``); on 3.11+ a cancellation
    that came from elsewhere at the same time is not swallowed.
    """

    def __init__(self, content: Any, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._content = content
        self._timeout = timeout
        self._period = timeout / 4
        self.pieces = 0  # incremented by the reader for each piece it takes
        self.busy = 0  # > 0 while we wait on our own work (the executor)
        self.expired = False
        self._seen = self._snapshot()
        self._since = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(
            self._period, self._check
        )

    def _snapshot(self) -> tuple[int, int]:
        return (getattr(self._content, "total_bytes", 0), self.pieces)

    def _check(self) -> None:
        now = self._loop.time()
        seen = self._snapshot()
        if seen != self._seen or self.busy:
            self._seen = seen
            self._since = now
        elif self._content.is_eof():
            self._handle = None  # everything arrived: nothing can stall
            return
        elif now - self._since >= self._timeout and self._task is not None:
            self.expired = True
            self._handle = None
            self._task.cancel()
            return
        self._handle = self._loop.call_later(self._period, self._check)

    def ours(self) -> bool:
        """After a CancelledError: was it this timer's (and only its)?"""
        if not self.expired:
            return False
        uncancel = getattr(self._task, "uncancel", None)
        return uncancel is None or uncancel() == 0

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class LineBudget:
    """The request stream as aiohttp's MultipartReader reads it.

    MultipartReader reads a body's preamble, its boundaries and each part's
    headers line by line with ``readline``, which does not pause while the
    data is already buffered: 5 MB of empty lines before the first boundary
    held the event loop for 0.7 s. Here the lines before the first boundary
    count against the preamble cap, and those read by each later ``next()``
    against the part-header cap, so an oversized block is refused as it
    arrives rather than after it was buffered, whatever aiohttp version reads
    it; and the reader yields to the loop between slices. Every other
    attribute is the stream's own (``MultipartReader(headers, content)``
    takes any stream).
    """

    def __init__(self, stream: Any, breathe: Callable[[], Awaitable[None]]) -> None:
        self._stream = stream
        self._breathe = breathe
        self.budget: int | None = None  # bytes, set around each next()
        self.lines = 0  # lines left for this next()
        self._preamble_left: int | None = MAX_PREAMBLE_SIZE  # None: past it

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def readline(self, *args: Any, **kwargs: Any) -> bytes:
        line: bytes = await self._stream.readline(*args, **kwargs)
        if self.budget is not None:
            if self._preamble_left is not None and not line.startswith(b"--"):
                self._preamble_left -= len(line)
                if self._preamble_left < 0:
                    raise preamble_too_large()
            else:
                self._preamble_left = None  # the first boundary
                self.budget -= len(line)
                self.lines -= 1
                if self.budget < 0 or self.lines < 0:
                    raise part_headers_too_large()
        await self._breathe()
        return line
