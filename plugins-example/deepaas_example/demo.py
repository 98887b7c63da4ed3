"""A module-based DEEPaaS plugin: copy this file to start your own.

DEEPaaS finds this module through the entry point declared in ``pyproject.toml``::

    [project.entry-points."deepaas.v2.model"]
    demo = "deepaas_example.demo"

and calls the functions below. Every function is optional. This demo does no
science: ``predict`` echoes back what it received, so you can see how each kind
of argument arrives in your code.
"""

import hashlib
import json
import struct
import zlib

from webargs import fields, validate

from deepaas.model.v2.wrapper import UploadedFile

# Set by warm(). A real model would load its weights here instead.
WARMED = False

ACCEPT_CHOICES = ["application/json", "image/png", "text/plain"]


def get_metadata():
    """Describe the model; shown at GET /v2/models/demo/."""
    return {
        "id": "demo",
        "name": "demo",
        "description": "Example plugin that echoes its arguments back.",
        "author": "deepaas developers",
        "version": "1.0.0",
        "license": "Apache-2.0",
        "tags": ["example", "demo"],  # extra keys are passed through as they are
    }


def warm():
    """Called once in each worker process before it serves requests.

    Load weights, open files, move things to the GPU... here.
    """
    global WARMED
    WARMED = True


def get_predict_args():
    """The arguments of predict, as ``{name: marshmallow field}``."""
    return {
        # Legacy keyword style (webargs 5 era): still accepted.
        "text": fields.Str(required=False, missing="hello", description="A string"),
        "number": fields.Int(
            missing=1,
            description="An integer between 0 and 100",
            validate=validate.Range(min=0, max=100),
        ),
        "flag": fields.Bool(missing=False, description="A boolean"),
        "choice": fields.Str(
            missing="a",
            enum=["a", "b", "c"],
            validate=validate.OneOf(["a", "b", "c"]),
            description="One of a, b or c",
        ),
        "file": fields.Field(
            required=False,
            missing=None,
            type="file",
            location="form",
            description="An optional file",
        ),
        # Modern style: load_default= and metadata={...}.
        "ratio": fields.Float(
            load_default=0.5,
            validate=validate.Range(min=0.0, max=1.0),
            metadata={"description": "A number between 0 and 1"},
        ),
        "numbers": fields.List(
            fields.Int(),
            load_default=[1, 2],
            metadata={"description": "A list of integers (repeat the key)"},
        ),
        "secret": fields.Str(
            required=False,  # no default: left out of kwargs when not sent
            metadata={"description": "A password-like string", "format": "password"},
        ),
        "demo-str": fields.Str(
            load_default="x", metadata={"description": "A name with a dash"}
        ),
        "x-demo-header": fields.Str(
            required=False,
            metadata={
                "description": "Read from a request header",
                "location": "headers",
            },
        ),
        "options": fields.Dict(
            required=False,
            metadata={"description": "Read from the JSON body", "location": "json"},
        ),
        # data_key: the client sends "class", your code receives "class_".
        "class_": fields.Str(
            load_default="cat",
            data_key="class",
            metadata={"description": "Sent as 'class' (a Python keyword)"},
        ),
        # fields.Raw (or fields.Field, as above): any field with type "file".
        "image": fields.Raw(
            required=False,
            metadata={
                "description": "An optional image file",
                "type": "file",
                "location": "form",
            },
        ),
        # "accept" is special: its choices are the content types predict returns.
        "accept": fields.Str(
            load_default="application/json",
            validate=validate.OneOf(ACCEPT_CHOICES),
            metadata={
                "description": "The type of the response",
                "location": "headers",
            },
        ),
    }


# Validates (and documents) the JSON that predict returns: a dict of fields, or
# a marshmallow.Schema subclass (see classy.py).
schema = {
    "model": fields.Str(required=True),
    "warmed": fields.Bool(required=True),
    "score": fields.Float(required=True),
    "received": fields.List(fields.Str(), required=True),
    "args": fields.Dict(keys=fields.Str(), required=True),
}


def describe_file(upload):
    """Summarise an uploaded file; ``upload.filename`` is a temporary file path."""
    digest = hashlib.sha256()
    size = 0
    with open(upload.filename, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            digest.update(chunk)
            size += len(chunk)
    return {
        "original_filename": upload.original_filename,
        "content_type": upload.content_type,
        "size": size,
        "sha256": digest.hexdigest(),
    }


def make_png(width, height, rgb):
    """A valid PNG of one colour, built by hand (no imaging library needed)."""

    def chunk(tag, data):
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    row = b"\x00" + bytes(rgb) * width  # filter byte 0, then RGB pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height, 9))
        + chunk(b"IEND", b"")
    )


def predict(**kwargs):
    """Run a prediction. kwargs holds the parsed arguments, by field name."""
    accept = kwargs.get("accept", "application/json")
    args = {
        name: describe_file(value) if isinstance(value, UploadedFile) else value
        for name, value in kwargs.items()
    }
    number = kwargs.get("number", 1)
    ratio = kwargs.get("ratio", 0.5)

    if accept == "image/png":  # return bytes (or io.BytesIO, or an open file)
        rgb = (
            number * 255 // 100,
            round(ratio * 255),
            255 if kwargs.get("flag") else 0,
        )
        return make_png(8, 8, rgb)
    if accept == "text/plain":  # return a str
        return "".join(
            f"{name}={json.dumps(value, sort_keys=True)}\n"
            for name, value in sorted(args.items())
        )
    # application/json (or */*): return something JSON-able that matches `schema`.
    return {
        "model": "demo",
        "warmed": WARMED,
        "score": number * ratio,
        "received": sorted(kwargs),
        "args": args,
    }


def get_train_args():
    """The arguments of train, as ``{name: marshmallow field}``."""
    return {
        "epochs": fields.Int(
            load_default=1,
            validate=validate.Range(min=1),
            metadata={"description": "Number of epochs"},
        ),
        "lr": fields.Float(load_default=0.1, metadata={"description": "Learning rate"}),
    }


def train(**kwargs):
    """Train the model; the return value is stored as the training's output."""
    return dict(kwargs)
