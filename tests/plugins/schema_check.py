"""A dict ``schema``: predict's output is validated against it."""

from webargs import fields

schema = {
    "value": fields.Int(required=True),
    "label": fields.Str(),
}


def get_predict_args():
    return {"valid": fields.Bool(load_default=True)}


def predict(valid=True):
    if valid:
        return {"value": 3, "label": "three"}
    return {"value": "not a number"}
