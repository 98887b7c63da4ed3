"""load_args gives exactly what Schema.load gives, values and errors alike."""

from __future__ import annotations

import warnings

import marshmallow
import pytest
from marshmallow import fields, validate

from deepaas.model.v2.fields import arg_specs, build_schema, load_args


class Upper(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise marshmallow.ValidationError("Not text.")
        return value.upper()


class Trimmed(fields.Str):
    """Overrides deserialize itself: never taken for a plain field."""

    def deserialize(self, value, attr=None, data=None, **kwargs):
        if isinstance(value, str):
            value = value.strip()
        return super().deserialize(value, attr, data, **kwargs)


class Even(fields.Int):
    """Overrides _validate: never taken for a plain field."""

    def _validate(self, value):
        if value % 2:
            raise marshmallow.ValidationError("Not even.")
        super()._validate(value)


def _schema():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        declared = {
            "n": fields.Int(load_default=1, validate=validate.Range(0, 10)),
            "name": fields.Str(required=True),
            "tags": fields.List(fields.Str(), load_default=list),
            "legacy": fields.Str(missing="old"),
            "renamed": fields.Str(data_key="wire-name"),
            "up": Upper(),
            "maybe": fields.Float(),
            "nullable": fields.Int(allow_none=True),
            "trimmed": Trimmed(),
            "even": Even(),
        }
    return build_schema(arg_specs(declared, "test"), "Args")


def _outcome(load, schema, data):
    try:
        return "ok", load(schema, data)
    except marshmallow.ValidationError as exc:
        return "error", exc.messages


@pytest.mark.parametrize(
    "data",
    [
        {"name": "a"},
        {"name": "a", "n": "3", "tags": ["x", "y"], "wire-name": "w", "up": "q"},
        {},
        {"name": "a", "n": "11"},
        {"name": "a", "n": "x", "up": 3, "maybe": "nan?"},
        {"name": 5, "renamed": "ignored: wrong key"},
        {"name": None, "n": None, "nullable": None, "maybe": None},
        {"name": "a", "nullable": "4", "trimmed": "  t  ", "even": "3"},
        {"name": "a", "trimmed": None, "even": "4", "maybe": "1e400"},
    ],
)
def test_same_as_schema_load(data):
    schema = _schema()
    expected = _outcome(lambda s, d: s.load(d), schema, data)
    assert _outcome(load_args, schema, data) == expected


def test_dotted_attribute_falls_back_to_schema_load():
    schema = build_schema(
        arg_specs({"x": fields.Int(attribute="a.b", load_default=2)}, "t"), "Dot"
    )
    assert load_args(schema, {}) == {"a": {"b": 2}}
