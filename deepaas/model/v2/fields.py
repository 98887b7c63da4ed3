"""What a plugin's argument field says about itself.

Plugins declare arguments as marshmallow 3 fields in two styles: the legacy
keyword style of the webargs 5 era (``fields.Str(missing="x",
location="form", type="file", description="...")``, where marshmallow keeps
the unknown keywords in ``field.metadata``) and the modern style
(``load_default=``, ``metadata={...}``). :class:`ArgSpec` reads both, once,
so the request parser, the OpenAPI writer and the CLI agree on every field.
"""

from __future__ import annotations

import dataclasses
import reprlib
import warnings
from collections.abc import Mapping
from typing import Any

import marshmallow
from marshmallow import fields as ma_fields
from marshmallow import validate as ma_validate

from deepaas.model.v2.integral import refuse_fractions

# Locations a field may name, mapped to the one word we use for each.
_LOCATIONS = {
    None: None,
    "": None,
    "query": "query",
    "querystring": "query",
    "form": "form",
    "files": "form",
    "formData": "form",
    "json": "json",
    "body": "json",
    "headers": "headers",
    "header": "headers",
}


class InvalidArgsError(ValueError):
    """A plugin's argument declaration cannot be used (bad type or location)."""


@dataclasses.dataclass(frozen=True)
class ArgSpec:
    """One argument of a plugin method, as deepaas understands it."""

    name: str  # the key in the plugin's dict: the kwarg name
    field: ma_fields.Field
    key: str  # the name on the wire (data_key, or the name)
    location: str | None  # query | form | json | headers | None (any)
    is_file: bool  # a file upload, or (with is_list) a list of them
    is_list: bool  # multi-valued: repeated keys in a query string or form

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.field.metadata

    @property
    def description(self) -> str | None:
        return self.metadata.get("description")

    @property
    def required(self) -> bool:
        return bool(self.field.required)

    @property
    def default(self) -> Any:
        """The default value, or ``marshmallow.missing``."""
        return self.field.load_default

    @property
    def choices(self) -> list[Any] | None:
        """Allowed values, from a ``OneOf`` validator or the ``enum`` keyword."""
        for validator in _validators(self.field):
            if isinstance(validator, ma_validate.OneOf):
                return list(validator.choices)
        enum = self.metadata.get("enum")
        return list(enum) if enum is not None else None

    @property
    def takes_json(self) -> bool:
        """Whether the field takes a mapping, or a list of mappings
        (:func:`takes_mapping`): what ``/swagger.json`` describes as JSON
        text."""
        return takes_mapping(self.field)

    @property
    def structured(self) -> bool:
        """Whether the field takes JSON structure (:func:`takes_structure`):
        sent in a query string or a form field, its value is JSON text, and
        with no location ``/openapi.json`` puts it in the request body."""
        return takes_structure(self.field)


def takes_mapping(field: ma_fields.Field) -> bool:
    """Whether ``field`` loads a mapping (``Dict``, ``Mapping``, ``Nested``)
    or a list of them (``List(Dict())``, ``Nested(many=True)``), by its
    marshmallow class. ``Pluck``, a ``Nested`` loading one plain value, is
    not one; nor is a list of lists."""
    if _is_mapping(field):
        return True
    inner = getattr(field, "inner", None)
    return isinstance(field, ma_fields.List) and _is_mapping(inner)


def takes_structure(field: ma_fields.Field) -> bool:
    """Whether ``field`` takes a value that repeated query keys cannot
    carry: a mapping (:func:`takes_mapping`), or a list or tuple holding
    mappings, lists or tuples (``List(List(Float()))``, a matrix).

    A list of scalars is not one (``?x=1&x=2`` carries it), nor is a
    ``Raw`` field, which takes whatever it is sent.
    """
    if _is_mapping(field):
        return True
    if isinstance(field, ma_fields.List):
        return _holds_structure(field.inner)
    if isinstance(field, ma_fields.Tuple):
        return any(_holds_structure(inner) for inner in field.tuple_fields)
    return False


def _holds_structure(item: Any) -> bool:
    return _is_mapping(item) or isinstance(item, (ma_fields.List, ma_fields.Tuple))


def fits(field: Any, value: Any) -> bool:
    """Whether parsed JSON ``value`` has the shape ``field`` loads: an
    object for a mapping, an array of fitting items for a list, anything
    that is neither for a scalar. Only the shape: the field's own loading
    says whether the values are right.

    It tells one item of a list argument from an array of its items, when
    JSON texts are repeated (``?m=[1,2]&m=[3,4]`` is two rows of a matrix,
    ``?m=[[1,2],[3,4]]`` both at once).
    """
    if isinstance(field, ma_fields.Pluck):
        return True  # one plain value, or a list of them: the field decides
    if isinstance(field, ma_fields.Nested) and field.many:
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    if _is_mapping(field):
        return isinstance(value, dict)
    if isinstance(field, ma_fields.List):
        return isinstance(value, list) and all(fits(field.inner, v) for v in value)
    if isinstance(field, ma_fields.Tuple):
        return (
            isinstance(value, list)
            and len(value) == len(field.tuple_fields)
            and all(fits(f, v) for f, v in zip(field.tuple_fields, value, strict=True))
        )
    if type(field) in (ma_fields.Raw, ma_fields.Field):
        return True
    return not isinstance(value, (list, dict))


def _is_mapping(field: Any) -> bool:
    return isinstance(field, (ma_fields.Mapping, ma_fields.Nested)) and not isinstance(
        field, ma_fields.Pluck
    )


def _validators(field: ma_fields.Field) -> list[Any]:
    return list(getattr(field, "validators", []) or [])


def _is_file(field: ma_fields.Field) -> bool:
    """A file, or a list of files: ``fields.List(fields.Raw(metadata={"type":
    "file"}))``, whose list may say ``type="file"`` too (or alone)."""
    if field.metadata.get("type") == "file":
        return True
    inner = getattr(field, "inner", None)
    return (
        isinstance(field, ma_fields.List)
        and isinstance(inner, ma_fields.Field)
        and inner.metadata.get("type") == "file"
    )


def _is_multi_valued(field: ma_fields.Field) -> bool:
    """Whether repeated keys (``?x=1&x=2``) make the value, as webargs decides.

    webargs' ``DelimitedList`` is a List that takes one ``"1,2"`` value
    (``is_multiple = False``; webargs 5 had no flag, only ``delimiter``).
    """
    flag = getattr(field, "is_multiple", None)
    if flag is not None:
        return bool(flag)
    if hasattr(field, "delimiter"):
        return False
    return isinstance(field, (ma_fields.List, ma_fields.Tuple))


def arg_specs(declared: Any, owner: str) -> dict[str, ArgSpec]:
    """Turn what ``get_predict_args()``/``get_train_args()`` returned into specs.

    ``declared`` is a mapping of names to fields (a dict, or the ordered
    ``Schema().fields``); ``owner`` names the plugin method in error messages.
    """
    if declared is None:
        return {}
    if isinstance(declared, type) and issubclass(declared, marshmallow.Schema):
        declared = declared().fields
    elif isinstance(declared, marshmallow.Schema):
        declared = declared.fields
    if not isinstance(declared, Mapping):
        raise InvalidArgsError(
            f"{owner} must return a dict of marshmallow fields, "
            f"got {type(declared).__name__}"
        )
    specs: dict[str, ArgSpec] = {}
    for name, field in declared.items():
        if isinstance(field, type) and issubclass(field, ma_fields.Field):
            field = field()
        if not isinstance(field, ma_fields.Field):
            raise InvalidArgsError(
                f"{owner}: argument {name!r} is {_not_a_field(field)}, not a "
                "marshmallow field (write fields.Int(), fields.Str(), ...)"
            )
        refuse_fractions(field)  # 1.5 is no int: not loaded as 1
        raw_location = field.metadata.get("location")
        if raw_location not in _LOCATIONS:
            raise InvalidArgsError(
                f"{owner}: argument {name!r} has unknown location "
                f"{raw_location!r} (use query, form, json or headers)"
            )
        is_file = _is_file(field)
        specs[str(name)] = ArgSpec(
            name=str(name),
            field=field,
            key=field.data_key or str(name),
            location="form" if is_file else _LOCATIONS[raw_location],
            is_file=is_file,
            is_list=_is_multi_valued(field),
        )
    return specs


def _not_a_field(value: Any) -> str:
    """What a declared argument is instead of a field, in words that read
    for any type: ``the class int``, ``3 (of type int)``."""
    if isinstance(value, type):
        module = "" if value.__module__ == "builtins" else f"{value.__module__}."
        return f"the class {module}{value.__qualname__}"
    return f"{reprlib.repr(value)} (of type {type(value).__name__})"


def build_schema(specs: Mapping[str, ArgSpec], name: str) -> marshmallow.Schema:
    """A marshmallow Schema instance that loads (validates) these arguments.

    Unknown keys are ignored, as in DEEPaaS 2.x.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema_cls = marshmallow.Schema.from_dict(
            {spec.name: spec.field for spec in specs.values()}, name=name
        )
    return schema_cls(unknown=marshmallow.EXCLUDE)


# schema id -> (schema, whether a field has a dotted attribute, the fields
# whose own deserialize() and _validate() are marshmallow's and that have no
# validators): known per schema, not worth finding out on every request.
_KNOWN: dict[int, tuple[marshmallow.Schema, bool, frozenset[str]]] = {}


def _plain(field: ma_fields.Field) -> bool:
    """Whether ``field.deserialize(value)`` is ``field._deserialize(value)``
    for a value that is neither missing nor None: the base class's
    ``deserialize``, ``_validate_missing`` and ``_validate``, and no
    validators (which marshmallow wraps in a new ``And`` on every call)."""
    cls = type(field)
    return (
        not field.validators
        and cls.deserialize is ma_fields.Field.deserialize
        and cls._validate is ma_fields.Field._validate
        and cls._validate_missing is ma_fields.Field._validate_missing
    )


def load_args(schema: marshmallow.Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """``schema.load(data)`` for a schema made by :func:`build_schema`, faster.

    Such a schema has no hooks and no schema validators, so loading is each
    field's own ``deserialize`` (defaults, required, validators, custom
    fields) and marshmallow's error layout; skipping the generic machinery
    makes this several times faster on the request path. A field whose
    ``attribute`` is a dotted path falls back to ``schema.load``.
    """
    fields = schema.load_fields
    known = _KNOWN.get(id(schema))
    if known is None or known[0] is not schema:
        dotted = any(f.attribute and "." in f.attribute for f in fields.values())
        plain = frozenset(name for name, f in fields.items() if _plain(f))
        known = _KNOWN[id(schema)] = (schema, dotted, plain)
    if known[1]:
        return schema.load(data)
    plain = known[2]
    missing = marshmallow.missing
    result: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    for name, field in fields.items():
        key = field.data_key if field.data_key is not None else name
        raw = data.get(key, missing)
        try:
            if raw is not missing and raw is not None and name in plain:
                value = field._deserialize(raw, key, data)
            else:
                value = field.deserialize(raw, key, data)
        except marshmallow.ValidationError as exc:
            errors[key] = exc.messages
            value = exc.valid_data or marshmallow.missing
        if value is not marshmallow.missing:
            result[field.attribute or name] = value
    if errors:
        raise marshmallow.ValidationError(errors, data=data, valid_data=result)
    return result
