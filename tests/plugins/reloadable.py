"""A model whose train() saves a value that warm() loads (reload tests).

The weights file is ``$RELOADABLE_WEIGHTS`` (each test sets its own).
``train(value=...)`` writes ``value`` there (atomically); ``warm()`` reads it
(``"initial"`` while there is none) and ``predict()`` answers it with the
worker's pid. In a predict worker (not in a training, which warms too:
``deepaas.training.current()`` tells them apart), ``warm()`` raises when
the value starts with ``bad``, and waits while the file ``<weights>.hold``
exists (tests hold a replacement in its warm).
"""

import os
import time

from marshmallow import fields

from deepaas.training import current

HOLD_MAX_S = 60.0  # a held warm never outlives the test that holds it

_loaded = {"value": "initial"}


def _path():
    return os.environ["RELOADABLE_WEIGHTS"]


def get_metadata():
    return {"name": "reloadable"}


def warm():
    path = _path()
    in_worker = current() is None  # a predict worker, not a training
    if in_worker:
        deadline = time.monotonic() + HOLD_MAX_S
        while os.path.exists(path + ".hold") and time.monotonic() < deadline:
            time.sleep(0.01)
    if os.path.exists(path):
        with open(path) as fh:
            value = fh.read()
        if in_worker and value.startswith("bad"):
            raise RuntimeError(f"cannot load the weights: {value!r} is corrupt")
        _loaded["value"] = value


def get_predict_args():
    return {}


def predict():
    return {"value": _loaded["value"], "pid": os.getpid()}


def get_train_args():
    return {"value": fields.Str(required=True)}


def train(value):
    path = _path()
    with open(path + ".tmp", "w") as fh:
        fh.write(value)
    os.replace(path + ".tmp", path)  # a worker never reads half a file
    return {"saved": value}
