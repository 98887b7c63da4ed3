"""Shapes the spec documents must describe well (tests/api/test_spec_answers).

predict answers binary types only (``accept`` from the header: a PNG or a
zip); its response schema is a Schema class named ``Training``, a name
deepaas's own documents use, with a dict of integers, a free dict and a raw
value. Its arguments: a float with a format of its own, an integer and a
string with ``None`` defaults, a dict read from the JSON body only and a
file. train takes a dict from the JSON body only and an integer, and
answers at once.
"""

from marshmallow import Schema, fields, validate

PNG = b"\x89PNG\r\n\x1a\nnot really"
ZIP = b"PK\x05\x06" + bytes(18)  # an empty zip archive


class Training(Schema):
    counts = fields.Dict(keys=fields.Str(), values=fields.Int())
    free = fields.Dict()
    anything = fields.Raw()


schema = Training


def get_predict_args():
    return {
        "scale": fields.Float(load_default=1.0, metadata={"format": "double"}),
        "limit": fields.Int(load_default=None),
        "label": fields.Str(load_default=None),
        "options": fields.Dict(metadata={"location": "json"}),
        "image": fields.Raw(metadata={"type": "file", "location": "form"}),
        "accept": fields.Str(
            load_default="image/png",
            validate=validate.OneOf(["image/png", "application/zip"]),
            metadata={"location": "headers"},
        ),
    }


def predict(accept="image/png", **kwargs):
    return ZIP if accept == "application/zip" else PNG


def get_train_args():
    return {
        "config": fields.Dict(metadata={"location": "json"}),
        "epochs": fields.Int(load_default=1),
    }


def train(**kwargs):
    return {"trained": kwargs}
