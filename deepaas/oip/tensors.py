"""Infer request bodies -> arrays (responses: :mod:`deepaas.oip.responses`).

Sources: KServe's Open Inference Protocol (V2) REST spec, "Inference
Request JSON Object"; Triton's binary
tensor data extension (``docs/protocol/extension_binary_data.md`` in
triton-inference-server/server): a JSON header of
``Inference-Header-Content-Length`` bytes, then each binary tensor's bytes
in the order the tensors appear in the header.

Every malformed request raises :class:`~deepaas.exceptions.TensorError`
(400) naming the tensor and what to change; nothing else escapes
:func:`decode_request`.

Copies when decoding a body of ``n`` bytes: the JSON header is parsed from
a copy of its bytes (small); binary tensors are read-only numpy views over
``body`` (no copy, no Python list); BYTES elements become one ``bytes``
object each; JSON tensors are built from the lists ``json`` made.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepaas.exceptions import TensorError, echoed
from deepaas.oip.binary import from_binary
from deepaas.oip.datatypes import (
    JSON_CONSTANTS,
    MAX_DIMS,
    LongInteger,
    from_json,
    numpy_dtype,
    parse_int,
)

#: Bound on a shape's (non-zero) sizes multiplied: numpy's largest size in
#: bytes (2**63 - 1) divided by the largest itemsize (8), rounded down. numpy
#: refuses an array past it even when a zero size leaves it empty.
MAX_ELEMENTS = (2**63 - 1) // 8

#: Name of the header giving the JSON header's length in a binary body.
HEADER_LENGTH = "Inference-Header-Content-Length"

_UNSUPPORTED = {
    "shared_memory_region": "the shared-memory extensions are not implemented; "
    "send the tensor in JSON or as binary data",
    "classification": "the classification extension is not implemented; "
    "ask for the output tensor itself",
}


@dataclass(frozen=True)
class InputTensor:
    """One decoded input: ``data`` has ``shape`` and ``datatype``'s dtype.

    Binary data is a view over the request body, not a copy: writable
    when the body was read into one buffer (a ``bytearray``), read-only when
    it came as ``bytes``. BYTES data is an object array of ``bytes``.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    parameters: dict[str, Any]
    data: np.ndarray


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, and how (``parameters``)."""

    name: str
    parameters: dict[str, Any]

    @property
    def binary_data(self) -> bool | None:
        """The output's ``binary_data`` parameter; None when not given."""
        value = self.parameters.get("binary_data")
        return value if isinstance(value, bool) else None


@dataclass(frozen=True)
class InferRequest:
    """A decoded infer request. ``outputs`` is empty when none were named
    (the model then answers all its outputs)."""

    id: str | None
    parameters: dict[str, Any]
    inputs: list[InputTensor]
    outputs: list[RequestedOutput]

    @property
    def binary_data_output(self) -> bool:
        """The request's ``binary_data_output`` parameter (default false)."""
        return self.parameters.get("binary_data_output") is True

    def wants_binary(self, name: str) -> bool:
        """Whether output ``name`` goes back as binary data: its own
        ``binary_data`` if given, else ``binary_data_output``. Pass this
        method as :func:`encode_response`'s ``binary``."""
        for output in self.outputs:
            if output.name == name and output.binary_data is not None:
                return output.binary_data
        return self.binary_data_output


MAX_LENGTH_DIGITS = 18  # 10**18 bytes: no body is that long


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header's value as an int."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise TensorError(
            f"{HEADER_LENGTH} must be the JSON header's length in bytes, a "
            f"non-negative integer, not {echoed(value)}"
        )
    if len(text) > MAX_LENGTH_DIGITS:  # past any body this server reads
        raise TensorError(
            f"{HEADER_LENGTH} is {echoed(text)}, past the end of any body: it "
            "must be the JSON header's length in bytes"
        )
    return int(text)


def decode_request(
    body: bytes | bytearray | memoryview,
    header_length: int | None,
    cooperative: bool = False,
) -> InferRequest:
    """Decode an infer request body.

    ``header_length`` is the ``Inference-Header-Content-Length`` header
    (None: the whole body is JSON). Inputs with
    ``parameters.binary_data_size`` are read, in input order, from the bytes
    after the header, which they must fill exactly.

    ``cooperative`` (a big body, decoded in a worker thread): the JSON's
    numbers and objects are built through Python-level hooks, so that the
    thread lets go of the GIL every few milliseconds and the event loop's
    thread runs meanwhile (json's C parser holds it throughout: 0.3 s for
    12 MB of numbers); parsing is then about three times slower.
    """
    view = memoryview(body).cast("B")
    size = view.nbytes
    if header_length is None:
        header_end = size
    elif isinstance(header_length, bool) or not isinstance(header_length, int):
        raise TensorError(f"{HEADER_LENGTH} must be an integer")
    elif header_length < 0:
        raise TensorError(f"{HEADER_LENGTH} is {header_length}; it cannot be negative")
    elif header_length > size:
        raise TensorError(
            f"{HEADER_LENGTH} is {header_length}, past the end of the "
            f"{size}-byte body; it must be the JSON header's length in bytes"
        )
    else:
        header_end = header_length
    document, long_integer = _parse_json(
        body if isinstance(body, bytes) and header_end == size else view[:header_end],
        cooperative,
    )
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise TensorError(f"'id' must be a string, not {_json_text(request_id, 40)}")
    if request_id is not None and not _is_unicode(request_id):
        # it is echoed in the response, which strict JSON parsers then refuse
        raise TensorError(
            f"'id' must be valid Unicode text, not {echoed(request_id)} (a lone "
            "surrogate)"
        )
    parameters = _parameters("the request", document)
    _check_flag("the request", parameters, "binary_data_output")

    raw_inputs = _list("the request", document, "inputs", required=True)
    inputs: list[InputTensor | None] = []
    binary: list[tuple[int, int]] = []  # (index in inputs, binary_data_size)
    names: set[str] = set()
    for index, raw in enumerate(raw_inputs):
        tensor, binary_size = _input(index, raw, names)
        if binary_size is not None:
            binary.append((index, binary_size))
        inputs.append(tensor)

    rest = size - header_end
    total = sum(binary_size for _, binary_size in binary)
    if binary and header_length is None:
        name = raw_inputs[binary[0][0]]["name"]
        raise TensorError(
            f"input '{name}' has a binary_data_size, but the request has no "
            f"{HEADER_LENGTH} header; send it with the JSON header's length"
        )
    if total != rest:
        raise TensorError(
            f"the inputs' binary_data_size add up to {total} bytes, but "
            f"{rest} bytes follow the {header_end}-byte JSON header "
            f"({HEADER_LENGTH}); each binary input needs its exact size"
        )
    offset = header_end
    for index, binary_size in binary:
        raw = raw_inputs[index]
        name, datatype, shape = raw["name"], raw["datatype"], tuple(raw["shape"])
        data = from_binary(
            f"input '{name}'", datatype, shape, view[offset : offset + binary_size]
        )
        offset += binary_size
        inputs[index] = InputTensor(
            name, datatype, shape, raw.get("parameters", {}), data
        )

    outputs: list[RequestedOutput] = []
    output_names: set[str] = set()
    for index, raw in enumerate(_list("the request", document, "outputs")):
        outputs.append(_output(index, raw, output_names))
    if long_integer is not None:  # not in any input's data, which refuses it
        raise TensorError(
            f"the request holds {long_integer!r}, in a field no integer that "
            f"long can fill"
        )
    return InferRequest(
        request_id, parameters, [t for t in inputs if t is not None], outputs
    )


def _float(text: str) -> float:
    return float(text)  # a Python-level call: see decode_request's cooperative


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return dict(pairs)  # likewise


def _parse_json(
    header: bytes | memoryview, cooperative: bool = False
) -> tuple[dict[str, Any], LongInteger | None]:
    """The JSON object ``header`` holds, and the first integer in it too
    long for ``int()`` (a :class:`LongInteger` in the document), if any.

    The literals ``NaN``, ``Infinity`` and ``-Infinity`` are the objects of
    :data:`JSON_CONSTANTS`. Only when ``int()`` refused an integer literal
    (a plain ValueError: Python reads at most 4300 digits) is the header
    parsed again, with :func:`parse_int`, so that the tensor that holds the
    integer refuses it as out of its datatype's range.
    """
    text = header if isinstance(header, bytes) else bytes(header)
    long_integers: list[LongInteger] = []

    def read_int(digits: str) -> int | LongInteger:
        value = parse_int(digits)
        if isinstance(value, LongInteger):
            long_integers.append(value)
        return value

    try:
        try:
            if cooperative:
                document = json.loads(
                    text,
                    parse_constant=JSON_CONSTANTS.__getitem__,
                    parse_int=read_int,
                    parse_float=_float,
                    object_pairs_hook=_object,
                )
            else:
                document = json.loads(text, parse_constant=JSON_CONSTANTS.__getitem__)
        except ValueError as exc:
            if type(exc) is not ValueError:  # JSONDecodeError, UnicodeDecodeError
                raise
            document = json.loads(
                text, parse_constant=JSON_CONSTANTS.__getitem__, parse_int=read_int
            )
    except RecursionError:
        raise TensorError("the request's JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise TensorError(
            f"the request is not valid JSON ({exc}); an infer request is a JSON "
            f"object, followed by binary data only when {HEADER_LENGTH} is given"
        ) from None
    if not isinstance(document, dict):
        raise TensorError(
            f"the request must be a JSON object with 'inputs', not a "
            f"{type(document).__name__}"
        )
    return document, long_integers[0] if long_integers else None


def _is_unicode(text: str) -> bool:
    """Whether ``text`` has no lone surrogate (``"\\ud800"`` in JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_text(value: object, limit: int) -> str:
    """``value`` as JSON text for a message, at most ``limit`` characters."""
    if isinstance(value, LongInteger):
        return repr(value)
    return json.dumps(value, default=repr)[:limit]


def _input(
    index: int, raw: object, names: set[str]
) -> tuple[InputTensor | None, int | None]:
    """Check input ``raw``; decode it unless it is binary (then its size)."""
    where = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise TensorError(f"{where} must be a JSON object with name, shape, datatype")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise TensorError(f"{where} needs a 'name', a non-empty string")
    where = f"input {echoed(name)}"
    if name in names:
        raise TensorError(f"{where} is given twice; send each input once")
    names.add(name)
    if "datatype" not in raw:
        raise TensorError(f"{where} needs a 'datatype' (e.g. \"FP32\")")
    numpy_dtype(where, raw["datatype"])
    shape = _shape(where, raw.get("shape"))
    parameters = _parameters(where, raw)
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if isinstance(binary_size, bool) or not isinstance(binary_size, int):
            raise TensorError(f"{where}: binary_data_size must be an integer")
        if binary_size < 0:
            raise TensorError(f"{where}: binary_data_size cannot be negative")
        if "data" in raw:
            raise TensorError(
                f"{where} has both 'data' and binary_data_size; send one of them"
            )
        return None, binary_size
    if "data" not in raw:
        raise TensorError(
            f"{where} has no 'data'; give its values in 'data', or as binary "
            f"data with parameters.binary_data_size"
        )
    data = from_json(where, raw["datatype"], shape, raw["data"])
    return InputTensor(name, raw["datatype"], shape, parameters, data), None


def _output(index: int, raw: object, names: set[str]) -> RequestedOutput:
    """Check requested output ``raw``."""
    where = f"outputs[{index}]"
    if not isinstance(raw, dict):
        raise TensorError(f"{where} must be a JSON object with a 'name'")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise TensorError(f"{where} needs a 'name', a non-empty string")
    where = f"output {echoed(name)}"
    if name in names:
        raise TensorError(f"{where} is requested twice; name each output once")
    names.add(name)
    parameters = _parameters(where, raw)
    _check_flag(where, parameters, "binary_data")
    return RequestedOutput(name, parameters)


def _shape(where: str, shape: object) -> tuple[int, ...]:
    """``shape`` checked: a list of at most MAX_DIMS sizes, none -1."""
    if not isinstance(shape, list):
        raise TensorError(f"{where} needs a 'shape', a list of integers like [1, 3]")
    for size in shape:
        if isinstance(size, LongInteger):
            raise TensorError(
                f"{where}: shape holds {size!r}, too large for any tensor"
            )
        if isinstance(size, bool) or not isinstance(size, int):
            raise TensorError(
                f"{where}: shape {_json_text(shape, 60)} must hold integers only"
            )
        if size < 0:
            hint = " (-1 marks a variable size in model metadata only)"
            raise TensorError(
                f"{where}: shape {shape} has {size}; a request gives each "
                f"dimension's actual size{hint if size == -1 else ''}"
            )
    if len(shape) > MAX_DIMS:
        raise TensorError(
            f"{where}: shape has {len(shape)} dimensions; at most {MAX_DIMS}"
        )
    # numpy refuses a shape whose non-zero sizes multiply past its index
    # range, even with a zero among them
    if math.prod(size for size in shape if size) > MAX_ELEMENTS:
        raise TensorError(f"{where}: shape {shape} is too large for any tensor")
    return tuple(shape)


def _parameters(where: str, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw``'s parameters: an object; extensions not implemented refused."""
    parameters = raw.get("parameters", {})
    if not isinstance(parameters, dict):
        raise TensorError(f"{where}: 'parameters' must be a JSON object")
    for key, why in _UNSUPPORTED.items():
        if key in parameters:
            raise TensorError(f"{where}: parameter '{key}': {why}")
    return parameters


def _check_flag(where: str, parameters: dict[str, Any], key: str) -> None:
    if key in parameters and not isinstance(parameters[key], bool):
        raise TensorError(f"{where}: parameter '{key}' must be true or false")


def _list(
    where: str, document: dict[str, Any], key: str, required: bool = False
) -> list[Any]:
    value = document.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise TensorError(f"{where} needs '{key}', a JSON array of tensors")
    return value
