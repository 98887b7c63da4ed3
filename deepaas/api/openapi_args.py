"""A model's arguments in the API documents: Swagger 2.0 parameters, and
OpenAPI 3.1 parameters and request body (:mod:`deepaas.api.openapi` builds
the rest).

Swagger 2.0 keeps DEEPaaS 2.x's shape (one ``formData``/``query`` parameter
per argument, files as ``type: file``). In OpenAPI 3.1 structured arguments
that name no location (a mapping, a ``Nested``, a list of them, a list of
lists: :func:`in_body`) are in the request body with the JSON-body ones,
since a query string cannot carry them; a body with files is the multipart
form alone, those arguments being parts of JSON text, so that generated
clients choose the form and never drop a file.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields as ma_fields

from deepaas.model.v2.fields import ArgSpec


def path_param(name: str, text: str, swagger2: bool) -> dict[str, Any]:
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


def _property(
    spec: ArgSpec, plugin: MarshmallowPlugin, null_default: bool = False
) -> dict[str, Any]:
    """The field's schema; ``missing=None`` is a ``"default": null`` only
    with ``null_default`` (Swagger 2.0, as DEEPaaS 2.6.0 wrote it): in 3.1 it
    means "optional", and a null default would be sent by some clients."""
    assert plugin.converter is not None
    prop = copy.deepcopy(plugin.converter.field2property(spec.field))
    prop.pop("location", None)
    choices = spec.choices
    if choices and "enum" not in prop:
        prop["enum"] = choices
    if prop.get("default", 0) is None and not null_default:
        del prop["default"]
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


def _json_text(spec: ArgSpec, prop: dict[str, Any]) -> dict[str, Any]:
    """A mapping argument (:attr:`ArgSpec.takes_json`) as a Swagger 2.0
    query or form parameter: JSON text (a parameter there has no schema, so
    no ``$ref``); a list of them, repeated JSON texts."""
    many = bool(getattr(spec.field, "many", False))
    what = "of an array of objects" if many else "of an object"
    if spec.is_list:
        what = "of an object (or of an array of objects), one per value"
    text = f"JSON text {what}"
    if prop.get("description"):
        text = f"{prop['description']} ({text})"
    param: dict[str, Any] = {"type": "string", "description": text}
    default = prop.get("default")
    if default is not None and not spec.is_list:
        param["default"] = json.dumps(default)
    example = _example(spec.field)
    if example is not None:
        param["x-example"] = json.dumps([example] if many else example)
    if spec.is_list:
        param = {
            "type": "array",
            "items": {"type": "string"},
            "collectionFormat": "multi",
            "description": text,
        }
    return param


_PLACEHOLDERS: list[tuple[type[ma_fields.Field], Any]] = [
    (ma_fields.Bool, False),
    (ma_fields.Integer, 0),
    (ma_fields.Number, 0.0),
    (ma_fields.String, "string"),
]


def _example(field: ma_fields.Field) -> dict[str, Any] | None:
    """An object a ``Nested`` field takes, for Swagger UI to fill in: its
    fields' defaults, or a placeholder of their type."""
    if not isinstance(field, ma_fields.Nested):
        return None
    try:
        schema = field.schema
    except Exception:  # a schema that cannot be made: no example
        return None
    example: dict[str, Any] = {}
    for name, inner in schema.load_fields.items():
        value: Any = inner.load_default
        if callable(value) or value is None or not _is_jsonable(value):
            value = next(
                (v for kind, v in _PLACEHOLDERS if isinstance(inner, kind)), None
            )
        example[inner.data_key or name] = value
    return example


def _is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def is_file_list(param: dict[str, Any]) -> bool:
    items = param.get("items") or {}
    return param.get("type") == "array" and items.get("format") == "binary"


def swagger2_params(
    specs: Iterable[ArgSpec], plugin: MarshmallowPlugin
) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    body_props: dict[str, Any] = {}
    for spec in specs:
        prop = _property(spec, plugin, null_default=True)
        if spec.location == "json":
            body_props[spec.key] = prop
            continue
        where = {"headers": "header", "form": "formData"}.get(
            spec.location or "", "query"
        )
        if spec.is_file and spec.is_list:
            prop = _file_list(prop)
        elif spec.takes_json:
            prop = _json_text(spec, prop)
        elif spec.is_file:  # 2.6.0: a null default and x-nullable if missing=None
            kept = ("description", "default", "x-nullable")
            prop = {k: v for k, v in prop.items() if k in kept}
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


def in_body(spec: ArgSpec) -> bool:
    """Whether ``/openapi.json`` describes the argument in the request body
    (a JSON body, or a part of JSON text in a multipart one): a ``json``
    argument, or a structured one that names no location. A query string
    can carry neither: a generated client or Swagger UI sending a matrix or
    an object there writes it in a form the server cannot read."""
    return spec.location == "json" or (
        spec.location is None and spec.structured and not spec.is_file
    )


def openapi3_params(
    specs: Iterable[ArgSpec], plugin: MarshmallowPlugin
) -> list[dict[str, Any]]:
    params = []
    for spec in specs:
        if spec.location not in (None, "query", "headers") or in_body(spec):
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
        if spec.structured or prop.get("type") == "object":
            # JSON text (a list: one text of the array; repeated texts are
            # taken too), as deepaas.api.json_text reads it
            param["content"] = {"application/json": {"schema": param.pop("schema")}}
        elif prop.get("type") == "array":
            param["explode"] = spec.is_list
        params.append(param)
    return params


def openapi3_body(
    specs: Iterable[ArgSpec], plugin: MarshmallowPlugin
) -> dict[str, Any] | None:
    form: dict[str, Any] = {}
    form_required: list[str] = []
    body: dict[str, Any] = {}
    body_required: list[str] = []
    json_parts: list[str] = []  # form fields of JSON text
    for spec in specs:
        if spec.location == "form":
            prop = _property(spec, plugin)
            if spec.structured and not spec.is_file:
                json_parts.append(spec.key)
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
        elif in_body(spec):
            body[spec.key] = _property(spec, plugin)
            if spec.required:
                body_required.append(spec.key)
    content: dict[str, Any] = {}
    if form:
        # One body: the form, which carries the files (a document offering a
        # JSON body too makes generated clients send JSON and drop the
        # files). JSON-body arguments are parts of it holding JSON text,
        # OpenAPI 3's default encoding of an object in a multipart body.
        schema: dict[str, Any] = {"type": "object", "properties": {**form, **body}}
        if form_required or body_required:
            schema["required"] = form_required + body_required
        media: dict[str, Any] = {"schema": schema}
        if body or json_parts:
            media["encoding"] = {
                key: {"contentType": "application/json"} for key in [*json_parts, *body]
            }
        content["multipart/form-data"] = media
    elif body:
        json_schema: dict[str, Any] = {"type": "object", "properties": body}
        if body_required:
            json_schema["required"] = body_required
        content["application/json"] = {"schema": json_schema}
    if not content:
        return None
    request_body: dict[str, Any] = {"content": content}
    if form_required or body_required:
        request_body["required"] = True
    return request_body


def json_left_out(specs: Iterable[ArgSpec]) -> list[str]:
    """JSON-body fields that ``/swagger.json`` leaves out of a route with
    form fields, named in the operation's description.

    A request has one body: a form (multipart, where files travel) or a JSON
    object. A JSON-body field is read from a JSON object, or from a form
    field holding JSON text. Swagger 2.0 cannot describe a body parameter
    beside form fields, nor a form field's JSON; the 3.1 document lists
    these fields in its multipart form (docs/compatibility.md).
    """
    specs = list(specs)
    if not any(spec.location == "form" for spec in specs):
        return []
    return [spec.key for spec in specs if spec.location == "json"]
