"""A plugin that fails in every way a worker can fail, chosen by ``mode``.

``warm()`` counts its calls in a file next to the worker's pid, so tests can
tell that a respawned worker was warmed again.
"""

import ctypes
import io
import os
import signal
import sys
import threading
import time

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


class DyingStream(io.RawIOBase):
    """A 2 MiB file object (its result goes to a file in the scratch dir)
    whose ``close()``, once the worker copied it, ends the worker as ``how``
    says: after the result file is written, before the answer is sent."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.left = 2 << 20

    def readable(self):
        return True

    def readinto(self, buffer):
        size = min(len(buffer), self.left)
        buffer[:size] = b"x" * size
        self.left -= size
        return size

    def close(self):
        if self.how == "exit":
            os._exit(7)
        if self.how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.how == "hang":
            time.sleep(60)  # past the deadline: the worker is killed
        super().close()


def predict(mode="ok"):
    if mode.startswith("file_then_"):
        return DyingStream(mode[len("file_then_") :])
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
