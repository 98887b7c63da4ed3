"""A plugin whose train() reports ``steps`` steps, of a total or not, then
waits for its ``gate`` (a FIFO the test writes to) before it returns: the
test reads the terminal at the moment it chooses, no sleeps."""

from marshmallow import fields

from deepaas.training import report


def get_train_args():
    return {
        "steps": fields.Int(load_default=20),
        "total": fields.Bool(load_default=True),
        "gate": fields.Str(load_default=""),
    }


def train(steps, total, gate):
    for step in range(1, steps + 1):
        if total:
            report(step=step, total=steps, loss=1.0 / step)
        else:
            report(loss=1.0 / step, phase="fit")
    if gate:
        with open(gate) as fifo:  # blocks until the test opens it to write
            fifo.read()
    return {"steps": steps}
