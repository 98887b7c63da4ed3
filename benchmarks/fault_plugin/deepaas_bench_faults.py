"""A DEEPaaS plugin that crashes, leaks or stalls on request (fault benchmarks).

``predict`` answers ``{"pid": <worker pid>}`` at once unless asked to
misbehave: ``crash=true`` kills the worker with SIGSEGV, ``work_kb=N``
allocates N KiB of working memory for the call, ``leak_kb=N`` keeps N KiB
for the rest of the worker's life, ``sleep=S`` sleeps S seconds first.
An upload (``data``) is accepted and ignored.
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any

from marshmallow import fields

__version__ = "0.1.0"

_LEAKED: list[bytearray] = []


def get_metadata() -> dict[str, Any]:
    """Return the model's metadata."""
    return {
        "name": "bench_faults",
        "version": __version__,
        "summary": "Crashes, leaks or stalls on request, for the fault benchmarks.",
        "author": "DEEPaaS developers",
        "license": "Apache-2.0",
    }


def get_predict_args() -> dict[str, fields.Field]:
    """Return the arguments accepted by ``predict``."""
    return {
        "crash": fields.Bool(
            load_default=False,
            metadata={"description": "Die of SIGSEGV instead of answering."},
        ),
        "work_kb": fields.Int(
            load_default=0,
            metadata={"description": "KiB of working memory, freed on return."},
        ),
        "leak_kb": fields.Int(
            load_default=0,
            metadata={"description": "KiB kept for the rest of the worker's life."},
        ),
        "sleep": fields.Float(
            load_default=0.0,
            metadata={"description": "Seconds to sleep before answering."},
        ),
        "data": fields.Raw(
            required=False,
            metadata={
                "type": "file",
                "location": "form",
                "description": "An upload, ignored (for shutdown benchmarks).",
            },
        ),
    }


def predict(**kwargs: Any) -> dict[str, int]:
    """Answer ``{"pid": ...}``, after misbehaving as asked."""
    if kwargs.get("crash"):
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    # Working memory first, then the leak: once the worker's memory is
    # spent, every call fails in its working memory and nothing more leaks,
    # as with a real model whose heap filled up.
    work_kb = int(kwargs.get("work_kb") or 0)
    work = bytearray(work_kb << 10) if work_kb > 0 else None  # zero-filled
    leak_kb = int(kwargs.get("leak_kb") or 0)
    if leak_kb > 0:
        _LEAKED.append(bytearray(leak_kb << 10))  # zero-filled, hence resident
    del work
    seconds = float(kwargs.get("sleep") or 0.0)
    if seconds > 0:
        time.sleep(seconds)
    return {"pid": os.getpid()}
