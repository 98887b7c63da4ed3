"""One argument of each kind the OIP mapping knows; predict returns what it
got, with each value's Python type, and a number computed from them."""

from webargs import fields, validate

from deepaas.model.v2.wrapper import UploadedFile


def get_predict_args():
    return {
        "i": fields.Int(required=True, validate=validate.Range(min=0)),
        "f": fields.Float(load_default=1.5),
        "b": fields.Bool(load_default=False),
        "s": fields.Str(load_default="x", validate=validate.OneOf(["x", "y", "z"])),
        "fl": fields.List(fields.Float(), load_default=[]),
        "il": fields.List(fields.Int(), load_default=[]),
        "d": fields.Dict(required=False),
        "up": fields.Raw(required=False, metadata={"type": "file", "location": "form"}),
    }


def predict(**kwargs):
    got = {}
    for name, value in kwargs.items():
        if isinstance(value, UploadedFile):
            with open(value.filename, "rb") as fh:
                value = fh.read().decode("latin-1")
        got[name] = [type(value).__name__, value]
    return {
        "total": kwargs["i"] * kwargs["f"] + sum(kwargs["fl"]) + sum(kwargs["il"]),
        "flag": kwargs["b"],
        "got": got,
    }
