"""The layout of a frame whose arrays travel after its pickle.

A numpy array pickled with protocol 5 hands its memory to the pickler as a
buffer; :func:`deepaas.engine.protocol.pack_parts` keeps those of
:data:`OUT_OF_BAND_MIN` bytes or more out of the pickle, and frames the
message as::

    length | WITH_BUFFERS   8 bytes, big-endian: the bytes that follow
    pickle length, count    ``!QI``
    count buffer sizes      ``!Q`` each
    the pickle
    the buffers             each starting at a multiple of 64 bytes from
                            the end of the length (zeros between), so that
                            the arrays the reader makes of them are aligned

Written as parts (:func:`buffers_frame`): the frame's head in one bytes,
then each buffer as a view of the array's own memory (never copied here),
and the zeros before the next. Read back (:func:`split_buffers_frame`) from
one buffer holding the frame, as views of it. The top bit of the length
(``WITH_BUFFERS``) tells such a frame from one that is a pickle alone.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence

#: A pickle-5 buffer (an array's bytes) of this size or more travels after
#: the pickle, not inside it; a smaller one costs less to copy than to send
#: apart.
OUT_OF_BAND_MIN = 64 << 10
#: The length's top bit marks a frame whose pickle has buffers after it.
WITH_BUFFERS = 1 << 63
_HEADER = struct.Struct("!Q")
_TABLE = struct.Struct("!QI")  # the pickle's length, the number of buffers
_SIZE = struct.Struct("!Q")
_ALIGN = 64

#: What a frame is written as: bytes, and views of arrays' memory.
Part = bytes | memoryview


def buffers_frame(payload: bytes | memoryview, buffers: list[memoryview]) -> list[Part]:
    """The parts of the frame of ``payload`` (a pickle) and its ``buffers``."""
    head = bytearray(_TABLE.pack(len(payload), len(buffers)))
    for view in buffers:
        head += _SIZE.pack(view.nbytes)
    head += payload
    parts: list[Part] = []
    size = len(head)
    for view in buffers:
        pad = -size % _ALIGN
        if parts:
            parts.append(bytes(pad))
        else:
            head += bytes(pad)
        parts.append(view)
        size += pad + view.nbytes
    return [_HEADER.pack(WITH_BUFFERS | size) + head, *parts]


def split_buffers_frame(frame: bytearray) -> tuple[memoryview, list[memoryview]]:
    """The pickle and the buffers of a frame (its bytes after the length),
    as views of ``frame``; ValueError when they do not fill it exactly."""
    view = memoryview(frame)
    length, count = _TABLE.unpack_from(view, 0)
    pos = _TABLE.size
    sizes = struct.unpack_from(f"!{count}Q", view, pos)
    pos += count * _SIZE.size
    pickled = view[pos : pos + length]
    pos += length
    buffers = []
    for size in sizes:
        pos += -pos % _ALIGN
        buffers.append(view[pos : pos + size])
        pos += size
    if pos != len(frame):
        raise ValueError(f"a frame's buffers end at {pos}, not at {len(frame)}")
    return pickled, buffers


def coalesce(parts: Sequence[Part]) -> list[Part]:
    """``parts`` (of several frames) with each run of bytes joined: one
    write per run, and the arrays' views as they are (never copied)."""
    out: list[Part] = []
    for views, run in itertools.groupby(parts, lambda p: type(p) is memoryview):
        out.extend(run) if views else out.append(b"".join(run))  # noqa: B031
    return out
