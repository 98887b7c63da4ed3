"""A batching plugin with a file argument: batch mode hands it its inputs
through ``predict_batch``, as the server does with requests."""

import os

from marshmallow import fields

batching = {"max_batch_size": 4, "max_delay_ms": 0}


def get_predict_args():
    return {"data": fields.Field(metadata={"type": "file"})}


def predict(**kwargs):
    raise AssertionError("batch mode calls predict_batch")


def predict_batch(batch):
    results = []
    for item in batch:
        with open(item["data"].filename) as fh:
            text = fh.read()
        if text == "bad":
            results.append(ValueError("bad item"))
        else:
            results.append({"text": text, "batch_size": len(batch), "pid": os.getpid()})
    return results
