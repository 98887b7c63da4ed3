"""A plugin with no file argument: batch mode has nothing to give it."""

from marshmallow import fields


def get_predict_args():
    return {"x": fields.Int(load_default=0)}


def predict(x=0):
    return {"x": x}
