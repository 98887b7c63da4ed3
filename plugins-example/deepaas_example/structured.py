"""Structured arguments: a matrix, a dict, an object, a list of objects,
and a file beside them in one request.

A query string carries only strings, so these arguments travel in the
request body: a JSON body, or, with a file, a multipart form where each is
a field of JSON text (docs/plugins.md, "Structured arguments"). Serve it
with ``deepaas-run --plugin deepaas_example.structured``.
"""

from __future__ import annotations

import os
from typing import Any

from marshmallow import Schema
from webargs import fields, validate


class Box(Schema):
    """A rectangle: its corner and its size."""

    x = fields.Float(required=True)
    y = fields.Float(required=True)
    w = fields.Float(required=True, validate=validate.Range(min=0))
    h = fields.Float(required=True, validate=validate.Range(min=0))


def get_metadata() -> dict[str, Any]:
    return {
        "name": "structured",
        "description": "Takes a matrix, options, boxes and a file at once",
    }


def get_predict_args() -> dict[str, Any]:
    return {
        # No location: each of these four is JSON (structured) ...
        "matrix": fields.List(
            fields.List(fields.Float()),
            required=True,
            metadata={"description": "Rows of numbers"},
        ),
        "options": fields.Dict(
            keys=fields.Str(),
            load_default={},
            metadata={"description": "Any settings"},
        ),
        "roi": fields.Nested(
            Box, required=False, metadata={"description": "A region of interest"}
        ),
        "boxes": fields.List(
            fields.Nested(Box), load_default=[], metadata={"description": "Boxes"}
        ),
        # ... this one is a scalar: a query parameter ...
        "scale": fields.Float(
            load_default=1.0, metadata={"description": "Multiplies the sum"}
        ),
        # ... and this one a file, a part of a multipart form.
        "image": fields.Raw(
            required=False,
            metadata={
                "description": "An optional file",
                "type": "file",
                "location": "form",
            },
        ),
    }


def predict(**kwargs: Any) -> dict[str, Any]:
    """Describe what arrived, with its Python types' contents."""
    matrix = kwargs["matrix"]
    roi = kwargs.get("roi")
    image = kwargs.get("image")
    return {
        "rows": len(matrix),
        "sum": kwargs["scale"] * sum(sum(row) for row in matrix),
        "options": kwargs["options"],
        "roi_area": roi["w"] * roi["h"] if roi else None,
        "box_areas": [box["w"] * box["h"] for box in kwargs["boxes"]],
        "image": (
            {
                "name": image.original_filename,
                "bytes": os.path.getsize(image.filename),
            }
            if image
            else None
        ),
    }
