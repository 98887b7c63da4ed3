"""Guards on a request body's stream: its pace, lines, size and encoding.

:class:`Pace` notices a body that stops arriving; :class:`LineBudget` caps
the lines aiohttp's multipart reader reads between parts; :class:`Decoded`
decompresses a body as it is read, a slice at a time (with a decoder of
:mod:`deepaas.api.decoders`), and refuses one whose compressed stream is
cut short. All are used by
:class:`deepaas.api.body.BodyReader` (:class:`LineBudget` through its
:class:`deepaas.api.multipart.FormReader`), one per request.
"""

from __future__ import annotations

import asyncio
import inspect
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong

from deepaas.api.decoders import decoder_for
from deepaas.api.limits import (
    MAX_PART_HEADER_SIZE,
    MAX_PREAMBLE_SIZE,
    bad_request,
    empty_encoded,
    part_headers_too_large,
    preamble_too_large,
    too_large,
    truncated,
    undecodable,
)

#: Most bytes one decompression step yields: a bomb is inflated this much at
#: a time, never whole, and the size caps are checked between two steps.
DECODE_STEP = 256 << 10
#: Longest boundary line (RFC 2046: a boundary has at most 70 characters;
#: room is left for the dashes, trailing white space and the line break).
BOUNDARY_LINE = 256
#: Longest line read outside the preamble and the part headers (the line
#: break after a part's data), and by a :class:`Decoded` stream's
#: ``readline`` when its caller gives no maximum.
LINE_CAP = MAX_PART_HEADER_SIZE


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
    held the event loop for 0.7 s. And a line is only as bounded as the
    stream's ``readline`` makes it: a decoded body of 1 GB of zeros (no
    newline) was once read whole into memory as one "line". Here every line
    is read with a maximum: what is left of the preamble cap before the
    first boundary, of the part-header cap during each later ``next()``
    (``budget`` and ``lines``, set by the caller), and ``LINE_CAP`` for the
    line that ends a part. A longer line is refused as it arrives, whatever
    aiohttp version reads it; and the reader yields to the loop between
    lines. Every other attribute is the stream's own
    (``MultipartReader(headers, content)`` takes any stream).
    """

    def __init__(self, stream: Any, breathe: Callable[[], Awaitable[None]]) -> None:
        self._stream = stream
        self._breathe = breathe
        self.budget: int | None = None  # bytes, set around each next()
        self.lines = 0  # lines left for this next()
        self._preamble_left: int | None = MAX_PREAMBLE_SIZE  # None: past it
        # aiohttp before 3.10 has no max_line_length: its readline is capped
        # at the stream's high-water mark (128 KiB) and says "Chunk too big".
        try:
            params = inspect.signature(stream.readline).parameters
        except (TypeError, ValueError):  # pragma: no cover - not introspectable
            params = {}  # type: ignore[assignment]
        self._takes_max = "max_line_length" in params

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _cap(self) -> tuple[int, Callable[[], Exception]]:
        """(longest line allowed now, the error for a longer one)."""
        if self.budget is None:  # the CRLF after a part's data
            return LINE_CAP, _bad_part_end
        if self._preamble_left is not None:
            return max(self._preamble_left, 0) + BOUNDARY_LINE, preamble_too_large
        return max(self.budget, 0), part_headers_too_large

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        cap, error = self._cap()
        if max_line_length:
            cap = min(cap, max_line_length)
        try:
            if self._takes_max:
                line: bytes = await self._stream.readline(max_line_length=cap)
            else:
                line = await self._stream.readline()
        except LineTooLong:
            raise error() from None
        except ValueError as exc:  # aiohttp < 3.10: "Chunk too big"
            if "too big" in str(exc).lower():
                raise error() from None
            raise
        if len(line) > cap:
            raise error()
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


def _bad_part_end() -> Exception:
    return bad_request(
        "malformed multipart body: a part's data is not followed by a line "
        "break and the next boundary (its Content-Length is wrong): send the "
        "part as it is, without a Content-Length of its own"
    )


def aiohttp_decodes(content: Any) -> bool:
    """Whether aiohttp decodes this request's Content-Encoding itself.

    The app is meant to be served with ``auto_decompress=False`` so that
    :class:`Decoded` does it, with its checks. aiohttp marks a stream it
    decodes with ``total_compressed_bytes`` (an int, None when it does not
    decode); an aiohttp too old to have it always decodes.
    """
    return getattr(content, "total_compressed_bytes", 0) is not None


class Decoded:
    """The request stream decoded as its Content-Encoding says, as read.

    What aiohttp's multipart reader and :class:`deepaas.api.body.BodyReader`
    use of a stream (``readany``, ``read``, ``readline``, ``at_eof``,
    ``unread_data``), over the raw one. Each step inflates at most
    ``DECODE_STEP`` bytes and the loop gets a turn between steps
    (``breathe``), and the decoded size is checked against ``cap`` (set by
    ``cap_option``) after each step, whatever reads it: a bomb is refused
    after a little more than ``cap`` was inflated, even by a read that keeps
    what it reads (``readline`` looking for a line break, ``read()``). A raw
    body larger than ``raw_limit`` (the ``--client-max-size``) is refused
    too. Bad data answers 400, and so does a stream that ends before its
    compressed data does (each of gzip, deflate, br and zstd marks its end) or that
    is empty.
    """

    def __init__(
        self,
        request: web.BaseRequest,
        encoding: str,
        raw_limit: int,
        breathe: Callable[[], Awaitable[None]],
        cap: int = 0,
        cap_option: str = "--client-max-decoded-size",
    ) -> None:
        self._request = request
        self._raw = request.content
        self._encoding = encoding
        self._raw_limit = raw_limit
        self._breathe = breathe
        self._cap = cap
        self._cap_option = cap_option
        self._decoded = 0  # bytes decoded so far
        self._decoder = decoder_for(encoding)
        self._buffer = bytearray()
        self._eof = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    async def _fill(self) -> None:
        """Add one step of decoded bytes to the buffer, or reach the end."""
        while not self._eof:
            data = b""
            if not self._decoder.pending:
                data = await self._raw.readany()
                if not data:
                    if not self._raw.total_bytes:
                        raise empty_encoded(self._request, self._encoding)
                    if not self._decoder.complete():
                        raise truncated(self._request, self._encoding)
                    self._eof = True
                    return
                total = self._raw.total_bytes
                if self._raw_limit and total > self._raw_limit:
                    raise too_large(self._raw_limit, request=self._request)
            try:
                out = self._decoder.decode(data, DECODE_STEP)
            except (zlib.error, ValueError, OSError, RuntimeError) as exc:
                raise undecodable(self._request, self._encoding, exc) from None
            self._decoded += len(out)
            if self._cap and self._decoded > self._cap:
                raise too_large(self._cap, self._cap_option, self._request)
            await self._breathe()
            if out:
                self._buffer += out
                return

    def _take(self, size: int) -> bytes:
        size = len(self._buffer) if size < 0 else size
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def readany(self) -> bytes:
        if not self._buffer:
            await self._fill()
        return self._take(-1)

    async def read(self, n: int = -1) -> bytes:
        if n < 0:
            while not self._eof:
                await self._fill()
            return self._take(-1)
        if not self._buffer:
            await self._fill()
        return self._take(n)

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        max_line_length = max_line_length or LINE_CAP
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buffer) > max_line_length:
                raise LineTooLong(str(len(self._buffer)), str(max_line_length))
            if self._eof:
                return self._take(-1)
            start = len(self._buffer)
            await self._fill()

    def at_eof(self) -> bool:
        return self._eof and not self._buffer

    def is_eof(self) -> bool:
        return self._eof

    def unread_data(self, data: bytes) -> None:
        self._buffer[:0] = data
