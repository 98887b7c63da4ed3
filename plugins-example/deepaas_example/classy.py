"""A class-based DEEPaaS plugin.

The entry point names the class::

    [project.entry-points."deepaas.v2.model"]
    demo_class = "deepaas_example.classy:DemoModel"

DEEPaaS creates one instance, ``DemoModel()``, with no arguments, and calls its
methods. Subclassing ``BaseModel`` is optional; it documents what can be defined.
"""

import io

import marshmallow
from webargs import fields, validate

from deepaas.model.v2.base import BaseModel


class PredictArgs(marshmallow.Schema):
    """The arguments of predict, written as a schema (``PredictArgs().fields``)."""

    data = fields.Str(required=True, metadata={"description": "Some text"})
    # No "location" in metadata: read from the query string, form or JSON body.
    accept = fields.Str(
        load_default="application/json",
        validate=validate.OneOf(["application/json", "application/octet-stream"]),
        metadata={"description": "The type of the response"},
    )


class PredictResponse(marshmallow.Schema):
    """Validates (and documents) the JSON that predict returns."""

    data = fields.Str(required=True)
    upper = fields.Str(required=True)
    length = fields.Int(required=True)
    warmed = fields.Bool(required=True)


class DemoModel(BaseModel):
    """Upper-cases a string; returns JSON or the raw bytes."""

    schema = PredictResponse

    def __init__(self):
        self.warmed = False

    def get_metadata(self):
        return {
            "id": "demo_class",
            "name": "demo_class",
            "description": "Example class-based plugin that upper-cases a string.",
            "author": "deepaas developers",
            "version": "1.0.0",
            "license": "Apache-2.0",
        }

    def warm(self):
        self.warmed = True

    def get_predict_args(self):
        return PredictArgs().fields

    def predict(self, **kwargs):
        data = kwargs["data"]
        if kwargs.get("accept") == "application/octet-stream":
            return io.BytesIO(data.encode("utf-8"))
        return {
            "data": data,
            "upper": data.upper(),
            "length": len(data),
            "warmed": self.warmed,
        }

    def get_train_args(self):
        return {
            "epochs": fields.Int(
                load_default=1, metadata={"description": "Number of epochs"}
            ),
        }

    def train(self, **kwargs):
        return {"epochs": kwargs.get("epochs", 1), "warmed": self.warmed}
