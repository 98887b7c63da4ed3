"""Class plugins with a ``schema`` deepaas must refuse at start-up."""

import marshmallow
from webargs import fields


class Response(marshmallow.Schema):
    value = fields.Int()


class ListSchema:
    schema = [fields.Int()]


class InstanceSchema:
    schema = Response()


class NotASchemaClass:
    class schema:  # a class, but not a marshmallow Schema
        value = fields.Int()


class GoodSchemaClass:
    schema = Response


class GoodDictSchema:
    schema = {"value": fields.Int(required=True)}
