"""Our end of a child's socket: frames out, in order and within memory;
messages in.

Writes go through the event loop's transport, which keeps what the socket
did not take at once in a buffer of its own (a copy). A frame carrying a
large array (:func:`deepaas.engine.protocol.pack_parts`) is not handed to
it whole: its parts wait here, as views of the arrays' memory, and are
handed over ``WRITE_SLICE`` bytes at a time while the transport does not ask
us to pause (its flow control: ``pause_writing`` past its high-water mark,
``resume_writing`` once drained). So a 64 MB tensor costs the API process
one slice of copy, not 64 MB more, while the worker reads it. Everything
written after a waiting part waits behind it, so frames stay in order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from deepaas.engine import protocol

LOG = logging.getLogger("deepaas.engine.process")

#: Bytes handed to the transport at a time while parts wait.
WRITE_SLICE = 1 << 20


class Channel(asyncio.Protocol):
    """Our end of a child's socket: frames in, messages out."""

    def __init__(self, label: str, on_message: Callable[[Any], None]) -> None:
        self.label = label
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._decoder = protocol.FrameDecoder()
        self._finished = False  # we sent end-of-file: nothing more to write
        self._waiting: collections.deque[memoryview] = collections.deque()
        self._paused = False  # the transport's buffer is past its high-water mark
        self._eof_due = False  # finish() was called while parts waited

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except Exception as exc:  # a corrupt stream: end the conversation
            LOG.error("%s sent garbage (%s); closing its connection", self.label, exc)
            self.abort()
            return
        for message in messages:
            self.on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._waiting.clear()  # the arrays they view may be freed
        if not self.closed.done():
            self.closed.set_result(None)

    # -- writing ----------------------------------------------------------------

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._flush()

    def write(self, data: bytes | list[protocol.Part]) -> bool:
        """Send framed bytes, or a frame's parts (see the module docstring);
        False if the child is gone (or was told to finish)."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._finished:
            return False
        if isinstance(data, bytes):
            if not self._waiting:  # the usual case: straight to the transport
                transport.write(data)
                return True
            self._waiting.append(memoryview(data))
        else:
            self._waiting.extend(memoryview(part).cast("B") for part in data)
        self._flush()
        return True

    def _flush(self) -> None:
        """Hand waiting parts to the transport, a slice at a time, until it
        asks us to pause or nothing waits."""
        waiting = self._waiting
        transport = self.transport
        while waiting and not self._paused:
            if transport is None or transport.is_closing():
                waiting.clear()
                return
            part = waiting[0]
            if len(part) > WRITE_SLICE:
                waiting[0] = part[WRITE_SLICE:]
                part = part[:WRITE_SLICE]
            else:
                waiting.popleft()
            transport.write(part)  # may call pause_writing() at once
        if not waiting and self._eof_due:
            self._eof_due = False
            self._write_eof()

    def send(self, message: Any) -> bool:
        """Send one message; False if the child is gone."""
        return self.write(protocol.pack(message))

    def finish(self) -> None:
        """End-of-file for the child (once what waits is written), and go on
        reading until it closes its end.

        The clean way to stop a child: a worker exits 0 on end-of-file once
        it answered what it had already read (messages the parent took back
        meanwhile still get their empty answers, read and dropped here).
        :meth:`close` instead drops the connection at once: the child then
        may find it reset (Linux resets a Unix socket closed with unread
        data) or broken when it writes, and exits as a child that failed.
        """
        transport = self.transport
        if transport is None or transport.is_closing() or self._finished:
            return
        self._finished = True
        if self._waiting:
            self._eof_due = True
        else:
            self._write_eof()

    def _write_eof(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        else:  # pragma: no cover - every stream transport on Unix can
            transport.close()

    def close(self) -> None:
        """Close our end now: end-of-file for the child, or a reset if it
        still sent something we did not read (see :meth:`finish`); parts
        still waiting are dropped."""
        self._waiting.clear()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._waiting.clear()
        if self.transport is not None:
            self.transport.abort()
