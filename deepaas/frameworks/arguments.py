"""A repository model on the DEEPaaS predict route: its arguments and answer.

Each input of the model is one argument, a JSON list (nested as the input's
axes, or flat when every axis is fixed) that :class:`TensorArg` turns into
a numpy array of the input's datatype and shape while the request's
arguments are loaded, in the API process: a wrong value is a 422 naming the
argument and saying what it takes, before any worker is bothered. The shape
is the signature's (:mod:`deepaas.model.signature`): one item, without the
batch axis, when the model has one.

The answer is ``{"status": "OK", "predictions": {output: list, ...}}``,
plus ``labels`` (the top-k ``{"label", "probability"}``) when the model has
a labels file; :func:`response_fields` describes it for both API documents.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import marshmallow
import numpy as np
from marshmallow import fields

from deepaas.exceptions import TensorError
from deepaas.model.signature import fits
from deepaas.oip.datatypes import from_json, to_json

#: The key of the top-k labels in ``predictions``.
LABELS = "labels"

_JSON_TYPES = {"BOOL": "boolean", "BYTES": "string"}


def json_type(datatype: str) -> str:
    """The JSON Schema type of one element of ``datatype``."""
    if datatype in _JSON_TYPES:
        return _JSON_TYPES[datatype]
    return "number" if datatype.startswith("FP") else "integer"


def tensor_schema(datatype: str, shape: Sequence[int]) -> dict[str, Any]:
    """JSON Schema of a nested list of ``shape`` (-1: any length)."""
    schema: dict[str, Any] = {"type": json_type(datatype)}
    for size in reversed(shape):
        schema = {"type": "array", "items": schema}
        if size != -1:
            schema["minItems"] = schema["maxItems"] = size
    return schema


def describe(datatype: str, shape: Sequence[int]) -> str:
    """``FP32 [-1, 4]: a list of lists of 4 numbers``, for documents and errors."""
    kind = json_type(datatype)
    element = {"boolean": "booleans", "string": "strings", "integer": "integers"}
    plural = element.get(kind, "numbers")
    if not shape:
        one = {"booleans": "true or false", "strings": "a string"}
        return f"{datatype} []: " + one.get(
            plural, f"a{'n' if plural[0] == 'i' else ''} {plural[:-1]}"
        )
    counts = [f"{size} " if size != -1 else "" for size in shape]
    return f"{datatype} {list(shape)}: a list of " + "lists of ".join(counts) + plural


class TensorArg(fields.Raw):
    """A JSON list as an array of ``datatype`` and ``shape`` (-1: any size).

    Nested as the shape's axes; or flat (``[1, 2, 3, 4]`` for ``[2, 2]``)
    when every axis is fixed; a number for a shape without axes. Sent in a
    JSON body, or as a multipart form part of JSON text (beside an image).
    """

    def __init__(self, name: str, datatype: str, shape: Sequence[int]) -> None:
        self.tensor_name = name
        self.datatype = datatype
        self.shape = tuple(shape)
        text = describe(datatype, shape)
        if all(size != -1 for size in shape) and len(shape) > 1:
            text += f" (or the {math.prod(shape)} values flat)"
        super().__init__(
            required=True,
            metadata={
                "location": "json",
                "description": f"Input '{name}', {text}.",
                **tensor_schema(datatype, shape),
            },
        )

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        try:
            return to_input(self.tensor_name, self.datatype, self.shape, value)
        except TensorError as exc:
            raise marshmallow.ValidationError(exc.message) from None


def to_input(
    name: str, datatype: str, shape: Sequence[int], value: object
) -> np.ndarray:
    """``value`` (JSON) as the array input ``name`` takes; a
    :class:`TensorError` naming the input and what it takes."""
    where = f"input '{name}'"
    expected = describe(datatype, shape)
    fixed = all(size != -1 for size in shape)
    if not isinstance(value, list):
        if (
            math.prod(shape) == 1
            and fixed
            and not isinstance(value, (dict, type(None)))
        ):
            return from_json(where, datatype, [1], [value]).reshape(shape)
        raise TensorError(f"{where} takes {expected}; got {_kind(value)}")
    given = _nesting(value)
    if fixed and len(given) == 1 and len(shape) > 1:
        given = list(shape)  # flat values; from_json checks their number
    if not fits(given, shape) or (not fixed and 0 in given):
        raise TensorError(
            f"{where} takes {expected}; got a list of shape {given}"
            + (" (an empty axis)" if 0 in given else "")
        )
    return from_json(where, datatype, given, value)


def _nesting(value: list[Any]) -> list[int]:
    """The shape the first elements of nested lists say (checked in full by
    ``from_json``)."""
    shape = []
    node: Any = value
    while isinstance(node, list):
        shape.append(len(node))
        if not node:
            break
        node = node[0]
    return shape


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    return f"{type(value).__name__} {str(value)[:40]!r}"


# -- the answer -----------------------------------------------------------------


def response_fields(
    outputs: Sequence[tuple[str, str, Sequence[int]]], labelled: bool
) -> dict[str, fields.Field]:
    """The predict answer's schema: ``outputs`` are (name, datatype, shape
    of one answer). Raw fields: documented, not checked element by element
    (the worker builds the answer from arrays of the right kind)."""
    properties = {
        name: {
            **tensor_schema(datatype, shape),
            "description": describe(datatype, shape),
        }
        for name, datatype, shape in outputs
    }
    if labelled:
        properties[LABELS] = {
            "type": "array",
            "description": "The most likely labels, most likely first.",
            "items": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "probability": {"type": "number"},
                },
            },
        }
    return {
        "status": fields.Str(required=True, metadata={"description": "OK"}),
        "predictions": fields.Raw(
            required=True,
            metadata={
                "type": "object",
                "description": "The model's outputs, by name.",
                "properties": properties,
            },
        ),
    }


def answer(
    outputs: dict[str, tuple[str, np.ndarray]],
    labels: Sequence[str] | None,
    top_k: int,
) -> dict[str, Any]:
    """The predict answer for one request: ``outputs`` by name, each
    (datatype, array of one answer); top-k labels of the first one."""
    predictions: dict[str, Any] = {}
    for name, (datatype, array) in outputs.items():
        if datatype == "BYTES":  # text, as JSON holds no bytes
            flat = to_json(f"output '{name}'", datatype, array)
            predictions[name] = (
                np.array(flat, dtype=object).reshape(array.shape).tolist()
            )
        else:
            predictions[name] = array.tolist()
    if labels is not None:
        datatype, scores = next(iter(outputs.values()))
        predictions[LABELS] = top_labels(scores, labels, top_k)
    return {"status": "OK", "predictions": predictions}


def top_labels(
    scores: np.ndarray, labels: Sequence[str], top_k: int
) -> list[dict[str, Any]]:
    """The ``top_k`` labels of ``scores`` (one per label; leading axes of
    size 1 are ignored) with their probabilities: the scores themselves when
    they are a distribution (each in [0, 1], summing to 1), else their
    softmax (the scores are logits)."""
    row = np.asarray(scores, dtype=np.float64).reshape(-1)
    if row.size != len(labels):
        raise ValueError(
            f"the labelled output has {row.size} values for {len(labels)} labels; "
            "the labels file needs one line per value"
        )
    if np.all((row >= 0) & (row <= 1)) and abs(row.sum() - 1.0) < 1e-3:
        probabilities = row
    else:
        shifted = np.exp(row - np.max(row))
        probabilities = shifted / shifted.sum()
    order = np.argsort(-probabilities, kind="stable")[: max(1, top_k)]
    return [
        {"label": labels[i], "probability": float(probabilities[i])}
        for i in order.tolist()
    ]
