"""Int arguments refuse numbers that are not whole, wherever they sit.

marshmallow's non-strict ``fields.Int`` loads ``int(1.5)``, 1: every Int
of a plugin's arguments (alone, in a List, Tuple or Dict, in a Nested
schema, a plugin's own subclass) refuses it, through both ``schema.load``
and :func:`load_args`' plain-field path, and still loads 2, 2.0 and "2".
"""

from __future__ import annotations

import marshmallow
import pytest
from marshmallow import fields

from deepaas.model.v2.fields import arg_specs, build_schema, load_args

INVALID = ["Not a valid integer."]
NOT_WHOLE = [1.5, -0.25, 1e300, float(2**53) * 2, float("nan"), True, False]


class Inner(marshmallow.Schema):
    n = fields.Int()


class Odd(fields.Int):
    """A plugin's own Int: its own _validated runs after the check."""

    def _validated(self, value):
        value = super()._validated(value)
        if value is not None and not value % 2:
            raise self.make_error("invalid", input=value)
        return value


def declared() -> dict[str, fields.Field]:
    return {
        "a": fields.Int(),
        "list": fields.List(fields.Int()),
        "pair": fields.Tuple((fields.Int(), fields.Str())),
        "map": fields.Dict(keys=fields.Str(), values=fields.Int()),
        "nested": fields.Nested(Inner),
        "many": fields.Nested(Inner(many=True)),
        "odd": Odd(),
    }


def shapes(value: object) -> dict[str, object]:
    return {
        "a": value,
        "list": [1, value],
        "pair": [value, "x"],
        "map": {"k": value},
        "nested": {"n": value},
        "many": [{"n": 1}, {"n": value}],
        "odd": value,
    }


ERRORS = {
    "a": INVALID,
    "list": {1: INVALID},
    "pair": {0: INVALID},
    "map": {"k": {"value": INVALID}},
    "nested": {"n": INVALID},
    "many": {1: {"n": INVALID}},
    "odd": INVALID,
}


@pytest.fixture
def schema() -> marshmallow.Schema:
    return build_schema(arg_specs(declared(), "test"), "Args")


@pytest.mark.parametrize("load", [load_args, lambda s, d: s.load(d)])
@pytest.mark.parametrize("value", NOT_WHOLE)
def test_a_number_that_is_not_whole_is_refused_everywhere(schema, load, value):
    with pytest.raises(marshmallow.ValidationError) as caught:
        load(schema, shapes(value))
    assert caught.value.messages == ERRORS


@pytest.mark.parametrize("load", [load_args, lambda s, d: s.load(d)])
@pytest.mark.parametrize("value", [3, 3.0, "3", float(2**53 - 1)])
def test_whole_numbers_and_their_text_load_as_ints(schema, load, value):
    loaded = load(schema, shapes(value))
    expected = int(value)
    assert loaded["a"] == loaded["odd"] == expected and type(loaded["a"]) is int
    assert loaded["list"] == [1, expected]
    assert loaded["pair"] == (expected, "x")
    assert loaded["map"] == {"k": expected}
    assert loaded["nested"] == {"n": expected}
    assert loaded["many"] == [{"n": 1}, {"n": expected}]


def test_a_plugin_subclass_keeps_its_own_check(schema):
    with pytest.raises(marshmallow.ValidationError) as caught:
        load_args(schema, {"odd": 4})
    assert caught.value.messages == {"odd": INVALID}


def test_the_same_fields_declared_twice_are_wrapped_once():
    """A plugin returning one module-level dict on every call: specs made
    again (each server, each reload) check once, not once per wrap."""
    same = declared()
    arg_specs(same, "first")
    wrapped = same["a"].__dict__["_validated"]
    schema = build_schema(arg_specs(same, "second"), "Args")
    assert same["a"].__dict__["_validated"] is wrapped
    assert load_args(schema, {"a": 2.0}) == {"a": 2}
