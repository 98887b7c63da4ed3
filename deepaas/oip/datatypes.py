"""OIP datatypes, and a tensor's values in JSON (binary: :mod:`deepaas.oip.binary`).

Sources: KServe's Open Inference Protocol (V2) REST spec, sections "Tensor
Data Types" and "Tensor Data"; Triton's binary tensor data extension
(``docs/protocol/extension_binary_data.md`` in triton-inference-server/server).

One table, :data:`DATATYPES`, maps each OIP datatype to the numpy dtype of
its arrays and back. Fixed-size types are little-endian (binary tensor data
is); a BYTES tensor is an object array whose elements are ``bytes``.

Decoding (client values -> arrays) raises :class:`TensorError` with status
400. Encoding (a model's values -> the wire) raises it with status 500 when
the model returned something no datatype holds, and 400 when the client
asked for JSON where JSON cannot carry the value (non-UTF-8 BYTES).

"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from deepaas.exceptions import TensorError, elided

#: Every OIP datatype and the numpy dtype of its arrays, in both directions
#: (see :func:`datatype_of` for numpy -> OIP).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

_BY_KIND = {
    (dtype.kind, dtype.itemsize): name
    for name, dtype in DATATYPES.items()
    if name != "BYTES"
}
_NAMES = ", ".join(DATATYPES)

#: numpy's own limit was 32 dimensions before numpy 2; also bounds the
#: nesting :func:`from_json` walks.
MAX_DIMS = 32

#: The values of the literals ``Infinity`` and ``-Infinity`` (and ``NaN``)
#: in JSON ``data``: give ``parse_constant=JSON_CONSTANTS.__getitem__`` to
#: ``json.loads``. :func:`from_json` tells these objects (an infinity the
#: client sent) from an infinity ``float()`` made of a number too large for
#: FP64 (``1e400``), which it refuses as out of range.
JSON_CONSTANTS: dict[str, float] = {
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
    "NaN": float("nan"),
}


class LongInteger:
    """A JSON integer literal longer than ``int()`` reads (Python refuses
    strings of more than ``sys.get_int_max_str_digits()`` digits, 4300 by
    default, so that no request costs quadratic time to convert):
    :func:`parse_int` returns one in its place, and :func:`from_json`
    refuses it as out of the datatype's range (no OIP datatype holds an
    integer of more than 309 digits)."""

    __slots__ = ("digits",)

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"an integer of {self.digits} digits"


def parse_int(text: str) -> int | LongInteger:
    """``json.loads``' ``parse_int`` for a document that holds an integer
    too long for ``int()``: that one becomes a :class:`LongInteger`."""
    try:
        return int(text)
    except ValueError:
        return LongInteger(text)


def numpy_dtype(where: str, datatype: object) -> np.dtype[Any]:
    """The numpy dtype of OIP ``datatype`` (e.g. ``"FP32"`` -> ``<f4``)."""
    if isinstance(datatype, str) and datatype in DATATYPES:
        return DATATYPES[datatype]
    hint = ""
    if isinstance(datatype, str) and datatype.upper() in DATATYPES:
        hint = f" (datatypes are upper case: '{datatype.upper()}')"
    raise TensorError(
        f"{where}: unknown datatype {_show(datatype)}{hint}; use one of {_NAMES}"
    )


def datatype_of(dtype: np.dtype[Any]) -> str | None:
    """The OIP datatype of numpy ``dtype``, or None when there is none.

    Any byte order maps; ``object``, ``bytes_`` (``S``) and ``str_`` (``U``)
    map to BYTES; complex, datetime, structured, ``longdouble`` and
    bfloat16 map to None.
    """
    if dtype.kind in "OSU":
        return "BYTES"
    return _BY_KIND.get((dtype.kind, dtype.itemsize))


# -- decoding -----------------------------------------------------------------


def from_json(
    where: str, datatype: str, shape: Sequence[int], data: object
) -> np.ndarray:
    """The array of JSON ``data`` (flat or nested row-major) of ``shape``.

    Values must suit ``datatype``: ``true``/``false`` for BOOL, integers in
    range for the integer types, numbers in range (or ``NaN``/``Infinity``,
    as Triton and Python's json write them) for FP types, strings for BYTES
    (UTF-8 encoded to ``bytes``; the spec has no base64). The lists are the
    ones ``json`` made, with :data:`JSON_CONSTANTS` and :func:`parse_int`
    (a :class:`LongInteger` is out of every range); they are checked in
    C-level passes (the set of element types, min and max) and converted by
    ``np.array``, :data:`PASS_SIZE` elements at a time.
    """
    flat = _flatten(where, data, shape)
    return _values(where, datatype, flat).reshape(shape)


def _flatten(where: str, data: object, shape: Sequence[int]) -> list[Any]:
    """``data`` as one flat list, checked against ``shape``."""
    if not isinstance(data, list):
        raise TensorError(f"{where}: 'data' must be a JSON array, not {_show(data)}")
    count = math.prod(shape)
    if not data or not isinstance(data[0], list):
        if len(data) != count:
            raise TensorError(
                f"{where}: shape {list(shape)} needs {count} values, got {len(data)}"
            )
        return data
    if len(shape) < 2:
        raise TensorError(
            f"{where}: 'data' is nested but shape {list(shape)} has "
            f"{len(shape)} dimension(s); give the values flat"
        )
    flat: list[Any] = []

    def walk(node: list[Any], level: int, path: str) -> None:
        if len(node) != shape[level]:
            raise TensorError(
                f"{where}: data{path} has {len(node)} values, but dimension "
                f"{level} of shape {list(shape)} is {shape[level]}; nest the "
                f"values exactly as the shape, or give them flat"
            )
        if level == len(shape) - 1:
            flat.extend(node)  # a list among them fails the value check
            return
        for i, child in enumerate(node):
            if not isinstance(child, list):
                raise TensorError(
                    f"{where}: data{path}[{i}] is {_show(child)}, but shape "
                    f"{list(shape)} nests {len(shape)} levels deep; nest the "
                    f"values exactly as the shape, or give them flat"
                )
            walk(child, level + 1, f"{path}[{i}]")

    walk(data, 0, "")
    return flat


def _values(where: str, datatype: str, flat: list[Any]) -> np.ndarray:
    """One flat array of ``datatype`` from JSON scalars, each checked."""
    dtype = DATATYPES[datatype]
    kinds: set[type] = set()
    for part in _parts(flat):
        kinds.update(map(type, part))
    if datatype == "BYTES":
        _check_types(where, datatype, flat, kinds, (str,), "a string")
        out = np.empty(len(flat), dtype=object)
        for i, text in enumerate(flat):
            try:
                out[i] = text.encode("utf-8")
            except UnicodeEncodeError:
                raise TensorError(
                    f"{where}: element {i} is not valid Unicode (a lone "
                    f"surrogate?); send it as binary data"
                ) from None
        return out
    if datatype == "BOOL":
        _check_types(where, datatype, flat, kinds, (bool,), "true or false")
        return _array_of(flat, dtype)
    if dtype.kind in "iu":
        _check_types(where, datatype, flat, kinds, (int, LongInteger), "an integer")
        if flat:
            info = np.iinfo(dtype)
            if LongInteger in kinds or not _within(flat, info.min, info.max):
                i = next(
                    i
                    for i, v in enumerate(flat)
                    if isinstance(v, LongInteger) or not info.min <= v <= info.max
                )
                raise TensorError(
                    f"{where}: element {i} is {_show(flat[i])}, outside "
                    f"{datatype}'s range {info.min}..{info.max}"
                )
        return _array_of(flat, dtype)
    _check_types(where, datatype, flat, kinds, (int, float, LongInteger), "a number")
    if LongInteger in kinds:
        i = next(i for i, v in enumerate(flat) if isinstance(v, LongInteger))
        raise _out_of_range(where, datatype, i, flat[i])
    try:
        wide = _array_of(flat, np.dtype(np.float64))
    except OverflowError:  # an integer past float64's range
        i = next(i for i, v in enumerate(flat) if abs(v) > 1e308)
        raise _out_of_range(where, datatype, i, flat[i]) from None
    infinite = np.isinf(wide)
    if infinite.any():  # an Infinity literal, or a number float() overflowed
        for i in np.flatnonzero(infinite).tolist():
            if not any(flat[i] is value for value in JSON_CONSTANTS.values()):
                raise _out_of_range(where, datatype, i, None)
    if dtype == wide.dtype:
        return wide
    with np.errstate(over="ignore"):
        out = wide.astype(dtype)
    overflow = np.isfinite(wide) & ~np.isfinite(out)
    if overflow.any():
        i = int(np.argmax(overflow))
        raise _out_of_range(where, datatype, i, flat[i])
    return out


def _out_of_range(where: str, datatype: str, index: int, value: object) -> TensorError:
    """Element ``index`` (``value``; None: a number too large to read) is
    past the largest value of FP ``datatype``."""
    largest = float(np.finfo(DATATYPES[datatype]).max)
    shown = "a number" if value is None else _show(value)
    return TensorError(
        f"{where}: element {index} is {shown}, outside {datatype}'s range "
        f"(largest {largest!r})"
    )


#: Elements one C-level pass over JSON values (their types, minimum,
#: maximum, conversion) takes at once. Between two, the thread that decodes
#: a big request (off the event loop) can hand the GIL to the loop's: one
#: pass over 1.5 million numbers held it for tens of milliseconds.
PASS_SIZE = 1 << 16


def _parts(flat: list[Any]) -> Iterator[list[Any]]:
    """``flat`` in slices of :data:`PASS_SIZE` elements (itself if shorter)."""
    if len(flat) <= PASS_SIZE:
        yield flat
        return
    for start in range(0, len(flat), PASS_SIZE):
        yield flat[start : start + PASS_SIZE]


def _within(flat: list[Any], low: int, high: int) -> bool:
    """Whether every number of ``flat`` is from ``low`` to ``high``."""
    # Generator expressions, not map(): Python code runs between the parts
    return (
        min(min(part) for part in _parts(flat)) >= low
        and max(max(part) for part in _parts(flat)) <= high
    )


def _array_of(flat: list[Any], dtype: np.dtype[Any]) -> np.ndarray:
    """``np.array(flat, dtype=dtype)``, converted a slice at a time."""
    if len(flat) <= PASS_SIZE:
        return np.array(flat, dtype=dtype)
    out = np.empty(len(flat), dtype=dtype)
    for start in range(0, len(flat), PASS_SIZE):
        out[start : start + PASS_SIZE] = flat[start : start + PASS_SIZE]
    return out


def _check_types(
    where: str,
    datatype: str,
    flat: list[Any],
    kinds: set[type],
    allowed: tuple[type, ...],
    wanted: str,
) -> None:
    """Raise naming the first element whose JSON type ``datatype`` refuses.

    ``bool`` is a subclass of ``int`` in Python, and refused for numbers.
    """
    if kinds.issubset(allowed):
        return
    i = next(i for i, v in enumerate(flat) if type(v) not in allowed)
    raise TensorError(
        f"{where}: element {i} is {_show(flat[i])}, but {datatype} needs {wanted}"
    )


# -- encoding -----------------------------------------------------------------


def to_array(where: str, value: object) -> tuple[np.ndarray, str]:
    """A model's output ``value`` as an array and its OIP datatype.

    Arrays keep their shape; numbers, numpy scalars, ``str`` and ``bytes``
    become 0-d arrays (shape ``[]``); nested lists become arrays as numpy
    makes them (lists of ``str``/``bytes`` become object arrays, so that
    bytes keep their trailing NULs). Anything else (None, dicts, ragged
    lists, complex numbers, ints past 64 bits) is an error with status 500.
    """
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (str, bytes)):
        array = np.empty((), dtype=object)
        array[()] = value
    else:
        try:
            array = np.asarray(value)
            if array.dtype.kind in "SU":
                array = np.array(value, dtype=object)
        except (ValueError, TypeError, OverflowError) as exc:
            raise TensorError(
                f"{where}: cannot make a tensor of {type(value).__name__} "
                f"{elided(repr(value), 40)}: {exc}",
                status=500,
            ) from None
    datatype = datatype_of(array.dtype)
    if datatype is None:
        raise TensorError(
            f"{where}: numpy dtype {array.dtype} has no OIP datatype; return "
            f"bool, (u)int8-64, float16/32/64, str or bytes values",
            status=500,
        )
    return array, datatype


def to_json(where: str, datatype: str, array: np.ndarray) -> list[Any]:
    """The flat row-major JSON ``data`` of ``array``.

    FP values NaN, Infinity and -Infinity are written as ``null``: JSON has
    no such numbers, and the bare tokens Triton writes are refused by
    KServe's client (orjson), browsers, jq, Go and Java. numpy (hence
    tritonclient and KServe's client) reads ``null`` in a float array as
    NaN; a client that must tell the three apart asks for binary data. The
    DEEPaaS predict route writes them as ``null`` too. BYTES elements must be
    UTF-8 text (400 otherwise: JSON has no bytes; the client should ask for
    the output as binary data).
    """
    flat = array.ravel()
    if datatype != "BYTES":
        values: list[Any] = flat.tolist()
        if flat.dtype.kind in "fc" and not np.isfinite(flat).all():
            values = [v if math.isfinite(v) else None for v in values]
        return values
    out: list[str] = []
    for i, element in enumerate(flat):
        raw = element_bytes(where, i, element)
        if isinstance(element, str):  # checked as valid Unicode
            out.append(element)
            continue
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise TensorError(
                f"{where}: element {i} is not UTF-8 text, which JSON cannot "
                f"carry; request this output as binary data (parameters "
                f'{{"binary_data": true}})'
            ) from None
    return out


def element_bytes(where: str, index: int, element: object) -> bytes:
    """A BYTES element as bytes: bytes as they are, str as UTF-8."""
    if isinstance(element, (bytes, bytearray)):
        return bytes(element)
    if isinstance(element, str):
        try:
            return element.encode("utf-8")
        except UnicodeEncodeError:
            pass
    raise TensorError(
        f"{where}: element {index} is {type(element).__name__} "
        f"{elided(repr(element), 40)}; a BYTES tensor holds "
        f"str (valid Unicode) or bytes",
        status=500,
    )


def _show(value: object) -> str:
    """A short description of a JSON value for an error message."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and not -(10**40) < value < 10**40:
        try:
            return f"an integer of {len(str(abs(value)))} digits"
        except ValueError:  # past sys.get_int_max_str_digits()
            return "an integer of thousands of digits"
    return elided(repr(value), 40)
