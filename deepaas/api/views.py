"""The API's current view of each model, replaceable while the app serves.

aiohttp's routes are fixed once the app starts, so ``deepaas-run --reload``
does not change routes: the handlers read the model's current view (the
:class:`~deepaas.model.v2.wrapper.ModelWrapper`, the argument parsers) from
a holder each request (one attribute read), and :meth:`ModelViews.refresh`
swaps those holders for a new wrapper, with the model's operations in the
API documents.

A refresh is two-phase. :meth:`ModelViews.prepare` builds everything the
new view needs, and may run off the event loop: every route module
registered a *preparer* (:meth:`ModelViews.on_refresh`) that builds what it
needs from the new wrapper (the metadata document, a parser, an operation)
and returns a commit; then both API documents are built with the new
operations. Anything that fails there (the plugin's ``get_metadata()``
raising, arguments that cannot be documented) raises :class:`RefreshError`
and changes nothing: what a request would have failed on fails here, once.
When every part is built, the commit runs on the event loop with no await
between its steps, so a request sees the old view or the new one, never
half.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from aiohttp import web

from deepaas.api.openapi import Operation, SpecBuilder
from deepaas.model.v2.wrapper import ModelError, ModelWrapper

T = TypeVar("T")

Commit = Callable[[], None]
Preparer = Callable[[ModelWrapper], Commit]


class Holder(Generic[T]):
    """One swappable reference (the handlers read ``value``)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


class ViewError(Exception):
    """What a preparer raises when the model cannot be served as it is; the
    message says why (the plugin's exception is its ``__cause__``)."""


class RefreshError(Exception):
    """A part of a model's new view could not be built; the message says
    which part and why, ``__cause__`` is what was raised (its traceback
    points into the plugin)."""

    def __init__(self, what: str, cause: Exception) -> None:
        # These say what to fix; anything else is named.
        if isinstance(cause, (ModelError, ViewError)):
            super().__init__(str(cause))
        else:
            super().__init__(f"{what}: {describe(cause)}")


def describe(exc: BaseException) -> str:
    """``Type: message``, or the type alone when there is no message."""
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


class ModelViews:
    """The served models' wrappers (``wrappers``, updated in place) and what
    the route modules derived from them."""

    def __init__(self, wrappers: dict[str, ModelWrapper], spec: SpecBuilder) -> None:
        self.wrappers = wrappers
        self.spec = spec
        self._preparers: dict[str, list[tuple[str, Preparer]]] = {}
        self._staged: list[tuple[int, Operation]] | None = None

    def on_refresh(self, name: str, preparer: Preparer, what: str) -> None:
        """Call ``preparer(new_wrapper)`` when model ``name`` is refreshed;
        ``what`` names what it builds, for the error when it raises (e.g.
        ``"get_metadata()"``)."""
        self._preparers.setdefault(name, []).append((what, preparer))

    def prepare(self, name: str, wrapper: ModelWrapper) -> Commit:
        """Build model ``name``'s view of ``wrapper``, API documents included
        (off the event loop if wished), and return the commit that serves
        it (to run on the event loop).

        Raises :class:`RefreshError` when a part cannot be built: nothing is
        changed then.
        """
        self._staged = []
        try:
            commits = []
            for what, prepare in self._preparers.get(name, []):
                try:
                    commits.append(prepare(wrapper))
                except Exception as exc:
                    raise RefreshError(what, exc) from exc
            operations = list(self.spec.operations)
            for index, operation in self._staged:
                operations[index] = operation
        finally:
            self._staged = None
        try:
            documents = self.spec.build(operations)
        except Exception as exc:
            raise RefreshError(
                "the API documents (/swagger.json, /openapi.json) cannot be built",
                exc,
            ) from exc

        def commit() -> None:
            for step in commits:
                step()
            self.wrappers[name] = wrapper
            self.spec.use(operations, documents)

        return commit

    def refresh(self, name: str, wrapper: ModelWrapper) -> None:
        """Serve ``wrapper`` as model ``name`` from now on (:meth:`prepare`
        and commit, here)."""
        self.prepare(name, wrapper)()

    def update_operation(self, method: str, path: str, **changes: Any) -> Commit:
        """A commit replacing fields of the documented operation
        ``method path``. Called by a preparer, the new operation goes into
        the documents :meth:`prepare` builds."""
        spec = self.spec
        index = next(
            i
            for i, op in enumerate(spec.operations)
            if op.method == method and op.path == path
        )
        new: Operation = dataclasses.replace(spec.operations[index], **changes)
        if self._staged is not None:
            self._staged.append((index, new))

        def commit() -> None:
            spec.operations[index] = new
            spec.changed()

        return commit


VIEWS = web.AppKey("model_views", ModelViews)
