"""Tensor-native plugins whose declaration is wrong (and two that are not
declarations at all), for the loading tests."""

import numpy as np

GOOD = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
}


class NoInfer:
    def get_infer_signature(self):
        return GOOD


class NotADict:
    def get_infer_signature(self):
        return "x: FP32"

    def infer(self, x):
        return {"y": x}


class BadShape:
    def get_infer_signature(self):
        return {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": ["any"]}],
            "outputs": GOOD["outputs"],
        }

    def infer(self, x):
        return {"y": x}


class HugeBatch:
    """A batch axis larger than any batch deepaas gathers (a plugin's
    ``batching`` and --max-batch-size stop at 256)."""

    def get_infer_signature(self):
        return {**GOOD, "max_batch_size": 257}

    def infer(self, x):
        return {"y": x}


class InferHelper:
    """``infer`` here is the plugin's own helper: no signature, no OIP
    tensors of its own."""

    def predict(self, x=1):
        return self.infer(x)

    def infer(self, x):
        return np.asarray(x).tolist()


class NotYet:
    def get_infer_signature(self):
        raise NotImplementedError

    def infer(self, x):
        return {"y": x}
