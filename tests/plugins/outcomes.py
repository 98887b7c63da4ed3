"""Predict outcomes chosen by ``mode``: errors of every kind, numpy output,
and printing a marker (for the debug endpoint)."""

import numpy as np
from aiohttp import web
from webargs import fields


def get_metadata():
    return {"id": "outcomes-id", "extra": {"nested": [1, 2]}}


def get_predict_args():
    return {
        "mode": fields.Str(load_default="ok"),
        "marker": fields.Str(load_default=""),
    }


def predict(mode="ok", marker=""):
    if mode == "ok":
        return {"ok": True}
    if mode == "boom":
        raise ValueError("boom")
    if mode == "label":  # an error message holding what the client sent
        raise ValueError(f"unknown label {marker}")
    if mode == "http400":
        raise web.HTTPBadRequest(reason="nope")
    if mode == "notimpl":
        raise NotImplementedError("not yet")
    if mode == "numpy":
        return {"array": np.arange(3), "scalar": np.float32(1.5), "int": np.int64(7)}
    if mode == "print":
        print(f"printed {marker}", flush=True)
        return {"printed": marker}
    raise KeyError(mode)
