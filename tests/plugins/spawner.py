"""A plugin that starts a ``sleep 300`` in a session of its own (out of its
worker's process group) and writes its pid to ``$SPAWNER_PIDS``; then does
what ``mode`` says: return, die (``os._exit``) or hang past its deadline.
``train()`` starts one too, then returns.

``how``: ``session`` (``start_new_session=True``), ``daemon`` (a shell in
a session of its own that starts the sleep in the background and exits:
the sleep is init's child from then on), ``fork`` (a Python daemon that
forks twice and never execs: it shows the worker's starting environment,
not what the worker set in ``os.environ``), or ``background`` (a shell's
short-lived ``true &``: no sleeper, the ``true`` is an orphan that exits at
once)."""

import os
import subprocess
import time

from marshmallow import fields

PIDS = os.environ.get("SPAWNER_PIDS")


def get_predict_args():
    return {
        "mode": fields.Str(load_default="return"),
        "how": fields.Str(load_default="session"),
    }


def get_train_args():
    return {}


def _start_sleeper(how: str = "session") -> int:
    if how == "background":
        subprocess.run(["sh", "-c", "true & exit 0"], check=True)
        return 0
    if how == "fork":
        pid = _fork_daemon()
    elif how == "daemon":
        shell = subprocess.run(
            ["sh", "-c", "sleep 300 </dev/null >/dev/null 2>&1 & echo $!"],
            start_new_session=True,
            capture_output=True,
            check=True,
        )
        pid = int(shell.stdout)
    else:
        pid = subprocess.Popen(
            ["sleep", "300"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).pid
    if PIDS:
        with open(PIDS, "a") as fh:
            fh.write(f"{pid}\n")
    return pid


def _fork_daemon() -> int:
    """Fork, setsid, fork again: the grandchild sleeps, init's child once
    the middle one exits; no exec. Its pid, read from a pipe."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            os.closerange(0, write)  # the worker's socket and pipes too
            os.closerange(write + 1, 1024)
            os.write(write, b"%d" % os.getpid())
            os.close(write)
            time.sleep(300)
        os._exit(0)
    os.close(write)
    os.waitpid(middle, 0)
    with os.fdopen(read, "rb") as fh:
        return int(fh.read())


def predict(mode="return", how="session"):
    pid = _start_sleeper(how)
    if mode == "exit":
        os._exit(7)
    if mode == "hang":
        time.sleep(300)
    return {"sleeper": pid, "worker": os.getpid()}


def train():
    return {"sleeper": _start_sleeper()}
