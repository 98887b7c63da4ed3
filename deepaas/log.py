"""Logging set-up and the bounded capture behind ``/v2/debug/``.

Every line logged while a request is served carries its request id
(``... deepaas.api.errors: [3f2a...] message``), written by
:class:`deepaas.tracing.RequestIdFilter` on each handler set up here.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading

from deepaas.tracing import RequestIdFilter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(request)s%(message)s"
DEBUG_CAPTURE_BYTES = 1 << 20


def formatter() -> logging.Formatter:
    """The log's format, with the request id (empty for a record no
    :class:`~deepaas.tracing.RequestIdFilter` saw)."""
    return logging.Formatter(FORMAT, defaults={"request": ""})


class OutputCapture:
    """The most recent log lines and worker output, at most ``limit`` bytes.

    Old text is dropped first, so a chatty model cannot grow the server's
    memory without bound.
    """

    def __init__(self, limit: int = DEBUG_CAPTURE_BYTES) -> None:
        self.limit = limit
        self._chunks: collections.deque[str] = collections.deque()
        self._size = 0
        self._dropped = False
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        if not text:
            return
        text = text[-self.limit :]
        with self._lock:
            self._chunks.append(text)
            self._size += len(text)
            while self._size > self.limit:
                self._size -= len(self._chunks.popleft())
                self._dropped = True

    def getvalue(self) -> str:
        with self._lock:
            head = "[... older output dropped ...]\n" if self._dropped else ""
            return head + "".join(self._chunks)


class CaptureHandler(logging.Handler):
    """A logging handler that writes formatted records into an OutputCapture."""

    def __init__(self, capture: OutputCapture) -> None:
        super().__init__()
        self.capture = capture
        self.setFormatter(formatter())
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.capture.write(self.format(record) + "\n")
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup(level: str, log_file: str = "", capture: OutputCapture | None = None) -> None:
    """Configure the root logger once for the server process."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter())
        handler.addFilter(RequestIdFilter())
    if capture is not None:
        handlers.append(CaptureHandler(capture))
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    # Access lines cost time on every request: only with --debug.
    access_level = logging.INFO if level == "DEBUG" else logging.WARNING
    logging.getLogger("aiohttp.access").setLevel(access_level)
