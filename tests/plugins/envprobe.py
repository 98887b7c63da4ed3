"""Reports the device environment its worker process sees."""

import os

from marshmallow import fields


def get_predict_args():
    return {"nap": fields.Float(load_default=0.0)}


def predict(nap=0.0):
    import time

    time.sleep(nap)
    return {
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "deepaas_device": os.environ.get("DEEPAAS_DEVICE"),
        "pid": os.getpid(),
    }
