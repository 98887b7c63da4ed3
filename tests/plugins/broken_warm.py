"""A plugin whose warm() always fails: the model must answer 503, not hang."""


def warm():
    raise RuntimeError("weights not found")


def predict(**kwargs):
    return "never"
