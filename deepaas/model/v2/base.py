"""The optional base class a v2 plugin may inherit from (kept import path)."""

from __future__ import annotations

import abc
from typing import Any


class BaseModel(abc.ABC):
    """Every method a DEEPaaS v2 plugin may define.

    Inheriting is optional: deepaas looks attributes up by name, and a missing
    method or one that raises :class:`NotImplementedError` falls back to the
    behaviour described in the docs (an empty argument list, a 501 answer...).
    """

    schema: Any = None
    """``None``, a dict of marshmallow fields, or a ``marshmallow.Schema``
    subclass validating the JSON output of :meth:`predict`."""

    @abc.abstractmethod
    def get_metadata(self) -> dict[str, Any]:
        """Describe the model (id, name, description, author, ...)."""
        raise NotImplementedError()

    @abc.abstractmethod
    def warm(self) -> None:
        """Load weights, allocate memory: called once in every worker."""
        raise NotImplementedError()

    @abc.abstractmethod
    def get_predict_args(self) -> dict[str, Any]:
        """Return ``{name: marshmallow field}`` for :meth:`predict`."""
        raise NotImplementedError()

    @abc.abstractmethod
    def predict(self, **kwargs: Any) -> Any:
        """Run one prediction with the parsed arguments."""
        raise NotImplementedError()

    @abc.abstractmethod
    def get_train_args(self) -> dict[str, Any]:
        """Return ``{name: marshmallow field}`` for :meth:`train`."""
        raise NotImplementedError()

    @abc.abstractmethod
    def train(self, **kwargs: Any) -> Any:
        """Run one training with the parsed arguments."""
        raise NotImplementedError()
