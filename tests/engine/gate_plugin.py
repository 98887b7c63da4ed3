"""A plugin for tests/engine/test_worker_loop.py, run in the test's own
process: a call with ``wait`` true blocks until the test sets ``RELEASE``."""

import threading

from marshmallow import fields

RELEASE = threading.Event()


def get_predict_args():
    return {"wait": fields.Bool(load_default=False)}


def predict(wait=False):
    if wait and not RELEASE.wait(60):
        raise TimeoutError("the test never released the call")
    return {"waited": wait}
