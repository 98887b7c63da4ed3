"""Logging set-up and the bounded capture behind ``/v2/debug/``.

Every line logged while a request is served carries its request id
(``... deepaas.api.errors: [3f2a...] message``), written by
:class:`deepaas.tracing.RequestIdFilter` on each handler set up here.
"""

from __future__ import annotations

import collections
import json
import logging
import logging.handlers
import re
import sys
import threading

from deepaas.tracing import RequestIdFilter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(request)s%(message)s"
ACCESS_LOGGER = "deepaas.access"
DEBUG_CAPTURE_BYTES = 1 << 20


def with_detail(summary: str, detail: str) -> str:
    """A log message: ``summary``, then ``detail`` (a traceback) on the
    lines under it, so that both are one record at one level.

    Logged apart, a traceback's lines and its summary could differ in level
    (a ``--log-level WARNING`` log, or a log shipper keeping WARNING and
    up, then shows the summary without its traceback) and interleave with
    other requests' lines. ``%`` in either is kept as is (log it as the
    argument of ``"%s"``).
    """
    detail = detail.rstrip("\n")
    return f"{summary}\n{detail}" if detail else summary


# -- a plugin's log records, from its worker to the server's log ----------------

#: A record a worker's plugin logged through Python's last resort (no
#: handler of its own) is one line of the worker's output: RECORD_MARK, its
#: level number, RECORD_MARK, its text as a JSON string, so that the server
#: logs it at its level with its traceback (:func:`worker_record`). The
#: mark is SUB, a control character no plugin prints (and, as
#: :data:`deepaas.tracing.TAG`, not a line break for ``str.splitlines``).
RECORD_MARK = "\x1a"
#: The longest record text sent whole (the server reads lines of at most
#: 64 KiB): a longer one keeps its start and its end.
RECORD_TEXT_MAX = 48_000


class RecordLines(logging.Handler):
    """A worker's ``logging.lastResort``: what Python would write to
    stderr for a plugin that configured no logging (WARNING and up,
    tracebacks included), written as one marked line instead of a line per
    line of text, so that a traceback is not logged apart from its summary,
    at another level. A plugin that sets up logging itself is not
    affected: its handlers write what they write."""

    def __init__(self) -> None:
        # As Python's own last resort: WARNING and up, the message alone
        # (and its traceback); the server's record adds the time and level.
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if len(text) > RECORD_TEXT_MAX:
                half = RECORD_TEXT_MAX // 2
                text = f"{text[:half]}\n[... cut ...]\n{text[-half:]}"
            line = f"{RECORD_MARK}{record.levelno}{RECORD_MARK}{json.dumps(text)}\n"
            sys.stderr.write(line)  # the worker's, tagged with the request id
            sys.stderr.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def worker_record(text: str) -> tuple[int, str]:
    """``(level, text)`` of a line of a worker's output: a record marked by
    :class:`RecordLines`, or INFO and the line as it is."""
    if text.startswith(RECORD_MARK):
        level, sep, encoded = text[1:].partition(RECORD_MARK)
        if sep and level.isdigit():
            try:
                decoded = json.loads(encoded)
            except ValueError:
                decoded = None
            if isinstance(decoded, str):
                return int(level), decoded
    return logging.INFO, text


# Control characters but tab and newline (an ANSI escape rewrites what a
# terminal shows, a carriage return hides the start of a line), the
# characters some log viewers break lines at (NEL, LINE/PARAGRAPH SEPARATOR),
# and lone surrogates (a client's "\ud800" in JSON, a header's byte that is
# no UTF-8), which no UTF-8 file, stream or the debug capture can write.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    return ascii(match.group())[1:-1]


class LineSafeFormatter(logging.Formatter):
    """The log's format, where no record can pass for another.

    Messages carry text from clients (a plugin's ``ValueError(f"unknown
    label {label}")``): a label holding a newline and a date would start
    a line that looks like a record of its own, an ANSI escape would
    rewrite the terminal. So every line after a record's first (its
    traceback, a message's own newlines) is indented by two spaces, as no
    record's first line is, and control characters other than tab and
    newline are written as Python escapes (``\x1b``, ``\r``), as are lone
    surrogates (U+D800 as ``\\ud800``): a line can then be encoded as UTF-8.
    """

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if _UNSAFE.search(text):
            text = _UNSAFE.sub(_escaped, text)
        if "\n" in text:
            text = text.replace("\n", "\n  ")
        return text


def formatter() -> logging.Formatter:
    """The log's format, with the request id (empty for a record no
    :class:`~deepaas.tracing.RequestIdFilter` saw); see
    :class:`LineSafeFormatter`."""
    return LineSafeFormatter(FORMAT, defaults={"request": ""})


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


class LogFile(logging.handlers.WatchedFileHandler):
    """``--log-file``: reopened when logrotate has moved it away (a
    FileHandler would write on into the moved file, and that log be lost
    with it), and never raising.

    A WatchedFileHandler reopens the file outside the error handling of
    ``emit``: where the file cannot be made again (its folder moved or
    removed, the disk full) the ``OSError`` escaped from every logging call,
    into request handlers (requests hung), then into the event loop's
    exception handler, and the server died. Here such a record is left out
    of the file (it still reaches stderr), a line on stderr says so once,
    and each later record tries the file again.
    """

    def __init__(self, filename: str) -> None:
        super().__init__(filename)
        self._failing = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reopenIfNeeded()
            if self.stream is None:  # a reopen failed before: try again
                self.stream = self._open()
                self._statstream()
        except OSError as exc:
            if not self._failing:
                self._failing = True
                _note(
                    f"deepaas: cannot write the log file {self.baseFilename} "
                    f"({exc.strerror or exc}): its lines go to stderr only "
                    "until it can be opened again\n"
                )
            return
        if self._failing:
            self._failing = False
            _note(f"deepaas: writing the log file {self.baseFilename} again\n")
        # FileHandler's: WatchedFileHandler.emit would stat the file again
        logging.FileHandler.emit(self, record)


def _note(text: str) -> None:
    """A line on stderr from a handler (which must not raise)."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:  # pragma: no cover - no stderr to say it on
        pass


def setup(
    level: str,
    log_file: str = "",
    capture: OutputCapture | None = None,
    access_log: str = "off",
) -> None:
    """Configure the root logger once for the server process, and the
    access log (``off``, ``text`` or ``json``: see
    :mod:`deepaas.api.access_log`)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(LogFile(log_file))
    for handler in handlers:
        handler.setFormatter(formatter())
        handler.addFilter(RequestIdFilter())
    if capture is not None:
        handlers.append(CaptureHandler(capture))
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    setup_access(access_log, handlers[: 2 if log_file else 1], level == "DEBUG")


def setup_access(mode: str, targets: list[logging.Handler], debug: bool) -> str:
    """Set up the access logger for ``mode``; the mode in effect (``off``
    with ``debug`` is ``text``, as aiohttp's access lines were shown with
    ``--debug``). ``json`` lines go where ``targets`` (the log's stream and
    file handlers) write, bare (one JSON object per line, no prefix).

    Off, the logger is not enabled for INFO and aiohttp skips it: an access
    line costs time on every request.
    """
    logger = logging.getLogger(ACCESS_LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if mode == "off" and debug:
        mode = "text"
    logger.propagate = mode != "json"
    logger.setLevel(logging.WARNING if mode == "off" else logging.INFO)
    if mode == "json":
        for target in targets:
            if isinstance(target, logging.FileHandler):
                bare: logging.Handler = LogFile(target.baseFilename)
            elif isinstance(target, logging.StreamHandler):
                bare = logging.StreamHandler(target.stream)
            else:  # pragma: no cover - setup() makes only these
                continue
            bare.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(bare)
    return mode
