"""What a training sees of itself while ``train()`` runs (in the job process).

:func:`current` answers the :class:`TrainingContext` of the training running
in this process, or ``None`` anywhere else (a predict worker, the API
process, deepaas-cli)::

    from deepaas.training import context

    ctx = context.current()
    if ctx is not None:
        ctx.logger.info("training %s on %s", ctx.uuid, ctx.devices)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class TrainingContext:
    """The running training: who it is and what it holds."""

    uuid: str  # the training's id, as clients see it
    model: str  # the model name
    devices: tuple[str, ...]  # as this process sees them: ("cuda:0", ...) or ("cpu",)
    job_dir: str  # the job's own directory (its uploaded files); removed at the end
    log_path: str  # the job's log file (its stdout and stderr go there)
    logger: logging.Logger  # writes to the job's log
    send: Callable[[dict[str, Any]], None] = dataclasses.field(repr=False)


_current: TrainingContext | None = None
# Where report() sends progress when no training job runs here: set by
# ``deepaas-cli train``, which runs train() in its own process (no job).
_progress_sink: Callable[[dict[str, Any]], None] | None = None


def current() -> TrainingContext | None:
    """The training running in this process, if any."""
    return _current


def set_current(ctx: TrainingContext | None) -> None:
    global _current
    _current = ctx


def progress_sink() -> Callable[[dict[str, Any]], None] | None:
    """What takes ``report()``'s values outside a training job, if anything."""
    return _progress_sink


def set_progress_sink(sink: Callable[[dict[str, Any]], None] | None) -> None:
    global _progress_sink
    _progress_sink = sink
