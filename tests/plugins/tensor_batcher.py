"""A tensor-native plugin whose signature has a batch axis (up to 4 rows).

``x`` is FP32 ``[-1, -1]``: rows of any width (requests of another width
are another group: they are not batched together). ``infer(x)`` answers
``y = x * 10`` and ``rows``, the rows of the call it was part of (one per
row). Each call appends a line to ``$TENSOR_EVENTS/calls`` when that
variable is set: the JSON list of its rows' first values (``x[:, 0]``), so
a test reads which batches formed from what the model saw, not from timing.

Marks in ``x[:, 0]``: -7 holds the call until ``$TENSOR_EVENTS/open``
exists (so that requests queue up behind it), -8 raises, -9 answers one
row too few, -6 is refused as a runtime refuses an input (a
``TensorInputError``, a 400).
"""

import json
import os
import time

import numpy as np

from deepaas.exceptions import TensorInputError


def get_infer_signature():
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [-1]},
            {"name": "rows", "datatype": "INT64", "shape": [1]},
        ],
        "max_batch_size": 4,
    }


def infer(x):
    events = os.environ.get("TENSOR_EVENTS")
    marks = set(x[:, 0].tolist())
    if events:
        with open(os.path.join(events, "calls"), "a") as fh:
            fh.write(json.dumps(x[:, 0].tolist()) + "\n")
        if -7 in marks:
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(events, "open")):
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never opened the gate")
                time.sleep(0.005)
    if -6 in marks:
        raise TensorInputError("input 'x': the model refuses -6")
    if -8 in marks:
        raise ValueError("the model refused -8")
    rows = len(x) - 1 if -9 in marks else len(x)
    return {
        "y": (x * 10)[:rows],
        "rows": np.full((rows, 1), len(x), dtype=np.int64),
    }
