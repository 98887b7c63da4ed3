"""Which arguments are structured (JSON text in a query string or a form,
the request body in /openapi.json), and how a JSON text's shape is told
from an item's."""

from __future__ import annotations

import pytest
from marshmallow import Schema, fields

from deepaas.model.v2.fields import fits, takes_structure


class Point(Schema):
    x = fields.Int()


@pytest.mark.parametrize(
    ("field", "structured"),
    [
        (fields.Int(), False),
        (fields.Str(), False),
        (fields.Raw(), False),
        (fields.List(fields.Float()), False),
        (fields.List(fields.Raw()), False),
        (fields.Tuple((fields.Int(), fields.Str())), False),
        (fields.Pluck(Point, "x"), False),
        (fields.Pluck(Point, "x", many=True), False),
        (fields.List(fields.Pluck(Point, "x")), False),
        (fields.Dict(), True),
        (fields.Nested(Point), True),
        (fields.Nested(Point, many=True), True),
        (fields.List(fields.Dict()), True),
        (fields.List(fields.Nested(Point)), True),
        (fields.List(fields.List(fields.Float())), True),
        (fields.List(fields.Tuple((fields.Int(), fields.Int()))), True),
        (fields.Tuple((fields.List(fields.Int()), fields.Str())), True),
    ],
)
def test_takes_structure(field, structured):
    assert takes_structure(field) is structured


ROW = fields.List(fields.Float())


@pytest.mark.parametrize(
    ("field", "value", "fit"),
    [
        (ROW, [1, 2], True),
        (ROW, [[1, 2]], False),  # a matrix, not a row
        (ROW, [], True),
        (fields.Float(), 1, True),
        (fields.Float(), [1], False),
        (fields.Dict(), {"a": 1}, True),
        (fields.Dict(), [{"a": 1}], False),
        (fields.Nested(Point, many=True), [{"x": 1}], True),
        (fields.Nested(Point, many=True), {"x": 1}, False),
        (fields.Tuple((fields.Int(), ROW)), [1, [2]], True),
        (fields.Tuple((fields.Int(), ROW)), [1], False),
        (fields.Raw(), [[{}]], True),
    ],
)
def test_fits(field, value, fit):
    assert fits(field, value) is fit
