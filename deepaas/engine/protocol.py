"""The messages between the API process and a worker, and how they are framed.

One stream socket per worker carries length-prefixed pickles. Only plain
values cross it: kwargs (files travel as paths), rendered results, and
:class:`RemoteError` made of strings, so a plugin's exotic exception or
return value can never fail to unpickle on the other side.

Parent to worker::

    (CALL, call_id, method, payload)   method "predict": payload is kwargs

Worker to parent::

    (READY, info)                      imported and warmed; takes work now
    (FAILED, stage, message)           import or warm() failed; it exits
    (RESULT, call_id, ok, value, compute_seconds)
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, NamedTuple

CALL = "call"
READY = "ready"
FAILED = "failed"
RESULT = "result"

_HEADER = struct.Struct("!Q")
HEADER_SIZE = _HEADER.size


class RemoteError(NamedTuple):
    """An error raised in a worker, reduced to what the client is told.

    ``status`` is the HTTP status to answer (500 for a plugin exception, or
    the status of an aiohttp ``HTTPException`` the plugin raised).
    """

    status: int
    message: str
    traceback: str = ""


def pack(message: Any) -> bytes:
    """Frame one message: an 8-byte length, then the pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Accumulates bytes from a stream and yields whole messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        end = len(buffer)
        with memoryview(buffer) as view:
            while end - start >= HEADER_SIZE:
                (size,) = _HEADER.unpack_from(view, start)
                body_start = start + HEADER_SIZE
                if end - body_start < size:
                    break
                with view[body_start : body_start + size] as body:
                    messages.append(pickle.loads(body))
                start = body_start + size
        if start:
            del buffer[:start]
        return messages
