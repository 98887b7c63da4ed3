"""Trivial DEEPaaS model plugin taking a file, for the batch-mode benchmark.

The model reads its input and does nothing else, so the throughput measured
is the framework's: getting a file to the plugin and its answer back (over
HTTP to a client, or into an output file in batch mode).
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields

__version__ = "0.1.0"


def get_metadata() -> dict[str, Any]:
    """Return the model's metadata."""
    return {
        "name": "bench_files",
        "version": __version__,
        "summary": "Trivial model that reads a file, for the batch benchmark.",
        "author": "DEEPaaS developers",
        "license": "Apache-2.0",
    }


def get_predict_args() -> dict[str, fields.Field]:
    """Return the arguments accepted by ``predict``."""
    return {
        "x": fields.Int(
            load_default=0,
            metadata={"description": "An integer; the model answers x + 1."},
        ),
        "data": fields.Field(
            required=True,
            metadata={"type": "file", "description": "A file; its size is returned."},
        ),
    }


def predict(**kwargs: Any) -> dict[str, int]:
    """Return ``{"echo": x + 1, "size": len(data)}``."""
    with open(kwargs["data"].filename, "rb") as fh:
        size = len(fh.read())
    return {"echo": int(kwargs.get("x", 0)) + 1, "size": size}
