"""The API's current view of each model, replaceable while the app serves.

aiohttp's routes are fixed once the app starts, so ``deepaas-run --reload``
does not change routes: the handlers read the model's current view (the
:class:`~deepaas.model.v2.wrapper.ModelWrapper`, the argument parsers) from
a holder each request (one attribute read), and :meth:`ModelViews.refresh`
swaps those holders for a new wrapper, with the model's operations in the
API documents.

A refresh is two-phase: every route module registered a *preparer*
(:meth:`ModelViews.on_refresh`) that builds what it needs from the new
wrapper (a parser, an operation) and returns a commit; when every preparer
has succeeded the commits run, together, on the event loop with no await
between them, so a request sees the old view or the new one, never half.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Generic, TypeVar

from aiohttp import web

from deepaas.api.openapi import Operation, SpecBuilder
from deepaas.model.v2.wrapper import ModelWrapper

T = TypeVar("T")

Commit = Callable[[], None]
Preparer = Callable[[ModelWrapper], Commit]


class Holder(Generic[T]):
    """One swappable reference (the handlers read ``value``)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


class ModelViews:
    """The served models' wrappers (``wrappers``, updated in place) and what
    the route modules derived from them."""

    def __init__(self, wrappers: dict[str, ModelWrapper], spec: SpecBuilder) -> None:
        self.wrappers = wrappers
        self.spec = spec
        self._preparers: dict[str, list[Preparer]] = {}

    def on_refresh(self, name: str, preparer: Preparer) -> None:
        """Call ``preparer(new_wrapper)`` when model ``name`` is refreshed."""
        self._preparers.setdefault(name, []).append(preparer)

    def refresh(self, name: str, wrapper: ModelWrapper) -> None:
        """Serve ``wrapper`` as model ``name`` from now on.

        Raises what a preparer raised (a plugin whose arguments cannot be
        parsed, say): nothing is changed then.
        """
        commits = [prepare(wrapper) for prepare in self._preparers.get(name, [])]
        for commit in commits:
            commit()
        self.wrappers[name] = wrapper

    def update_operation(self, method: str, path: str, **changes: object) -> Commit:
        """A commit replacing fields of the documented operation
        ``method path`` (the documents are built again when next asked)."""
        spec = self.spec
        index = next(
            i
            for i, op in enumerate(spec.operations)
            if op.method == method and op.path == path
        )
        new: Operation = dataclasses.replace(spec.operations[index], **changes)  # type: ignore[arg-type]

        def commit() -> None:
            spec.operations[index] = new
            spec.changed()

        return commit


VIEWS = web.AppKey("model_views", ModelViews)
