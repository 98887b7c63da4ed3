"""Schemas of the answers deepaas writes itself, for both spec documents.

DEEPaaS 2.6.0 documented the listing routes with ``Versions``, ``Version``,
``Location``, ``ModelMeta``, ``Training`` and ``TrainingList``, some of them
not in the shape it sent (``/v2/models/`` as one model, the trainings as an
object, links without their ``type`` required). The names are kept; each
schema here is what the route answers (contract sections 2 to 4), so that a
client generated from either document decodes the answers into typed
objects. Values a plugin chooses (its metadata, a training's arguments and
output) are left untyped: a typed client must not reject a plugin whose
``author`` is a list.

:func:`schemas` writes them for one document: Swagger 2.0 has no ``null``
type (``x-nullable`` instead), 3.1 has no ``x-nullable``; and a value of
any JSON type (no ``type``), which 3.1 tools read as such, is read as an
object by openapi-generator's 2.0 converter, whose clients then reject a
string there: in 2.0 such a property is named in the schema's description
and left to ``additionalProperties``.
"""

from __future__ import annotations

from typing import Any

from deepaas.api import oip_schemas
from deepaas.training.store import STATUSES

FAILURE = "Failure"
VALIDATION_ERRORS = "ValidationErrors"
PREDICTION = "Prediction"
LOCATION = "Location"
VERSION = "Version"
VERSIONS = "Versions"
MODEL_META = "ModelMeta"
MODELS = "Models"
TRAINING = "Training"
TRAINING_RESULT = "TrainingResult"
TRAINING_LIST = "TrainingList"
TRAINING_METRICS = "TrainingMetrics"


def ref(name: str, swagger2: bool) -> dict[str, str]:
    where = "#/definitions/" if swagger2 else "#/components/schemas/"
    return {"$ref": where + name}


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _nullable(schema: dict[str, Any], swagger2: bool) -> dict[str, Any]:
    if swagger2:
        return {**schema, "x-nullable": True}
    return {**schema, "type": [schema["type"], "null"]}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _any_value_in_2_0(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` for Swagger 2.0: its untyped properties left to
    ``additionalProperties`` (see the module's docstring)."""
    properties = schema.get("properties", {})
    untyped = [k for k, v in properties.items() if "type" not in v and "$ref" not in v]
    if not untyped:
        return schema
    schema = {**schema, "additionalProperties": True}
    schema["properties"] = {k: v for k, v in properties.items() if k not in untyped}
    if "required" in schema:
        schema["required"] = [k for k in schema["required"] if k not in untyped]
    listed = "; ".join(f"{k} ({properties[k]['description']})" for k in untyped)
    schema["description"] = (
        f"{schema.get('description', '')}. Of any JSON type: {listed}".lstrip(". ")
    )
    return schema


def schemas(swagger2: bool) -> dict[str, dict[str, Any]]:
    """Every schema of this module, by name, for one document (and the
    OIP's, :mod:`deepaas.api.oip_schemas`, in OpenAPI 3.1)."""
    written = _schemas(swagger2)
    if swagger2:
        written = {name: _any_value_in_2_0(s) for name, s in written.items()}
    else:
        written.update(oip_schemas.schemas())  # OIP: OpenAPI 3.1 only
    return written


def _schemas(swagger2: bool) -> dict[str, dict[str, Any]]:
    def to(name: str) -> dict[str, str]:
        return ref(name, swagger2)

    return {
        FAILURE: {
            "type": "object",
            "description": "Every error but a 422 of invalid arguments",
            "properties": {"message": _string("What went wrong")},
            "required": ["message"],
        },
        VALIDATION_ERRORS: {
            "type": "object",
            "description": (
                "Invalid arguments: marshmallow's messages by argument name, "
                "each a list of strings (for the items of a list or dict "
                "argument, an object of such lists by item); exactly what "
                "DEEPaaS 2.x answered"
            ),
            "example": {"data": ["Missing data for required field."]},
        },
        PREDICTION: {
            "type": "object",
            "description": "A prediction of a model without a response schema",
            "properties": {
                "status": _string('"OK"'),
                "predictions": {"description": "The model's output"},
            },
            "required": ["status", "predictions"],
        },
        LOCATION: {
            "type": "object",
            "properties": {
                "rel": _string("How the target relates: self, help, describedby"),
                "href": _string("The target's path on this server"),
                "type": _string("The target's media type"),
            },
            "required": ["rel", "href"],
        },
        VERSION: {
            "type": "object",
            "properties": {
                "version": _string("stable"),
                "id": _string("v2"),
                "links": _array(to(LOCATION)),
            },
            "required": ["version", "id", "links"],
        },
        VERSIONS: {
            "type": "object",
            "properties": {
                "versions": _array(to(VERSION)),
                "links": _array(to(LOCATION)),
            },
            "required": ["versions", "links"],
        },
        MODEL_META: {
            "type": "object",
            "description": (
                "The model's id, name and link, updated with what its "
                "get_metadata() returns (its keys win; the others pass through)"
            ),
            "properties": {
                "id": _string("The model's id (its name unless the model says)"),
                "name": _string("The model's name, as in its URLs"),
                "links": _array(to(LOCATION)),
                "description": {"description": "What the model does"},
                "author": {"description": "Who made it: a string, or a list"},
                "license": {"description": "Its license"},
                "version": {"description": "Its version"},
                "url": {"description": "Where to read more"},
            },
            "required": ["id", "name", "links"],
            "additionalProperties": True,
        },
        MODELS: {
            "type": "object",
            "properties": {"models": _array(to(MODEL_META))},
            "required": ["models"],
        },
        TRAINING_RESULT: {
            "type": "object",
            "properties": {
                "output": {"description": "What train() returned"},
                "finish_date": _string("YYYY-MM-DD HH:MM:SS.ffffff, server time"),
                "duration": _string("H:MM:SS.ffffff"),
            },
            "required": ["finish_date", "duration"],
        },
        TRAINING: {
            "type": "object",
            "description": "A training's record (it may carry more keys)",
            "properties": {
                "uuid": _string("The training's id: 32 hex digits"),
                "date": _string(
                    "When it was submitted: YYYY-MM-DD HH:MM:SS.ffffff, server time"
                ),
                "args": {
                    "type": "object",
                    "description": (
                        "Its arguments; a file as {name, content_type, "
                        "original_filename}"
                    ),
                },
                "status": {"type": "string", "enum": list(STATUSES)},
                "message": _string("Why it ended in error"),
                "result": to(TRAINING_RESULT),
                "model": _string("The model's name"),
                "start_date": _nullable(
                    _string("When it started; null while queued"), swagger2
                ),
                "start_time": _nullable(
                    {
                        **_string(
                            "start_date's instant in UTC, ISO 8601 "
                            "(2024-01-01T11:00:00.124Z): for clients in another "
                            "time zone; null while queued"
                        ),
                        "format": "date-time",
                    },
                    swagger2,
                ),
                "gpus": {"type": "integer", "description": "GPUs it holds"},
                "devices": _array({"type": "string"}),
                "progress": {
                    "type": "object",
                    "description": "What train() last passed to report()",
                },
                "eta_seconds": _nullable(
                    {
                        "type": "number",
                        "description": "Seconds until it should end, from the "
                        "rate of its reported step/total (or epoch/epochs); "
                        "null when unknown or finished",
                    },
                    swagger2,
                ),
            },
            "required": ["uuid", "date", "args", "status"],
            "additionalProperties": True,
        },
        TRAINING_LIST: _array(to(TRAINING)),
        TRAINING_METRICS: {
            "type": "object",
            "description": "What a training reported, as curves (docs/training.md)",
            "properties": {
                "uuid": _string("The training's id"),
                "status": {"type": "string", "enum": list(STATUSES)},
                "x": {"type": "string", "enum": ["step", "time"]},
                "series": {
                    "type": "object",
                    "description": "Per key, [x, value] points; null: a gap (NaN)",
                    "additionalProperties": _array(
                        _array(_nullable({"type": "number"}, swagger2))
                    ),
                },
                "text": {
                    "type": "object",
                    "description": "Per key, [x, value] of values not numbers",
                    "additionalProperties": True,
                },
                "cursor": {
                    "type": "integer",
                    "description": "The last report in the answer: give it as since",
                },
                "reports": {"type": "integer", "description": "Reports covered"},
                "downsampled": {
                    "type": "integer",
                    "description": "1: every point; else reports a point stands for",
                },
                "eta_seconds": _nullable({"type": "number"}, swagger2),
            },
            "required": ["uuid", "status", "x", "series", "text", "cursor"],
            "additionalProperties": True,
        },
    }
