"""Trivial DEEPaaS model plugin for the predict-overhead benchmark.

The model does (almost) no work, so the throughput measured against it is the
throughput of the framework itself: routing, argument parsing, the call into
the plugin and the serialisation of the answer.
"""

from __future__ import annotations

import time
from typing import Any

from marshmallow import fields

__version__ = "0.1.0"


def get_metadata() -> dict[str, Any]:
    """Return the model's metadata."""
    return {
        "name": "bench_trivial",
        "version": __version__,
        "summary": "Trivial model used to measure DEEPaaS predict overhead.",
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
    }


def predict(**kwargs: Any) -> dict[str, int]:
    """Return ``{"echo": x + 1}``."""
    return {"echo": int(kwargs.get("x", 0)) + 1}


def get_train_args() -> dict[str, fields.Field]:
    """Return the arguments accepted by ``train``."""
    return {
        "seconds": fields.Float(
            load_default=60.0,
            metadata={"description": "How long the training sleeps."},
        ),
    }


def train(**kwargs: Any) -> dict[str, float]:
    """Sleep ``seconds`` (a training that holds no CPU), for isolation tests."""
    seconds = float(kwargs.get("seconds", 60.0))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.1, deadline - time.monotonic()))
    return {"slept": seconds}
