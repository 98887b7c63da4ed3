"""A model that reads its uploads only once a gate file appears (the tests
of clients hanging up while their prediction runs, tests/api/test_hangup_uploads.py).

Every call (or batch) writes ``<gate>.started`` (the batch size) when it
starts, waits for ``<gate>``, then reads every upload and writes
``<gate>.read`` (the sizes it read): the test decides, by events, when the
model runs and when it reads, and sees that it could.
"""

import os
import time

from marshmallow import fields

batching = {"max_batch_size": 4, "max_delay_ms": 60_000}  # a full batch only

WAIT_S = 60.0


def get_metadata():
    return {"name": "hangup"}


def get_predict_args():
    return {
        "file": fields.Field(
            required=True, metadata={"type": "file", "location": "form"}
        ),
        "gate": fields.Str(required=True, metadata={"location": "form"}),
    }


def predict(**kwargs):
    return predict_batch([kwargs])[0]


def predict_batch(batch):
    gate = batch[0]["gate"]
    _publish(gate + ".started", str(len(batch)))
    deadline = time.monotonic() + WAIT_S
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never appeared")
        time.sleep(0.01)
    sizes = []
    for item in batch:
        with open(item["file"].filename, "rb") as upload:
            sizes.append(len(upload.read()))
    _publish(gate + ".read", " ".join(map(str, sizes)))
    return [{"size": size} for size in sizes]


def _publish(path, text):
    """Write ``text`` to ``path`` at once (a reader never sees half of it)."""
    with open(path + ".part", "w") as out:
        out.write(text)
    os.replace(path + ".part", path)
