"""A training whose result holds NaN and infinities (a diverged run)."""

import math

import numpy as np
from marshmallow import fields


def get_train_args():
    return {"epochs": fields.Int(load_default=2)}


def train(epochs=2):
    return {
        "loss": math.nan,
        "curve": np.array([1.0, np.inf, np.nan])[: epochs + 1],
        "best": -math.inf,
        "epochs": epochs,
    }
