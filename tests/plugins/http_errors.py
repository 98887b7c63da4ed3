"""Raises aiohttp HTTP errors the ways published plugins write them.

``kind`` picks one; ``DEEPaaS 1.x`` plugins passed an exception as
``reason``, which current aiohttp refuses with a ``TypeError`` while the
exception is made.
"""

from aiohttp import web
from webargs import fields


class ImageTooSmall(web.HTTPUnprocessableEntity):
    """A plugin's own HTTP error class, with its own constructor."""

    def __init__(self, size):
        super().__init__(reason=ValueError(f"the image is {size} px, at least 32"))


MAKERS = {
    "reason_exception": lambda: web.HTTPBadRequest(
        reason=ValueError("the image is too small")
    ),
    "reason_lines": lambda: web.HTTPBadRequest(reason="line one\nline two"),
    "reason_int": lambda: web.HTTPConflict(reason=42),
    "text": lambda: web.HTTPBadRequest(text="why"),
    "text_not_str": lambda: web.HTTPBadRequest(text=KeyError("no such key")),
    "reason": lambda: web.HTTPBadRequest(reason="custom reason"),
    "reason_and_text": lambda: web.HTTPBadRequest(reason="Invalid image", text="why"),
    "plain": lambda: web.HTTPNotFound(),
    "own_class": lambda: ImageTooSmall(8),
    "bad_headers": lambda: web.HTTPForbidden(reason="closed", headers=42),
}


def get_predict_args():
    return {"kind": fields.Str(required=True)}


def predict(kind):
    if kind == "type_error":
        raise TypeError("not an HTTP error")
    raise MAKERS[kind]()


def get_train_args():
    return {"kind": fields.Str(required=True)}


def train(kind):
    raise MAKERS[kind]()
