"""Which tensors of an ONNX graph have no shape at all (unknown rank).

onnxruntime shows a graph input or output whose type has no shape (its
rank unknown: any number of axes) as ``[]``, as it shows a scalar, so a
model that takes an array of any shape was described, and served, as one
taking a single number. The ONNX file says which it is (the ``shape``
field of the tensor's type is absent, or present and empty), so it is
read here: the onnx package is no dependency of the ``onnx`` extra, and
this reads no more of the file than its graph's inputs and outputs (the
weights are skipped, not read; the file is mapped, not loaded).

The protobuf wire format, for the few fields needed (onnx.proto):
``ModelProto.graph`` = 7; ``GraphProto.input`` = 11, ``output`` = 12;
``ValueInfoProto.name`` = 1, ``type`` = 2; ``TypeProto.tensor_type`` = 1;
``TypeProto.Tensor.shape`` = 2.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

_LEN = 2  # wire type of a length-delimited field (a message, a string)


def _varint(data: bytes | mmap.mmap, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(
    data: bytes | mmap.mmap, start: int, end: int
) -> Iterator[tuple[int, int, int, int]]:
    """``(field, wire type, start, end)`` of each field of a message that
    lies in ``data[start:end]``; a field of another wire type than
    length-delimited is skipped (start = end)."""
    pos = start
    while pos < end:
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
            yield field, wire, pos, pos
            continue
        if wire == 1:
            size = 8
        elif wire == 5:
            size = 4
        elif wire == _LEN:
            size, pos = _varint(data, pos)
        else:  # groups: not in onnx.proto
            raise ValueError(f"unexpected wire type {wire}")
        if pos + size > end:
            raise ValueError("a field runs past its message")
        yield field, wire, pos, pos + size
        pos += size


def _sub(data: bytes | mmap.mmap, start: int, end: int, wanted: int) -> list[range]:
    return [
        range(s, e)
        for field, wire, s, e in _fields(data, start, end)
        if field == wanted and wire == _LEN
    ]


def _shapeless(data: bytes | mmap.mmap, start: int, end: int) -> str | None:
    """The name of a ``ValueInfoProto`` that is a tensor without a shape."""
    names = _sub(data, start, end, 1)
    # A message field given more than once is merged: look at each.
    tensors = [
        tensor
        for kind in _sub(data, start, end, 2)
        for tensor in _sub(data, kind.start, kind.stop, 1)
    ]
    if not names or not tensors:
        return None  # no name, or not a tensor (a sequence, a map...)
    if any(_sub(data, t.start, t.stop, 2) for t in tensors):
        return None  # a shape, maybe of no axes: a scalar
    return bytes(data[names[-1].start : names[-1].stop]).decode("utf-8", "replace")


def unknown_rank(path: str | os.PathLike[str]) -> set[str]:
    """The names of the graph inputs and outputs of the ONNX file ``path``
    whose type has no shape; empty when the file cannot be read as one
    (onnxruntime, which loaded it, says what is wrong with it)."""
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                return set()
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                found: set[str] = set()
                for graph in _sub(data, 0, len(data), 7):
                    for field, wire, start, end in _fields(
                        data, graph.start, graph.stop
                    ):
                        if field in (11, 12) and wire == _LEN:
                            name = _shapeless(data, start, end)
                            if name is not None:
                                found.add(name)
                return found
    except (OSError, ValueError, IndexError):
        return set()
