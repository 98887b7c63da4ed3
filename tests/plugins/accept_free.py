"""An ``accept`` field without any validator (no choices): must not crash."""

from webargs import fields


def get_predict_args():
    return {"accept": fields.Str(load_default="application/json")}


def predict(accept="application/json"):
    if accept == "text/plain":
        return "plain text"
    return {"accept": accept}
