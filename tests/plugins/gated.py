"""A model whose train() ends when a file appears (training tests that need
"this training finishes now" as an event, not after a guessed delay).

It writes nothing to its log: the disk-full test runs it on a full disk.
"""

import os
import time

from marshmallow import fields


def get_metadata():
    return {"name": "gated"}


def get_train_args():
    return {
        "gate": fields.Str(required=True),
        "data": fields.Field(
            load_default=None, metadata={"type": "file", "location": "form"}
        ),
    }


def train(gate, data=None):
    deadline = time.monotonic() + 120
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never appeared")
        time.sleep(0.01)
    return {"gate": gate}
