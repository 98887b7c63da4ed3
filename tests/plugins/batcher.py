"""A batching plugin: reports the batch each request was part of.

``x == -1`` returns an exception instance for that request only; ``x == -2``
makes the whole ``predict_batch`` call raise; ``nap`` slows a batch down so
that the next one has time to fill.
"""

import os
import time

from marshmallow import fields

batching = {"max_batch_size": 4, "max_delay_ms": 0}


def get_predict_args():
    return {
        "x": fields.Int(load_default=0),
        "nap": fields.Float(load_default=0.0),
    }


def predict(**kwargs):
    return predict_batch([kwargs])[0]


def predict_batch(batch):
    if any(item["x"] == -2 for item in batch):
        raise RuntimeError("the whole batch failed")
    time.sleep(max(item["nap"] for item in batch))
    results = []
    for item in batch:
        if item["x"] == -1:
            results.append(ValueError(f"bad item {item['x']}"))
        else:
            results.append(
                {"x": item["x"], "batch_size": len(batch), "pid": os.getpid()}
            )
    return results
