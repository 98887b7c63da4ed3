"""Predictions holding NaN and infinities (``kind`` picks where).

``with_schema`` (the same predict) has a response schema that allows them.
"""

import math

import numpy as np
from webargs import fields


def get_predict_args():
    return {"kind": fields.Str(load_default="plain")}


def predict(kind="plain"):
    if kind == "finite":
        return {"value": 0.5, "values": [1.0, 2.5]}
    if kind == "plain":
        return {"value": math.nan, "values": [math.inf, -math.inf, 1.5]}
    if kind == "numpy":
        return {
            "value": np.float32("nan"),
            "values": np.array([1.0, np.nan, np.inf, -np.inf]),
        }
    if kind == "nested":
        return {
            "value": 1.0,
            "values": [2.0],
            "deep": {
                "rows": [[{"x": (np.float64("-inf"), 3)}]],
                "nan_key": {math.nan: 1},
            },
            "matrix": np.full((2, 2), np.nan),
        }
    if kind == "bare":  # the whole prediction is a NaN
        return math.nan
    raise KeyError(kind)


class WithSchema:
    schema = {
        "value": fields.Float(allow_nan=True),
        "values": fields.List(fields.Float(allow_nan=True)),
    }

    def get_predict_args(self):
        return get_predict_args()

    def predict(self, kind="plain"):
        return predict(kind)
