"""A plugin that fails in every way a worker can fail, chosen by ``mode``.

``warm()`` counts its calls in a file next to the worker's pid, so tests can
tell that a respawned worker was warmed again.
"""

import ctypes
import os
import signal
import sys
import threading

from marshmallow import fields

WARM_LOG = os.environ.get("CRASHY_WARM_LOG")
STARTED_LOG = os.environ.get("CRASHY_STARTED_LOG")  # "sleep" calls that began


def warm():
    if WARM_LOG:
        with open(WARM_LOG, "a") as fh:
            fh.write(f"{os.getpid()}\n")


def get_predict_args():
    return {"mode": fields.Str(load_default="ok")}


class UnpicklableError(Exception):
    """Carries a lock: pickling it fails (DEEPaaS 2.x hung on this, #174)."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def predict(mode="ok"):
    if mode == "ok":
        return {"pid": os.getpid()}
    if mode == "raise":
        raise ValueError("boom")
    if mode == "unpicklable_exc":
        raise UnpicklableError("cannot pickle me")
    if mode == "unpicklable_result":
        return {"lock": threading.Lock()}
    if mode == "generator":
        return (i for i in range(3))
    if mode == "exit":
        os._exit(7)
    if mode == "sysexit":
        sys.exit(3)
    if mode == "segfault":
        ctypes.string_at(0)
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "nap":
        import time

        time.sleep(1)
        return {"pid": os.getpid()}
    if mode == "sleep":
        import time

        if STARTED_LOG:
            with open(STARTED_LOG, "a") as fh:
                fh.write(f"{os.getpid()}\n")
        time.sleep(30)
        return "slept"
    if mode == "big_slow":
        import time

        time.sleep(1)
        return b"x" * (2 << 20)  # over the inline limit: sent as a temp file
    if mode == "print":
        print("crashy-marker-output", flush=True)
        return "printed"
    raise KeyError(mode)
