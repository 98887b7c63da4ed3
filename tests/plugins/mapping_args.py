"""Mapping arguments with no location (webargs style): a Dict, a Nested, a
List of Dicts and a Nested(many=True). Sent in the query string or a form
field they are JSON text; in a JSON body, objects. predict returns what it
got, with the Python type of each value."""

from marshmallow import Schema
from webargs import fields


class Point(Schema):
    x = fields.Int(required=True)
    y = fields.Int(load_default=0)


def get_predict_args():
    return {
        "d": fields.Dict(description="any object"),
        "p": fields.Nested(Point, description="a point"),
        "dl": fields.List(fields.Dict(), description="objects"),
        "pl": fields.Nested(Point, many=True),
        "n": fields.Int(load_default=1),
    }


def predict(**kwargs):
    return {k: {"type": type(v).__name__, "value": v} for k, v in kwargs.items()}
