"""Swagger 2.0 and OpenAPI 3.1 documents from one list of route descriptions.

``/swagger.json`` (Swagger 2.0) keeps what Swagger UI and the Gradio UI read
from DEEPaaS 2.x: trailing-slash paths, per-argument ``in``/``type``/
``enum``/``default``/``format``, ``produces`` and
``definitions.ModelPredictionResponse``. ``/openapi.json`` describes the same
routes in OpenAPI 3.1 for modern tools. Field conversion is apispec's
MarshmallowPlugin, so both documents read the plugin's fields the same way.

Both are written for generated clients too (openapi-generator,
openapi-python-client, bravado): every answer has a schema
(:mod:`deepaas.api.response_schemas`), binary and text answers are strings,
and a body with form fields is described as the form alone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from collections.abc import Iterable
from typing import Any

import marshmallow
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from deepaas import __version__
from deepaas.api import openapi_security as security
from deepaas.api import response_schemas as answers
from deepaas.api.openapi_args import (
    is_file_list,
    json_left_out,
    openapi3_body,
    openapi3_params,
    path_param,
    swagger2_params,
)
from deepaas.api.response_schemas import FAILURE, PREDICTION, ref
from deepaas.model.v2.fields import ArgSpec

TITLE = "DEEP as a Service API endpoint"
DESCRIPTION = (
    "The DEEPaaS v2 API: model metadata, predictions and trainings of the "
    "models served by this deepaas instance."
)
TAGS = [
    {"name": "versions", "description": "API versions"},
    {"name": "debug", "description": "Captured log and worker output"},
    {"name": "models", "description": "Models: metadata, predict, train"},
    {"name": "health", "description": "Liveness and readiness probes"},
    {"name": "system", "description": "Devices, workers and queues"},
]
#: Tags of /openapi.json only (/swagger.json, which the Gradio UI reads,
#: keeps the DEEPaaS routes alone).
OPENAPI_TAGS = [
    {
        "name": "Open Inference Protocol",
        "description": (
            "The KServe Open Inference Protocol v2 REST routes (binary "
            "tensor data extension included): what Triton's and KServe's "
            "clients call"
        ),
    },
]


@dataclasses.dataclass
class Operation:
    """One documented route."""

    method: str
    path: str
    summary: str
    tag: str
    responses: dict[int, str]
    args: dict[str, ArgSpec] = dataclasses.field(default_factory=dict)
    produces: list[str] | None = None
    response_schema: type[marshmallow.Schema] | None = None
    response_name: str | None = None  # definition name for response_schema
    prediction: bool = False  # 200 is a prediction (wrapped unless a schema)
    path_params: dict[str, str] = dataclasses.field(default_factory=dict)
    operation_id: str | None = None
    # status -> a schema of deepaas.api.response_schemas (default: Failure
    # for errors; response_name, or Prediction, for a prediction's 200)
    schemas: dict[int, str] = dataclasses.field(default_factory=dict)
    # An OpenAPI 3.1 operation object written as is, in /openapi.json only
    # (the fields above but method and path are then not read).
    openapi_document: dict[str, Any] | None = None


VERSIONS = ("2.0", "3.1.0")  # /swagger.json, /openapi.json
#: (METHOD, route path) -> the scope the route needs, None: open
Scopes = dict[tuple[str, str], str | None]


class SpecBuilder:
    """Collects operations and writes both documents (cached once built)."""

    def __init__(self, base_path: str) -> None:
        self.base_path = base_path
        self.operations: list[Operation] = []
        self._cache: dict[str, dict[str, Any]] = {}
        # (METHOD, path) -> the scope a route needs, once tokens are on
        self.scopes: Scopes | None = None

    def secure(self, scopes: Scopes) -> None:
        """Declare the bearer scheme, and on each operation the scope its
        route needs (``scopes``, from :func:`deepaas.api.auth.protect`)."""
        self.scopes = dict(scopes)
        self._cache.clear()

    def add(self, operation: Operation) -> None:
        self.operations.append(operation)
        self._cache.clear()

    def changed(self) -> None:
        """An operation was replaced (a model reloaded): build anew."""
        self._cache.clear()

    def build(self, operations: list[Operation]) -> dict[str, dict[str, Any]]:
        """Both documents over ``operations`` (raises what building raised)."""
        return {
            version: _build(operations, version, self.scopes) for version in VERSIONS
        }

    def use(
        self, operations: list[Operation], documents: dict[str, dict[str, Any]]
    ) -> None:
        """Serve ``operations`` and the :meth:`build` of them from now on."""
        self.operations[:] = operations
        self._cache = dict(documents)

    def swagger(self) -> dict[str, Any]:
        if "2.0" not in self._cache:
            self._cache["2.0"] = _build(self.operations, "2.0", self.scopes)
        return self._cache["2.0"]

    def openapi(self) -> dict[str, Any]:
        if "3.1.0" not in self._cache:
            self._cache["3.1.0"] = _build(self.operations, "3.1.0", self.scopes)
        return self._cache["3.1.0"]


def _new_spec(version: str) -> tuple[APISpec, MarshmallowPlugin]:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title=TITLE,
        version=__version__,
        openapi_version=version,
        plugins=[plugin],
        info={"description": DESCRIPTION},
    )
    for tag in TAGS if version.startswith("2") else TAGS + OPENAPI_TAGS:
        spec.tag(tag)
    if version.startswith("2"):
        assert plugin.converter is not None
        plugin.converter.add_attribute_function(_as_deepaas_2)
    return spec, plugin


def _as_deepaas_2(
    converter: Any, field: marshmallow.fields.Field, ret: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    """Swagger 2.0 fields as DEEPaaS 2.6.0 (apispec 3) wrote them.

    ``format`` ``int32``/``float`` on integers and floats, and a ``Dict``
    with no value field as ``{"type": "object"}``: openapi-generator reads
    2.0's ``"additionalProperties": {}`` as "every value is an object" and
    then rejects any answer with a string in such a dict.
    """
    if "format" not in ret:
        if isinstance(field, marshmallow.fields.Integer):
            ret["format"] = "int32"
        elif isinstance(field, marshmallow.fields.Float):
            ret["format"] = "float"
    if ret.get("additionalProperties") == {}:
        del ret["additionalProperties"]
    return {}


def _build(
    operations: Iterable[Operation], version: str, scopes: Scopes | None = None
) -> dict[str, Any]:
    """One document; with ``scopes``, the bearer scheme and each
    operation's scope (:mod:`deepaas.api.openapi_security`)."""
    swagger2 = version.startswith("2")
    spec, plugin = _new_spec(version)
    for own, schema in answers.schemas(swagger2).items():
        spec.components.schema(own, schema)
    if scopes is not None:
        security.add_scheme(spec, swagger2)
    paths: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for op in operations:
            if op.openapi_document is not None:
                if swagger2:
                    continue
                doc = copy.deepcopy(op.openapi_document)
            else:
                name = _register_response_schema(spec, op)
                doc = _operation(op, plugin, swagger2)
                doc["responses"] = _responses(op, name, swagger2)
            scope = _scope_of(op, scopes)
            if scope is not None:
                security.secure(doc, scope, swagger2)
            paths.setdefault(op.path, {})[op.method] = doc
        for path, ops in paths.items():
            spec.path(path=path, operations=ops)
        return _drop_unused(spec.to_dict(), swagger2)


def _scope_of(op: Operation, scopes: Scopes | None) -> str | None:
    """The scope the route of ``op`` needs; None when open, or tokens off."""
    if scopes is None:
        return None
    method = op.method.upper()
    for key in ((method, op.path), ("*", op.path)):
        if key in scopes:
            return scopes[key]
    return None


def _drop_unused(doc: dict[str, Any], swagger2: bool) -> dict[str, Any]:
    """Leave out deepaas's own schemas that nothing refers to (Prediction
    when every model has a schema, Training when training is off...)."""
    holder = doc["definitions"] if swagger2 else doc["components"]["schemas"]
    own = set(answers.schemas(swagger2))
    while True:
        text = json.dumps(doc)
        unused = [
            name
            for name in holder
            if name in own and f'{ref(name, swagger2)["$ref"]}"' not in text
        ]
        if not unused:
            return doc
        for name in unused:
            del holder[name]


def _register_response_schema(spec: APISpec, op: Operation) -> str | None:
    """The definition name of ``op.response_schema``, registered once; a
    name deepaas's own schemas (or another model's) hold gets a prefix."""
    name = op.response_name
    if op.response_schema is None or not name:
        return name
    registered = spec.components.schemas
    prefix = op.operation_id or "model"
    unique, n = name, 1
    while unique in registered:
        unique = f"{prefix}_{name}" if n == 1 else f"{prefix}_{name}_{n}"
        n += 1
    spec.components.schema(unique, schema=op.response_schema)
    return unique


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _responses(op: Operation, name: str | None, swagger2: bool) -> dict[str, Any]:
    """Each status with its schema; a 200 described per media type in 3.1
    (binary answers as binary strings, text as strings, so that generated
    clients do not decode them as JSON); in 2.0, whose 200 has one schema,
    the JSON one when the route can answer JSON, else a string or a file."""
    types = [t for t in op.produces or [] if t != "*/*"] or ["application/json"]
    responses: dict[str, Any] = {}
    for status, description in op.responses.items():
        response: dict[str, Any] = {"description": description}
        responses[str(status)] = response
        if status >= 400:
            error = ref(op.schemas.get(status, FAILURE), swagger2)
            if swagger2:
                response["schema"] = error
            else:
                response["content"] = {"application/json": {"schema": error}}
            continue
        if status != 200:
            continue
        named = op.schemas.get(200) or name or (PREDICTION if op.prediction else None)
        json_schema = ref(named, swagger2) if named else None
        if swagger2:
            if any(_is_json(t) for t in types):
                schema = json_schema
            elif all(t.startswith("text/") for t in types):
                schema = {"type": "string"}
            else:
                schema = {"type": "file"}
            if schema is not None:
                response["schema"] = schema
            continue
        content = {}
        for media_type in types:
            if _is_json(media_type):
                if json_schema is not None:
                    content[media_type] = {"schema": json_schema}
            elif media_type.startswith("text/"):
                content[media_type] = {"schema": {"type": "string"}}
            else:
                content[media_type] = {"schema": {"type": "string", "format": "binary"}}
        if content:
            response["content"] = content
    return responses


def _operation(
    op: Operation, plugin: MarshmallowPlugin, swagger2: bool
) -> dict[str, Any]:
    doc: dict[str, Any] = {"tags": [op.tag], "summary": op.summary}
    if op.operation_id:
        doc["operationId"] = op.operation_id
    produces = op.produces or ["application/json"]
    doc["responses"] = {}  # by _responses
    left_out = json_left_out(op.args.values()) if swagger2 else []
    if left_out:
        doc["description"] = (
            f"Arguments of the JSON body ({', '.join(left_out)}) are not "
            "described here: Swagger 2.0 cannot describe them beside form "
            "fields. Send each as a form field holding its value as JSON "
            "text, or send them in a request whose body is a JSON object "
            "(without files)."
        )
    params = [path_param(name, text, swagger2) for name, text in op.path_params.items()]
    if swagger2:
        doc["produces"] = produces
        params += swagger2_params(op.args.values(), plugin)
        if any(p["in"] == "formData" for p in params):
            has_file = any(p.get("type") == "file" or is_file_list(p) for p in params)
            doc["consumes"] = (
                ["multipart/form-data"]
                if has_file
                else ["multipart/form-data", "application/x-www-form-urlencoded"]
            )
    else:
        params += openapi3_params(op.args.values(), plugin)
        body = openapi3_body(op.args.values(), plugin)
        if body:
            doc["requestBody"] = body
    if params:
        doc["parameters"] = params
    return doc
