"""A tensor's values as binary tensor data, both ways.

Source: Triton's binary tensor data extension
(``docs/protocol/extension_binary_data.md`` in triton-inference-server/server):
fixed-size types little-endian, row-major, unpadded; BOOL one byte, 0 or 1;
BYTES, per element, a 4-byte little-endian length then that many bytes.

Copies: :func:`from_binary` returns a view over the caller's buffer (no
copy; it may be unaligned when the JSON header's length is not a multiple of
the itemsize; numpy handles that, ``np.require(a, ["A", "W"])`` gives an
aligned writable copy). BYTES elements are copied into ``bytes`` objects,
one per element. :func:`to_binary` returns a view for C-contiguous
little-endian arrays, else one converted copy.

Decoding raises :class:`TensorError` (400); encoding a BYTES element that is
neither bytes nor text raises it with status 500 (the model's value).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from deepaas.exceptions import TensorError
from deepaas.oip.datatypes import DATATYPES, element_bytes

_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix


def from_binary(
    where: str, datatype: str, shape: Sequence[int], buffer: memoryview
) -> np.ndarray:
    """The array of ``shape`` in binary tensor data ``buffer`` (no copy).

    Fixed-size types are little-endian, row-major, unpadded; BOOL is one byte,
    0 or 1. BYTES is, per element, a 4-byte little-endian length then that
    many bytes. ``buffer`` must hold exactly the tensor (its
    ``binary_data_size``).
    """
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_from_binary(where, count, buffer).reshape(shape)
    dtype = DATATYPES[datatype]
    need = count * dtype.itemsize
    if len(buffer) != need:
        raise TensorError(
            f"{where}: shape {list(shape)} of {datatype} is {need} bytes, but "
            f"binary_data_size is {len(buffer)}"
        )
    if datatype == "BOOL":
        octets = np.frombuffer(buffer, dtype=np.uint8)
        if count and octets.max() > 1:
            i = int(np.argmax(octets > 1))
            raise TensorError(
                f"{where}: element {i} is byte {octets[i]}, but BOOL binary data "
                f"is one byte per element, 0 or 1"
            )
        return octets.view(dtype).reshape(shape)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _bytes_from_binary(where: str, count: int, buffer: memoryview) -> np.ndarray:
    """``count`` length-prefixed BYTES elements, filling ``buffer`` exactly."""
    end = len(buffer)
    if count * _LENGTH.size > end:
        raise TensorError(
            f"{where}: {count} BYTES elements need at least {count * _LENGTH.size} "
            f"bytes (a 4-byte length each), but binary_data_size is {end}"
        )
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + _LENGTH.size > end:
            raise TensorError(
                f"{where}: binary data ends inside element {i}'s 4-byte length"
            )
        (length,) = _LENGTH.unpack_from(buffer, pos)
        pos += _LENGTH.size
        if pos + length > end:
            raise TensorError(
                f"{where}: element {i} says it is {length} bytes long, but only "
                f"{end - pos} bytes of its binary_data_size are left"
            )
        out[i] = bytes(buffer[pos : pos + length])
        pos += length
    if pos != end:
        raise TensorError(
            f"{where}: {end - pos} bytes are left after its {count} BYTES "
            f"elements; binary_data_size should be {pos}"
        )
    return out


def to_binary(where: str, datatype: str, array: np.ndarray) -> memoryview | bytes:
    """The binary tensor data of ``array`` (a view when no conversion is due)."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for i, element in enumerate(array.ravel()):
            raw = element_bytes(where, i, element)
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    flat = np.ascontiguousarray(array, dtype=DATATYPES[datatype]).reshape(-1)
    return flat.data.cast("B")
