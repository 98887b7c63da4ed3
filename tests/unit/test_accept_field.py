"""The ``accept`` field as deepaas extends it (issue 8, points 6 and 7)."""

from __future__ import annotations

import types

import marshmallow
import pytest
from marshmallow import fields, validate

from deepaas.api.args import ArgParser
from deepaas.model.v2.fields import load_args
from deepaas.model.v2.wrapper import ModelWrapper


def wrapper_of(accept: fields.Field) -> ModelWrapper:
    plugin = types.SimpleNamespace(get_predict_args=lambda: {"accept": accept})
    return ModelWrapper("m", plugin)


def error_of(wrapper: ModelWrapper, value: str) -> list[str]:
    schema = ArgParser(wrapper.predict_args, "MArgs").schema
    with pytest.raises(marshmallow.ValidationError) as info:
        load_args(schema, {"accept": value})
    return info.value.messages["accept"]  # type: ignore[index,call-overload]


def test_wildcard_accepted_message_lists_the_plugins_choices():
    one_of = validate.OneOf(["image/png", "text/plain"])
    wrapper = wrapper_of(fields.Str(validate=one_of))
    assert wrapper.accept_choices == ["image/png", "text/plain", "*/*"]
    assert error_of(wrapper, "x/y") == ["Must be one of: image/png, text/plain."]
    schema = ArgParser(wrapper.predict_args, "MArgs").schema
    assert load_args(schema, {"accept": "*/*"}) == {"accept": "*/*"}
    # the plugin's own objects are left as they were
    assert one_of.choices == ["image/png", "text/plain"]


def test_labels_and_custom_messages_are_kept():
    one_of = validate.OneOf(
        ("a/b", "c/d"), labels=("AB", "CD"), error="{input}: pick {labels}"
    )
    wrapper = wrapper_of(fields.Str(validate=one_of))
    assert error_of(wrapper, "x/y") == ["x/y: pick AB, CD"]


def test_choices_from_enum_metadata():
    wrapper = wrapper_of(fields.Str(metadata={"enum": ["a/b", "c/d"]}))
    assert error_of(wrapper, "x/y") == ["Must be one of: a/b, c/d."]
    assert wrapper.accept_for_any == "a/b"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (fields.Str(validate=validate.OneOf(["a/b", "c/d"])), "a/b"),
        # the plugin's default, when it is one of its choices
        (
            fields.Str(load_default="c/d", validate=validate.OneOf(["a/b", "c/d"])),
            "c/d",
        ),
        (
            fields.Str(load_default="x/y", validate=validate.OneOf(["a/b", "c/d"])),
            "a/b",
        ),
        # a plugin that lists */* itself gets it as it asked
        (fields.Str(validate=validate.OneOf(["a/b", "*/*"])), None),
        (fields.Str(), None),  # no choices: any value, passed as it is
    ],
)
def test_what_a_wildcard_becomes(field, expected):
    wrapper = wrapper_of(field)
    assert wrapper.accept_for_any == expected
    kwargs = {"accept": "*/*"}
    wrapper.resolve_accept(kwargs)
    assert kwargs == {"accept": expected or "*/*"}
    kwargs = {"accept": "a/b"}
    wrapper.resolve_accept(kwargs)
    assert kwargs == {"accept": "a/b"}
