"""A model that is usually fast and misbehaves on request (the issue's scenarios).

``predict(mode=...)`` answers ``{"pid": <worker pid>, ...}`` unless it dies:

- ``ok``: at once;
- ``segfault``: the worker dies of SIGSEGV;
- ``slow``: writes the file ``started`` (if given), then waits until the file
  ``release`` exists, ``seconds`` at most (with no ``release``: sleeps
  ``seconds``); tests order their requests by these files, not by sleeps;
- ``leak``: keeps ``mb`` MiB (written, so resident) for the rest of the
  worker's life; a ``MemoryError`` from that allocation is left to deepaas;
- ``sleep``: sleeps ``seconds``.

``data`` is an optional upload (shutdown tests send one and never finish it).
"""

import ctypes
import os
import time

from marshmallow import fields

LEAKED = []


def get_predict_args():
    return {
        "mode": fields.Str(load_default="ok"),
        "seconds": fields.Float(load_default=1.0),
        "mb": fields.Int(load_default=1),
        "started": fields.Str(load_default=""),
        "release": fields.Str(load_default=""),
        "data": fields.Raw(
            required=False, metadata={"type": "file", "location": "form"}
        ),
    }


def _wait_for_release(started, release, seconds):
    if started:
        with open(started, "w") as fh:
            fh.write(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if release and os.path.exists(release):
            return True
        time.sleep(0.01)
    return False


def predict(mode="ok", seconds=1.0, mb=1, started="", release="", data=None, **kwargs):
    pid = os.getpid()
    if mode == "ok":
        return {"pid": pid}
    if mode == "segfault":
        ctypes.string_at(0)
    if mode == "slow":
        released = _wait_for_release(started, release, seconds)
        return {"pid": pid, "released": released}
    if mode == "leak":
        LEAKED.append(bytearray(mb << 20))  # zero-filled: resident, not only mapped
        return {"pid": pid, "leaked_mb": len(LEAKED) * mb}
    if mode == "sleep":
        time.sleep(seconds)
        return {"pid": pid}
    raise ValueError(f"unknown mode {mode!r}")
