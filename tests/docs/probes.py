"""The small plugins docs/plugins.md calls, so that its examples run.

Each class is one model, served by the page's server as
``--plugin probe=tests.docs.probes:Probe`` (see the ``docs-test-page``
marker at the top of docs/plugins.md); the others it calls are in
``tests/plugins/``.
"""

from __future__ import annotations

import ctypes
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError, fields


class Probe:
    """What a plugin's failure becomes: ``?mode=raise``, ``http`` or ``segv``."""

    def get_predict_args(self) -> dict[str, fields.Field]:
        return {"mode": fields.Str(load_default="raise")}

    def predict(self, mode: str) -> Any:
        if mode == "http":
            raise web.HTTPForbidden(reason="licence not accepted")
        if mode == "segv":
            ctypes.string_at(0)  # the worker dies of SIGSEGV
        raise ValueError("boom")


class Even(fields.Int):
    """The custom field of docs/plugins.md."""

    def _deserialize(
        self, value: Any, attr: Any, data: Any, **kwargs: Any
    ) -> int | None:
        n = super()._deserialize(value, attr, data, **kwargs)
        if n is not None and n % 2:
            raise ValidationError("Must be even.")
        return n


class Probe2:
    """A custom field's ValidationError is a 422 like any other."""

    def get_predict_args(self) -> dict[str, fields.Field]:
        return {"n": Even(required=True)}

    def predict(self, n: int) -> dict[str, int]:
        return {"n": n}


class Labelled(Schema):
    label = fields.Str(required=True)


class ProbeTuple:
    """Output that does not match the model's schema (``?noval=wrong``)."""

    schema = Labelled

    def get_predict_args(self) -> dict[str, fields.Field]:
        return {"noval": fields.Str(load_default="")}

    def predict(self, noval: str) -> dict[str, str]:
        return {"lbl": "cat"} if noval == "wrong" else {"label": "cat"}


class WarmFail:
    """A model whose weights are missing: warm() fails in every worker."""

    def warm(self) -> None:
        raise FileNotFoundError("weights.h5 not found")

    def predict(self) -> dict[str, str]:
        return {}


class MyModel:
    """A mapping argument (``d``) beside a file."""

    def get_predict_args(self) -> dict[str, fields.Field]:
        return {
            "d": fields.Dict(),
            "file": fields.Raw(metadata={"type": "file", "location": "form"}),
        }

    def predict(self, **kwargs: Any) -> dict[str, Any]:
        return {"d": kwargs.get("d"), "file": "file" in kwargs}
