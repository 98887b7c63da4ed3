"""Training jobs: each runs in its own process holding a lease on its devices.

Plugin code calls :func:`report` from ``train()`` to publish its progress::

    from deepaas.training import report

    def train(epochs=10, **kwargs):
        for epoch in range(epochs):
            loss = ...
            report(epoch=epoch, loss=loss)

The latest value of each key appears in the training's record
(``progress``) and in ``/metrics`` (``deepaas_training_progress``); every
value is kept in the training's history (``GET .../train/{uuid}/metrics``,
:mod:`deepaas.training.history`). Conventions (docs/training.md): report
``step`` and ``total`` (or ``epoch`` and ``epochs``), the units *done* so
far and how many there are, and deepaas shows a progress bar and an ETA.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from typing import Any

from deepaas.training.context import TrainingContext, current, progress_sink

__all__ = ["TrainingContext", "current", "report"]

_warned_outside = False


def report(**metrics: Any) -> None:
    """Publish the latest values of some metrics of the running training.

    Values must be JSON-able (numbers are also exported to Prometheus, and
    drawn as curves; other values, such as a phase name, are kept as text).
    Under ``deepaas-cli train`` they are printed to stderr. Anywhere else
    outside a training (a predict worker, a notebook) they are ignored, with
    one warning per process (a training loop would otherwise warn on every
    call).
    """
    global _warned_outside
    ctx = current()
    send = ctx.send if ctx is not None else progress_sink()
    if send is None:
        if not _warned_outside:
            _warned_outside = True
            warnings.warn(
                "deepaas.training.report() called outside a training: ignored "
                "(this warning is shown once)",
                RuntimeWarning,
                stacklevel=2,
            )
        return
    clean: dict[str, Any] = {}
    for key, value in metrics.items():
        if hasattr(value, "item") and callable(value.item):  # numpy/torch scalars
            with contextlib.suppress(TypeError, ValueError):
                value = value.item()
        # NaN and infinities travel as they are: a gap in the history's
        # curves; the record shows their names (JSON has none).
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"report({key}=...): the value must be JSON-able, got "
                f"{type(value).__name__}"
            ) from exc
        clean[key] = value
    if clean:
        send(clean)
