"""A model whose train() reports like a long training loop, for
``benchmarks/dashboard_responsive.py`` (served with ``--plugin``, not
installed).

``train(backlog, rate, live)``: ``backlog`` reports as fast as it can (what
a run at ``rate`` a second has left in the history after ``backlog / rate``
seconds), then ``rate`` reports a second for ``live`` seconds (the run
going on while the page watches). Each report holds six numbers: the
``step`` of the ``total`` (the x axis and the ETA) and four curves.
"""

import math
import time

from marshmallow import fields

from deepaas.training import report


def get_metadata():
    return {"name": "bench_dashboard"}


def get_predict_args():
    return {}


def predict():
    return {}


def get_train_args():
    return {
        "backlog": fields.Int(load_default=6000),
        "rate": fields.Float(load_default=10.0),
        "live": fields.Float(load_default=60.0),
    }


def _report(step: int, total: int) -> None:
    t = step / total
    wiggle = math.sin(step / 7.0)
    report(
        step=step,
        total=total,
        loss=math.exp(-4 * t) + 0.02 * wiggle,
        acc=1 - 0.9 * math.exp(-5 * t) + 0.01 * wiggle,
        lr=0.01 * 0.5 * (1 + math.cos(math.pi * t)),
        grad_norm=2.0 * math.exp(-2 * t) + 0.1 * abs(wiggle),
    )


def train(backlog=6000, rate=10.0, live=60.0):
    total = backlog + int(rate * live)
    for step in range(1, backlog + 1):
        _report(step, total)
    began = time.monotonic()
    for step in range(backlog + 1, total + 1):
        due = began + (step - backlog) / rate
        time.sleep(max(0.0, due - time.monotonic()))
        _report(step, total)
    return {"reports": total}
