"""Class plugins whose predict arguments deepaas must refuse at start-up."""

from webargs import fields


class ListArgs:
    def get_predict_args(self):
        return [fields.Int()]


class NotAField:
    def get_predict_args(self):
        return {"x": 3}


class UnknownLocation:
    def get_predict_args(self):
        return {"x": fields.Int(metadata={"location": "cookies"})}


class BadTrainArgs:
    def get_train_args(self):
        return "epochs"


class FieldClasses:
    """Field classes rather than instances are accepted (instantiated)."""

    def get_predict_args(self):
        return {"x": fields.Int, "y": fields.Str(required=True)}
