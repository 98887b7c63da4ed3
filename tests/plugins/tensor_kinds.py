"""A tensor-native plugin with one input of each datatype the OIP tests
send (no batch axis), and a predict of its own (its DEEPaaS route stays).

``infer`` answers from each input: ``a`` doubled, ``i`` plus one, ``s``
upper-cased, ``h`` as it came, ``b`` negated, and ``writable``: whether
every array it got was writable (the worker copies read-only ones).
"""

import numpy as np
from marshmallow import fields


def get_infer_signature():
    return {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2, -1]},
            {"name": "i", "datatype": "INT64", "shape": [-1]},
            {"name": "s", "datatype": "BYTES", "shape": [-1]},
            {"name": "h", "datatype": "FP16", "shape": [-1]},
            {"name": "b", "datatype": "BOOL", "shape": [-1]},
        ],
        "outputs": [
            {"name": "a2", "datatype": "FP32", "shape": [2, -1]},
            {"name": "i1", "datatype": "INT64", "shape": [-1]},
            {"name": "upper", "datatype": "BYTES", "shape": [-1]},
            {"name": "h", "datatype": "FP16", "shape": [-1]},
            {"name": "nb", "datatype": "BOOL", "shape": [-1]},
            {"name": "writable", "datatype": "BOOL", "shape": [1]},
        ],
    }


def infer(a, i, s, h, b):
    arrays = (a, i, s, h, b)
    return {
        "a2": a * 2,
        "i1": i + 1,
        "upper": np.array([bytes(x).upper() for x in s], dtype=object),
        "h": h,
        "nb": ~b,
        "writable": np.array([all(x.flags.writeable for x in arrays)]),
    }


def get_predict_args():
    return {"x": fields.Int(load_default=1)}


def predict(x):
    return {"predicted": x}
