"""Arguments of every style and location; predict describes what it got.

Each kwarg comes back as ``{"type": <type name>, "value": <value>}``, or,
for an upload, what the :class:`UploadedFile` says and whether its
temporary file exists. ``mode="raise"`` raises after looking at the uploads
(with their paths in the message), to check that they are removed anyway.
"""

import hashlib
import json
import os

from marshmallow import ValidationError
from webargs import fields, validate

from deepaas.model.v2.wrapper import UploadedFile


class EvenNumber(fields.Field):
    """A custom field with its own ``_deserialize``, as some plugins write."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValidationError("Not an integer.") from None
        if number % 2:
            raise ValidationError("Not an even number.")
        return number


def get_predict_args():
    return {
        # legacy keyword style (webargs 5 era)
        "q": fields.Str(required=False, location="query", description="query only"),
        "f": fields.Str(required=False, location="form", description="form only"),
        "j": fields.Int(required=False, location="json"),
        "legacy_default": fields.Str(missing="legacy"),
        "legacy_file": fields.Field(required=False, type="file", location="form"),
        "colour": fields.Str(required=False, enum=["red", "green"]),  # no validator
        "pw": fields.Str(required=False, format="password"),
        # modern style
        "qs": fields.Int(metadata={"location": "querystring"}),
        "jd": fields.Dict(metadata={"location": "json"}),
        "token": fields.Str(data_key="X-Token", metadata={"location": "headers"}),
        "modern_default": fields.Str(load_default="modern"),
        "modern_file": fields.Raw(metadata={"type": "file", "location": "form"}),
        # no location: query, then form, then JSON
        "anywhere": fields.Str(),
        "ints": fields.List(fields.Int()),
        "csv": fields.DelimitedList(fields.Int()),  # one "1,2" value
        "dashed-name": fields.Int(),
        "klass": fields.Str(data_key="class"),
        "even": EvenNumber(),
        "flag": fields.Bool(),
        "mode": fields.Str(load_default="ok", validate=validate.OneOf(["ok", "raise"])),
    }


def _describe(value):
    if isinstance(value, UploadedFile):
        exists = os.path.exists(value.filename)
        digest = None
        if exists:
            with open(value.filename, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
        return {
            "type": "UploadedFile",
            "name": value.name,
            "path": value.filename,
            "exists": exists,
            "sha256": digest,
            "content_type": value.content_type,
            "original_filename": value.original_filename,
        }
    return {"type": type(value).__name__, "value": value}


def predict(**kwargs):
    described = {name: _describe(value) for name, value in kwargs.items()}
    if kwargs.get("mode") == "raise":
        raise RuntimeError(json.dumps(described))
    return described
