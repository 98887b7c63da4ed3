"""warm() never returns (it waits 10 minutes); it writes its worker's pid
to ``$STUCK_WARM_PIDS`` first, so tests can tell its workers apart."""

import os
import time

PIDS = os.environ.get("STUCK_WARM_PIDS")


def warm():
    if PIDS:
        with open(PIDS, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    time.sleep(600)


def predict():
    return "never"
