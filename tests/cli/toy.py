"""A plugin for the CLI tests: no get_train_args, prints, fails on request."""

import os

from marshmallow import fields

WARM_CALLS = []


def warm():
    WARM_CALLS.append(os.getpid())


def get_predict_args():
    return {
        "mode": fields.Str(load_default="ok", metadata={"description": "What to do"}),
        "count": fields.Int(required=True, metadata={"description": "How many"}),
        "docs": fields.List(
            fields.Raw(metadata={"type": "file"}),
            metadata={"type": "file", "description": "Several files"},
        ),
    }


def predict(mode="ok", count=0, docs=()):
    if mode == "raise":
        raise ValueError("boom")
    if mode == "print":
        print("noise from the plugin")
    if mode == "unserializable":
        return {"obj": object()}
    return {
        "count": count,
        "warm_calls": len(WARM_CALLS),
        "docs": [
            {
                "name": d.name,
                "original_filename": d.original_filename,
                "content_type": d.content_type,
                "exists": os.path.exists(d.filename),
                "path": d.filename,
                "text": open(d.filename).read(),
            }
            for d in docs
        ],
    }


def train(**kwargs):
    return {"trained": True, "kwargs": kwargs}
