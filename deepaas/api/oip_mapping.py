"""DEEPaaS plugins as OIP models: predict arguments <-> input tensors, the
predict result -> output tensors. No plugin change is needed.

Each predict argument is an input of the same name as on the DEEPaaS route
(its ``data_key`` when it has one: ``class``, ``demo-str``), typed by its
marshmallow field:

========================================  ========  =======  ===========
field                                     datatype  shape    value given
========================================  ========  =======  ===========
``Int``                                   INT64     [1]      ``int``
``Float`` (``Number``, ``Decimal``)       FP64      [1]      ``float``
``Bool``                                  BOOL      [1]      ``bool``
``Str`` (enum, ``Email``, dates...)       BYTES     [1]      ``str`` (UTF-8)
``List`` of one of the above              same      [-1]     a list
a file field (``type="file"``)            BYTES     [1]      ``UploadedFile``
a list of files                           BYTES     [-1]     a list of them
anything else (``Dict``, ``Nested``...)   BYTES     [1]      JSON text, parsed
========================================  ========  =======  ===========

An integer input also takes any INT/UINT datatype, a float input any FP or
integer datatype; the values then go through the plugin's own schema, the
one the DEEPaaS route loads them with (defaults, required, validators,
custom fields).

The result (as the worker rendered it for the DEEPaaS route) maps to
outputs: a dict -> one output per key; anything else -> one output named
``output``; bytes and files -> BYTES. Values no tensor holds (dicts, None,
mixed lists) become BYTES [1] of their JSON text.

Nothing here knows HTTP; :mod:`deepaas.api.oip` does the routes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from marshmallow import fields as ma_fields

from deepaas.api.multipart import _write_new
from deepaas.api.parsing import parse_json_text
from deepaas.exceptions import DeepaasError, TensorError, echoed
from deepaas.model.v2.fields import ArgSpec
from deepaas.model.v2.wrapper import UploadedFile
from deepaas.oip.datatypes import to_array
from deepaas.oip.tensors import InputTensor

INT_TYPES = frozenset(
    ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]
)
FP_TYPES = frozenset(["FP16", "FP32", "FP64"])

#: kind -> (datatype in metadata, datatypes a request may send)
KINDS: dict[str, tuple[str, frozenset[str]]] = {
    "int": ("INT64", INT_TYPES),
    "float": ("FP64", FP_TYPES | INT_TYPES),
    "bool": ("BOOL", frozenset(["BOOL"])),
    "str": ("BYTES", frozenset(["BYTES"])),
    "json": ("BYTES", frozenset(["BYTES"])),
    "file": ("BYTES", frozenset(["BYTES"])),
}

#: The output of a result that is not a dict.
OUTPUT = "output"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output as model metadata shows it."""

    name: str
    kind: str  # a key of KINDS
    many: bool = False  # shape [-1] (a list), else [1]
    required: bool = False
    delimiter: str | None = None  # webargs' DelimitedList: one "1,2" text

    @property
    def datatype(self) -> str:
        return KINDS[self.kind][0]

    @property
    def shape(self) -> list[int]:
        return [-1] if self.many else [1]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


def field_kind(field: ma_fields.Field) -> str:
    """The kind of one (non-file) value that ``field`` loads."""
    if isinstance(field, ma_fields.Boolean):
        return "bool"
    if isinstance(field, ma_fields.Integer):
        return "int"
    if isinstance(field, ma_fields.Number):  # Float, Decimal, Number
        return "float"
    if isinstance(field, (ma_fields.String, ma_fields.DateTime, ma_fields.Enum)):
        return "str"  # Email, Url, UUID are Strings; Date and Time DateTimes
    return "json"


def input_spec(spec: ArgSpec) -> TensorSpec:
    """The input tensor of one predict argument."""
    field = spec.field
    inner = getattr(field, "inner", None)
    if spec.is_file:
        return TensorSpec(spec.key, "file", spec.is_list, spec.required)
    if isinstance(field, ma_fields.List) and isinstance(inner, ma_fields.Field):
        kind = field_kind(inner)
        if kind != "json":
            delimiter = getattr(field, "delimiter", None)
            return TensorSpec(
                spec.key,
                kind,
                True,
                spec.required,
                delimiter if isinstance(delimiter, str) else None,
            )
        return TensorSpec(spec.key, "json", False, spec.required)
    return TensorSpec(spec.key, field_kind(field), False, spec.required)


def input_specs(args: Mapping[str, ArgSpec]) -> dict[str, TensorSpec]:
    """The model's inputs, by name, in the order of its predict arguments."""
    return {spec.key: input_spec(spec) for spec in args.values()}


def output_specs(schema: Any) -> list[TensorSpec]:
    """The outputs model metadata shows: one per field of the plugin's
    response ``schema`` (a marshmallow Schema class); without one, a single
    ``output`` of unknown shape (what it holds is known only once predict
    returns it)."""
    if schema is None:
        return [TensorSpec(OUTPUT, "json", True)]
    outputs = []
    for name, field in schema().fields.items():
        key = field.data_key or name
        inner = getattr(field, "inner", None)
        if isinstance(field, ma_fields.List) and isinstance(inner, ma_fields.Field):
            kind = field_kind(inner)
            outputs.append(TensorSpec(key, kind, kind != "json"))
        else:
            outputs.append(TensorSpec(key, field_kind(field)))
    return outputs


# -- requests ----------------------------------------------------------------


def check_inputs(
    model: str, specs: Mapping[str, TensorSpec], inputs: Iterable[InputTensor]
) -> None:
    """Every input named is one of the model's (else a 400 naming them)."""
    for tensor in inputs:
        if tensor.name not in specs:
            known = ", ".join(specs) or "none"
            raise TensorError(
                f"model {model!r} has no input {echoed(tensor.name)}; "
                f"its inputs: {known}"
            )
    given = {tensor.name for tensor in inputs}
    missing = [name for name, s in specs.items() if s.required and name not in given]
    if missing:
        described = ", ".join(
            f"'{n}' ({specs[n].datatype} {specs[n].shape})" for n in missing
        )
        raise TensorError(f"model {model!r} needs input(s) {described}")


def to_values(
    specs: Mapping[str, TensorSpec],
    inputs: Iterable[InputTensor],
    tmp_dir: str,
    files: list[str],
) -> dict[str, Any]:
    """The values of ``inputs`` as the DEEPaaS route would collect them
    (before the plugin's schema loads them), by wire name.

    File inputs are written to new files in ``tmp_dir`` and given as
    :class:`UploadedFile`; each path is appended to ``files`` before the
    file is created, so the caller removes every one, whatever happens.
    Raises :class:`TensorError` (400) for a wrong datatype or shape.
    """
    values: dict[str, Any] = {}
    for tensor in inputs:
        spec = specs[tensor.name]
        items = _items(spec, tensor)
        if spec.kind == "file":
            uploads = [_save(spec.name, item, tmp_dir, files) for item in items]
            values[spec.name] = uploads if spec.many else uploads[0]
        elif spec.many and spec.delimiter is not None:
            values[spec.name] = spec.delimiter.join(str(item) for item in items)
        else:
            values[spec.name] = items if spec.many else items[0]
    return values


def _items(spec: TensorSpec, tensor: InputTensor) -> list[Any]:
    """The tensor's elements as plain Python values, checked against ``spec``."""
    where = f"input '{spec.name}'"
    datatype, accepted = KINDS[spec.kind]
    if tensor.datatype not in accepted:
        also = ", ".join(sorted(accepted - {datatype}))
        raise TensorError(
            f"{where} is {datatype} {spec.shape}, not {tensor.datatype}"
            + (f" (also accepted: {also})" if also else "")
        )
    flat = tensor.data.reshape(-1)
    # The shape the metadata says, as OIP servers check it: [1] (a scalar
    # [] too) for one value, one dimension for a list.
    if not spec.many and (flat.size != 1 or len(tensor.shape) > 1):
        raise TensorError(
            f"{where} takes one value (shape [1]); got shape {list(tensor.shape)}"
        )
    if spec.many and len(tensor.shape) != 1:
        raise TensorError(
            f"{where} is a list (shape [-1]); got shape {list(tensor.shape)}: "
            "send it flat"
        )
    if spec.kind == "file":
        return [bytes(item) for item in flat]
    if spec.kind in ("str", "json"):
        texts = [_text(where, item) for item in flat]
        if spec.kind == "json":
            return [_json(where, text) for text in texts]
        return texts
    items: list[Any] = flat.tolist()
    return items


def _text(where: str, item: Any) -> str:
    try:
        return bytes(item).decode("utf-8")
    except UnicodeDecodeError:
        raise TensorError(f"{where} must be UTF-8 text") from None


def _json(where: str, text: str) -> Any:
    """JSON text under the rules of a JSON body on the DEEPaaS routes
    (:func:`deepaas.api.parsing.parse_json_text`: depth, numbers, no NaN),
    so that nothing a request sends can crash the parser or the pickler."""
    try:
        return parse_json_text(text)
    except DeepaasError as exc:
        raise TensorError(
            f"{where} must be JSON text (e.g. '{{\"a\": 1}}'): {exc.message}"
        ) from None


def _save(name: str, data: bytes, tmp_dir: str, files: list[str]) -> UploadedFile:
    path = os.path.join(tmp_dir, f"upload-{secrets.token_hex(8)}")
    files.append(path)  # before it exists: removed whatever happens
    _write_new(path, data)
    return UploadedFile(
        name=name,
        filename=path,
        content_type="application/octet-stream",
        original_filename=name,
    )


# -- results -------------------------------------------------------------------


def to_outputs(value: Any) -> dict[str, np.ndarray]:
    """A predict result as output tensors: a dict -> one per key, anything
    else -> :data:`OUTPUT`. Scalars get shape [1]; values no tensor holds
    are BYTES [1] of their JSON text."""
    if isinstance(value, dict):
        return {str(key): tensor(item) for key, item in value.items()}
    return {OUTPUT: tensor(value)}


def tensor(value: Any) -> np.ndarray:
    """One output value as an array (see :func:`to_outputs`). A list numpy
    would change (``[2**63 + 1, 1]`` becomes float64, rounded) is sent as
    its JSON text instead, exact."""
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, (dict, type(None))):
        try:
            array, _ = to_array("output", value)
        except TensorError:
            pass
        else:
            exact = not isinstance(value, list) or array.tolist() == value
            if exact and (
                array.dtype != object
                or all(isinstance(item, (str, bytes)) for item in array.reshape(-1))
            ):
                return array.reshape(1) if array.ndim == 0 else array
    text = json.dumps(value, allow_nan=True, default=str)
    array = np.empty(1, dtype=object)
    array[0] = text.encode()
    return array
