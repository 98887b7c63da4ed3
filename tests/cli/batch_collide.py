"""A plugin whose arguments have the names of batch options (``jobs``,
``inputs``): its own arguments take those options over."""

from marshmallow import fields


def get_predict_args():
    return {
        "jobs": fields.Int(load_default=3),
        "inputs": fields.Str(load_default="x"),
        "data": fields.Field(metadata={"type": "file"}),
    }


def predict(jobs=3, inputs="x", data=None):
    return {
        "jobs": jobs,
        "inputs": inputs,
        "data": getattr(data, "original_filename", None),
    }
