"""A batching plugin that talks while it works: print, stderr, logging (the
request ids on a worker's lines, tests/access/test_request_ids.py).

``gate``: the call waits until that file exists (so that calls queue behind
it and form a batch, as an event, not after a guessed delay); ``fail``
raises, so that the server logs an error about the request.
"""

import logging
import os
import sys
import time

from marshmallow import fields

LOG = logging.getLogger("chatty")
batching = {"max_batch_size": 4, "max_delay_ms": 0}


def get_predict_args():
    return {
        "word": fields.Str(load_default="hello"),
        "gate": fields.Str(load_default=""),
        "fail": fields.Bool(load_default=False),
    }


def predict(**kwargs):
    return predict_batch([kwargs])[0]


def predict_batch(batch):
    words = "+".join(item["word"] for item in batch)
    for item in batch:
        deadline = time.monotonic() + 60
        while item["gate"] and not os.path.exists(item["gate"]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{item['gate']} never appeared")
            time.sleep(0.01)
    print(f"chatty prints {words}")
    sys.stderr.write(f"chatty writes {words}\nover two lines\n")
    LOG.warning("chatty logs %s", words)  # Python's last-resort handler: stderr
    if any(item["fail"] for item in batch):
        raise ValueError(f"chatty fails on {words}")
    return [{"word": item["word"], "batch": len(batch)} for item in batch]


def get_train_args():
    return {"epochs": fields.Int(load_default=1)}


def train(**kwargs):
    print("chatty trains")
    return {"epochs": kwargs["epochs"]}
