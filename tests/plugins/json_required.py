"""A plugin whose predict takes a required argument from the JSON body
only (``location: json``), beside an optional query one."""

from marshmallow import fields


def get_predict_args():
    return {
        "x": fields.Int(required=True, metadata={"location": "json"}),
        "note": fields.Str(load_default="", metadata={"location": "query"}),
    }


def predict(x, note=""):
    return {"x": x, "note": note}
