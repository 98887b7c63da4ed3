"""A tiny module plugin for tests: echoes its arguments."""

from marshmallow import fields

WARMED = 0


def warm():
    global WARMED
    WARMED += 1


def get_metadata():
    return {"name": "echo", "description": "echoes"}


def get_predict_args():
    return {"x": fields.Int(load_default=0)}


def predict(**kwargs):
    return {"x": kwargs.get("x", 0) + 1, "warmed": WARMED}
