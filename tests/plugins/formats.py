"""Looks the ``accept`` value up in its own dict of formats, as real plugins
do (a ``KeyError`` for any value it does not list, ``*/*`` included).

Module level: ``accept`` read from the ``Accept`` header, choices led by a
binary type, no default of its own. :class:`QueryFormats`: ``accept`` read
from the query, form or JSON body, with a default that is not its first
choice. ``mode=echo`` answers the ``accept`` the plugin received, as JSON.
"""

from webargs import fields, validate

CHOICES = ["image/png", "text/plain", "application/json"]
FORMATS = {
    "image/png": b"\x89PNG\r\n\x1a\nnot really",
    "text/plain": "plain text",
    "application/json": {"format": "json"},
}


def get_predict_args():
    return {
        "mode": fields.Str(load_default="format"),
        # legacy keyword style, as DEEPaaS 1.x/2.x plugins wrote it
        "accept": fields.Str(validate=validate.OneOf(CHOICES), location="headers"),
    }


def predict(mode="format", accept=None):
    if mode == "echo":
        return {"accept": accept}
    return FORMATS[accept]


class QueryFormats:
    """accept from the arguments; its default is the plugin's second choice."""

    def get_predict_args(self):
        return {
            "mode": fields.Str(load_default="format"),
            "accept": fields.Str(
                load_default="application/json",
                validate=validate.OneOf(
                    CHOICES, error="{input} is not one of my formats: {choices}"
                ),
            ),
        }

    def predict(self, mode="format", accept=None):
        return predict(mode, accept)
