"""``deepaas.training.report()`` under ``deepaas-cli train``, on stderr.

On a terminal, with `rich <https://rich.readthedocs.io>`_ installed
(``pip install 'deepaas[progress]'``): a progress bar with the time left
when the training reports a counter and its total (``step``/``total``, or
``epoch``/``epochs``: the conventions of docs/training.md), and a live line
of the latest values otherwise. Without rich, or when stderr is not a
terminal (a log file, CI, a pipe): plain lines, at most one a second (a
loop may report on every step), and the last values when train() ends,
so a log holds no escape sequences and no line per step.

Batch mode (``deepaas-cli predict --input-dir``) shows the inputs done the
same way: :func:`batch_view`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from deepaas.training.history import counted, shown

PROG = "deepaas-cli"


def values_line(values: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """``loss=0.1235 phase=fit``: the values a person reads at a glance."""
    shown = []
    for key, value in values.items():
        if key in skip:
            continue
        if isinstance(value, float):
            text = f"{value:.4g}"
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, default=str)
        shown.append(f"{key}={text}")
    return " ".join(shown)


class PlainProgress:
    """Plain lines: ``deepaas-cli: progress: {json}``, at most one a second."""

    INTERVAL_S = 1.0

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.latest: dict[str, Any] = {}
        self.pending = False
        self.shown_at: float | None = None

    def report(self, values: dict[str, Any]) -> None:
        self.latest.update({key: shown(v) for key, v in values.items()})
        self.pending = True  # (NaN as "nan": each line stays JSON)
        now = time.monotonic()
        if self.shown_at is None or now - self.shown_at >= self.INTERVAL_S:
            self.shown_at = now
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.pending = False
            shown = json.dumps(self.latest, default=str)
            print(f"{PROG}: progress: {shown}", file=self.stream, flush=True)


class RichProgress:
    """A rich progress bar (a counter and its total) or a live line of the
    latest values; started at the first report, so a training that reports
    nothing prints nothing."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import (  # optional: deepaas[progress]
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.latest: dict[str, Any] = {}
        values = TextColumn("{task.description}")
        # with a total: the bar, done/total, time so far, time left
        self.bar = (
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            values,
        )
        self.line = (SpinnerColumn(), TimeElapsedColumn(), values)  # without
        self.progress = Progress(
            *self.line, console=Console(file=stream), refresh_per_second=4
        )
        self.task: Any = None

    def report(self, values: dict[str, Any]) -> None:
        self.latest.update(values)
        found = counted(self.latest)
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("", total=None)
        if found is None:
            self.progress.columns = self.line
            self.progress.update(self.task, description=values_line(self.latest))
            return
        counter, total_key, done, total = found
        self.progress.columns = self.bar
        self.progress.update(
            self.task,
            total=total,
            completed=done,
            description=values_line(self.latest, (counter, total_key)),
        )

    def flush(self) -> None:
        """train() ended: the bar stays, as it was last, above the result."""
        if self.task is not None:
            self.progress.refresh()
            self.progress.stop()


def make_progress(stream: IO[str] | None = None) -> PlainProgress | RichProgress:
    """The view ``stream`` (stderr) allows: rich on a terminal when it is
    installed, plain lines otherwise."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        try:
            return RichProgress(stream)
        except ImportError:  # rich is optional: deepaas[progress]
            pass
    return PlainProgress(stream)


# -- batch mode ----------------------------------------------------------------


class BatchLines:
    """Batch mode off a terminal: progress at most once a second, and the
    lines it is given (failures, what the plugin prints)."""

    INTERVAL_S = 1.0

    def __init__(self, stream: IO[str], total: int) -> None:
        self.stream = stream
        self.total = total
        self.shown_at = time.monotonic()

    def say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def advance(self, done: int, failed: int) -> None:
        now = time.monotonic()
        if now - self.shown_at >= self.INTERVAL_S and done < self.total:
            self.shown_at = now
            self.say(f"{PROG}: progress: {done}/{self.total} ({failed} failed)")

    def close(self) -> None:
        pass


class BatchBar:
    """Batch mode on a terminal: a rich progress bar of the inputs done, the
    lines it is given printed above it."""

    def __init__(self, stream: IO[str], total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=stream)
        self.progress = Progress(
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            refresh_per_second=4,
        )
        self.progress.start()
        self.task = self.progress.add_task("", total=total)

    def say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def advance(self, done: int, failed: int) -> None:
        self.progress.update(
            self.task, completed=done, description=f"{failed} failed" if failed else ""
        )

    def close(self) -> None:
        self.progress.refresh()
        self.progress.stop()


def batch_view(stream: IO[str], total: int) -> BatchLines | BatchBar:
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        try:
            return BatchBar(stream, total)
        except ImportError:
            pass
    return BatchLines(stream, total)
