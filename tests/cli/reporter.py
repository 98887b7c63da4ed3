"""A plugin whose train() reports progress, and whose predict() has an
argument called ``model-name`` (the CLI's own global option)."""

from marshmallow import fields

from deepaas.training import report


def get_predict_args():
    return {"model-name": fields.Str(load_default="mine")}


def predict(**kwargs):
    return {"model-name": kwargs["model-name"]}


def get_train_args():
    return {"steps": fields.Int(load_default=3)}


def train(steps):
    for step in range(steps):
        report(step=step, loss=1.0 / (step + 1))
    return {"steps": steps}
