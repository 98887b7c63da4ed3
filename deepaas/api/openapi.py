"""Swagger 2.0 and OpenAPI 3.1 documents from one list of route descriptions.

``/swagger.json`` (Swagger 2.0) keeps what Swagger UI and the Gradio UI read
from DEEPaaS 2.x: trailing-slash paths, per-argument ``in``/``type``/
``enum``/``default``/``format``, ``produces`` and
``definitions.ModelPredictionResponse``. ``/openapi.json`` describes the same
routes in OpenAPI 3.1 for modern tools. Field conversion is apispec's
MarshmallowPlugin, so both documents read the plugin's fields the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import marshmallow
from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from deepaas import __version__
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
FAILURE = "Failure"


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


class SpecBuilder:
    """Collects operations and writes both documents (cached once built)."""

    def __init__(self, base_path: str) -> None:
        self.base_path = base_path
        self.operations: list[Operation] = []
        self._cache: dict[str, dict[str, Any]] = {}

    def add(self, operation: Operation) -> None:
        self.operations.append(operation)
        self._cache.clear()

    def swagger(self) -> dict[str, Any]:
        if "2.0" not in self._cache:
            self._cache["2.0"] = _build(self.operations, "2.0")
        return self._cache["2.0"]

    def openapi(self) -> dict[str, Any]:
        if "3.1.0" not in self._cache:
            self._cache["3.1.0"] = _build(self.operations, "3.1.0")
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
    for tag in TAGS:
        spec.tag(tag)
    return spec, plugin


def _build(operations: Iterable[Operation], version: str) -> dict[str, Any]:
    swagger2 = version.startswith("2")
    spec, plugin = _new_spec(version)
    failure = {"type": "object", "properties": {"message": {"type": "string"}}}
    spec.components.schema(FAILURE, failure)
    spec.components.schema(
        "Prediction",
        {
            "type": "object",
            "properties": {
                "status": {"type": "string"},
                "predictions": {"description": "The model's output"},
            },
        },
    )
    paths: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for op in operations:
            name = op.response_name
            if op.response_schema and name and name not in spec.components.schemas:
                spec.components.schema(name, schema=op.response_schema)
            paths.setdefault(op.path, {})[op.method] = _operation(op, plugin, swagger2)
        for path, ops in paths.items():
            spec.path(path=path, operations=ops)
        return spec.to_dict()


def _ref(name: str, swagger2: bool) -> dict[str, str]:
    return {
        "$ref": f"#/definitions/{name}" if swagger2 else f"#/components/schemas/{name}"
    }


def _operation(
    op: Operation, plugin: MarshmallowPlugin, swagger2: bool
) -> dict[str, Any]:
    doc: dict[str, Any] = {"tags": [op.tag], "summary": op.summary}
    if op.operation_id:
        doc["operationId"] = op.operation_id
    produces = op.produces or ["application/json"]
    responses: dict[str, Any] = {}
    for status, description in op.responses.items():
        response: dict[str, Any] = {"description": description}
        if status >= 400:
            schema: dict[str, Any] | None = _ref(FAILURE, swagger2)
        elif status == 200 and op.response_name:
            schema = _ref(op.response_name, swagger2)
        elif status == 200 and op.prediction:
            schema = _ref("Prediction", swagger2)
        else:
            schema = None
        if schema is not None:
            if swagger2:
                response["schema"] = schema
            else:
                types = ["application/json"] if status >= 400 else produces
                response["content"] = {
                    t: {"schema": schema if "json" in t else {}} for t in types
                }
        responses[str(status)] = response
    doc["responses"] = responses
    params = [
        _path_param(name, text, swagger2) for name, text in op.path_params.items()
    ]
    if swagger2:
        doc["produces"] = produces
        params += _swagger2_params(op.args.values(), plugin)
        if any(p["in"] == "formData" for p in params):
            has_file = any(p.get("type") == "file" or _is_file_list(p) for p in params)
            doc["consumes"] = (
                ["multipart/form-data"]
                if has_file
                else ["multipart/form-data", "application/x-www-form-urlencoded"]
            )
    else:
        params += _openapi3_params(op.args.values(), plugin)
        body = _openapi3_body(op.args.values(), plugin)
        if body:
            doc["requestBody"] = body
    if params:
        doc["parameters"] = params
    return doc


def _path_param(name: str, text: str, swagger2: bool) -> dict[str, Any]:
    param: dict[str, Any] = {
        "name": name,
        "in": "path",
        "required": True,
        "description": text,
    }
    if swagger2:
        param["type"] = "string"
    else:
        param["schema"] = {"type": "string"}
    return param


def _property(spec: ArgSpec, plugin: MarshmallowPlugin) -> dict[str, Any]:
    assert plugin.converter is not None
    prop = copy.deepcopy(plugin.converter.field2property(spec.field))
    prop.pop("location", None)
    choices = spec.choices
    if choices and "enum" not in prop:
        prop["enum"] = choices
    if prop.get("default", 0) is None:
        del prop["default"]  # "missing=None" means "optional", not a null default
    return prop


def _file_list(prop: dict[str, Any]) -> dict[str, Any]:
    """A list of files, in both documents: an array of binary strings.

    Swagger 2.0 allows no ``file`` items (DEEPaaS 2.x wrote ``"type":
    "file"`` with ``"items": {"type": "file"}``, which is invalid and showed
    one file input); Swagger UI shows one file input per item for this.
    """
    kept = {
        k: v for k, v in prop.items() if k in ("description", "minItems", "maxItems")
    }
    return {"type": "array", "items": {"type": "string", "format": "binary"}, **kept}


def _is_file_list(param: dict[str, Any]) -> bool:
    items = param.get("items") or {}
    return param.get("type") == "array" and items.get("format") == "binary"


def _swagger2_params(
    specs: Iterable[ArgSpec], plugin: MarshmallowPlugin
) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    body_props: dict[str, Any] = {}
    for spec in specs:
        prop = _property(spec, plugin)
        if spec.location == "json":
            body_props[spec.key] = prop
            continue
        where = {"headers": "header", "form": "formData"}.get(
            spec.location or "", "query"
        )
        if spec.is_file and spec.is_list:
            prop = _file_list(prop)
        elif spec.is_file:
            prop = {k: v for k, v in prop.items() if k in ("description",)}
            prop["type"] = "file"
        elif prop.get("type") not in (
            "string",
            "integer",
            "number",
            "boolean",
            "array",
        ):
            prop["type"] = "string"  # dicts and raw values travel as text here
            prop.pop("additionalProperties", None)
        if prop.get("type") == "array":
            prop.setdefault("items", {"type": "string"})
            # repeated keys, or one "a,b" value (webargs' DelimitedList)
            prop["collectionFormat"] = "multi" if spec.is_list else "csv"
        params.append(
            {"name": spec.key, "in": where, "required": spec.required, **prop}
        )
    form = any(p["in"] == "formData" for p in params)
    if body_props and not form:  # Swagger 2.0 allows a body or form fields, not both
        params.append(
            {
                "name": "body",
                "in": "body",
                "required": False,
                "schema": {"type": "object", "properties": body_props},
            }
        )
    return params


def _openapi3_params(
    specs: Iterable[ArgSpec], plugin: MarshmallowPlugin
) -> list[dict[str, Any]]:
    params = []
    for spec in specs:
        if spec.location not in (None, "query", "headers"):
            continue
        prop = _property(spec, plugin)
        prop.pop("type", None) if prop.get("type") == "file" else None
        description = prop.pop("description", None)
        param: dict[str, Any] = {
            "name": spec.key,
            "in": "header" if spec.location == "headers" else "query",
            "required": spec.required,
            "schema": prop,
        }
        if description:
            param["description"] = description
        if prop.get("type") == "array":
            param["explode"] = spec.is_list
        if prop.get("type") == "object":
            param["content"] = {"application/json": {"schema": param.pop("schema")}}
        params.append(param)
    return params


def _openapi3_body(
    specs: Iterable[ArgSpec], plugin: MarshmallowPlugin
) -> dict[str, Any] | None:
    form: dict[str, Any] = {}
    form_required: list[str] = []
    body: dict[str, Any] = {}
    for spec in specs:
        if spec.location == "form":
            prop = _property(spec, plugin)
            if spec.is_file and spec.is_list:
                prop = _file_list(prop)
            elif spec.is_file:
                prop = {
                    "type": "string",
                    "format": "binary",
                    **(
                        {"description": prop["description"]}
                        if "description" in prop
                        else {}
                    ),
                }
            form[spec.key] = prop
            if spec.required:
                form_required.append(spec.key)
        elif spec.location == "json":
            body[spec.key] = _property(spec, plugin)
    content: dict[str, Any] = {}
    if form:
        schema: dict[str, Any] = {"type": "object", "properties": form}
        if form_required:
            schema["required"] = form_required
        content["multipart/form-data"] = {"schema": schema}
    if body:
        content["application/json"] = {"schema": {"type": "object", "properties": body}}
    return {"content": content} if content else None


# -- Swagger UI from local assets ---------------------------------------------

try:
    from swagger_ui_bundle import swagger_ui_path as _bundle_path

    SWAGGER_UI_DIR: Path | None = Path(str(_bundle_path))
except ImportError:  # pragma: no cover - the dependency is declared
    SWAGGER_UI_DIR = None

UI_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>{title}</title>
  <link rel="stylesheet" type="text/css" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="{assets}/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script>
    // A list of files is an array of binary strings in Swagger 2.0 (which
    // has no array of files): Swagger UI shows a file input per item, then
    // refuses the files as "not a string". Let it send them.
    function FileArrays() {{
      function files(value) {{
        var items = value && value.toArray ? value.toArray() : value;
        return Array.isArray(items) && items.length > 0 &&
          items.every(function (item) {{ return item instanceof File; }});
      }}
      function validateParams(validate, system) {{
        return function (pathMethod, isOAS3) {{
          var result = validate(pathMethod, isOAS3);
          var params = system.getState().getIn(
            ["spec", "meta", "paths"].concat(pathMethod, ["parameters"]));
          if (params && params.every(function (meta) {{
            var errors = meta.get("errors");
            return !errors || !errors.size || files(meta.get("value"));
          }})) {{
            system.specActions.clearValidateParams(pathMethod);
          }}
          return result;
        }};
      }}
      var actions = {{validateParams: validateParams}};
      return {{statePlugins: {{spec: {{wrapActions: actions}}}}}};
    }}
    window.onload = function () {{
      window.ui = SwaggerUIBundle({{
        url: "{spec_url}",
        dom_id: "#swagger-ui",
        deepLinking: true,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        plugins: [FileArrays],
        layout: "StandaloneLayout"
      }});
    }};
  </script>
</body>
</html>
"""


def _docs(handler: Any) -> Any:
    handler.metric_labels = ("", "docs")  # see deepaas.api.metrics.label
    return handler


def add_docs_routes(app: web.Application, builder: SpecBuilder, docs: bool) -> None:
    """``/swagger.json`` and ``/openapi.json`` always; the UI when enabled."""
    bp = builder.base_path

    async def swagger_json(request: web.Request) -> web.Response:
        return web.json_response(builder.swagger())

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(builder.openapi())

    app.router.add_get(f"{bp}/swagger.json", _docs(swagger_json), allow_head=False)
    app.router.add_get(f"{bp}/openapi.json", _docs(openapi_json), allow_head=False)
    if not docs:
        return

    page = UI_PAGE.format(
        title=TITLE, assets=f"{bp}/swagger-ui", spec_url=f"{bp}/swagger.json"
    )

    async def ui_page(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def ui_redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{bp}/api")

    app.router.add_get(f"{bp}/api", _docs(ui_page), allow_head=False)
    app.router.add_get(f"{bp}/ui", _docs(ui_redirect), allow_head=False)
    if SWAGGER_UI_DIR is not None:
        app.router.add_static(f"{bp}/swagger-ui", SWAGGER_UI_DIR)
