"""A plugin that starts a ``sleep 300`` in a session of its own (out of its
worker's process group) and writes its pid to ``$SPAWNER_PIDS``; then does
what ``mode`` says: return, die (``os._exit``) or hang past its deadline.
``train()`` starts one too, then returns."""

import os
import subprocess
import time

from marshmallow import fields

PIDS = os.environ.get("SPAWNER_PIDS")


def get_predict_args():
    return {"mode": fields.Str(load_default="return")}


def get_train_args():
    return {}


def _start_sleeper() -> int:
    sleeper = subprocess.Popen(
        ["sleep", "300"],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if PIDS:
        with open(PIDS, "a") as fh:
            fh.write(f"{sleeper.pid}\n")
    return sleeper.pid


def predict(mode="return"):
    pid = _start_sleeper()
    if mode == "exit":
        os._exit(7)
    if mode == "hang":
        time.sleep(300)
    return {"sleeper": pid, "worker": os.getpid()}


def train():
    return {"sleeper": _start_sleeper()}
