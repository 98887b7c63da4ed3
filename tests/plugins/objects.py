"""Entry points that name objects rather than modules."""


class Model:
    """A class plugin: deepaas instantiates it with no arguments."""

    instances = 0

    def __init__(self):
        Model.instances += 1
        self.instance_number = Model.instances

    def get_metadata(self):
        return {"name": "objects.Model", "instance": self.instance_number}


class NeedsArguments:
    """Instantiating this without arguments fails."""

    def __init__(self, weights):
        self.weights = weights


class _Prebuilt:
    def __init__(self, label):
        self.label = label

    def get_metadata(self):
        return {"label": self.label}


# An entry point may name an instance: it is used as is.
INSTANCE = _Prebuilt("prebuilt")
