"""A plugin whose predict and train raise from deep in its own code, so
that the server's log must show where (tests/e2e/test_logged_tracebacks.py).
With ``log=true``, predict catches the error and logs it with
``logging.exception`` (no logging set up: Python's last resort), then
answers.
"""

import logging

from marshmallow import fields

LOG = logging.getLogger("raising")


def get_predict_args():
    return {"x": fields.Int(load_default=1), "log": fields.Bool(load_default=False)}


def deep_in_the_model(x):
    raise ValueError(f"the model cannot take x={x}")


def predict(**kwargs):
    if not kwargs["log"]:
        return deep_in_the_model(kwargs["x"])
    try:
        deep_in_the_model(kwargs["x"])
    except ValueError:
        LOG.exception("predict could not use x=%s", kwargs["x"])
    return "logged"


def get_train_args():
    return {}


def deep_in_the_training():
    raise RuntimeError("the training diverged")


def train(**kwargs):
    return deep_in_the_training()
