"""Request ids: one per request, from the answer's header to the worker's log.

The front door (:mod:`deepaas.api.front`) takes a client's ``X-Request-ID``
when it is usable (visible ASCII, no space, at most :data:`MAX_LENGTH`
characters: it goes into headers and log lines) or makes one
(:func:`new_id`), returns it on every answer, and sets :data:`REQUEST_ID`
for the request's task. From there it reaches:

- every log line of the API process about the request: the
  :class:`RequestIdFilter` on the log's handlers writes ``[id]`` before
  the message (:mod:`deepaas.log`);
- the worker that runs the call: each queued call keeps the id of the
  request that made it (:class:`deepaas.engine.batching.Call`), the
  :class:`~deepaas.engine.protocol.Invoke` carries it, and while the call
  runs the worker tags each line its plugin writes (:class:`TaggedOutput`);
  the server logs the line under that id (:func:`untag`);
- the training record a request starts.

Ids made here are 32 random hex digits, as ``uuid4().hex`` but 15 times
cheaper (a Mersenne Twister draw of this module's own, seeded from
``os.urandom``: unique, not secret; a counter would be cheaper still, but
would tell every client how many requests the server has answered).
"""

from __future__ import annotations

import contextvars
import logging
import random
from typing import IO, Any

from multidict import istr

HEADER = istr("X-Request-ID")
MAX_LENGTH = 128

#: The id of the request the current task serves (None: none). aiohttp runs
#: each request in a task of its own, with a copy of the context, so a value
#: set for one request never leaks to the next.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "deepaas_request_id", default=None
)

_draw = random.Random().getrandbits  # our own: a plugin's random.seed() is not


def new_id() -> str:
    """A fresh request id: 32 random hex digits."""
    return _draw(128).to_bytes(16, "big").hex()


def usable(given: str) -> bool:
    """Whether ``given`` (a client's ``X-Request-ID``) can be used as is in
    headers and log lines."""
    return (
        0 < len(given) <= MAX_LENGTH
        and given.isascii()
        and given.isprintable()
        and " " not in given
    )


def accepted(given: str | None) -> str:
    """``given`` if it is :func:`usable`, else a fresh id."""
    return given if given is not None and usable(given) else new_id()


def current() -> str | None:
    """The id of the request being served, if any."""
    return REQUEST_ID.get()


# -- log records ------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Gives each record ``request_id`` (the one it was logged with, as
    ``extra``, or the current request's) and ``request``: ``"[id] "``, or
    ``""`` outside requests, for formats (``%(request)s%(message)s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            request_id = record.request_id = REQUEST_ID.get()
        record.request = f"[{request_id}] " if request_id else ""
        return True


# -- a worker's output --------------------------------------------------------

#: A line a worker wrote while running a call starts with TAG, the call's
#: request id, then TAG_END: the unit separator, a control character no
#: plugin prints, and not a line break for str.splitlines() (\x1c-\x1e are).
TAG = TAG_END = "\x1f"


def untag(line: str) -> tuple[str | None, str]:
    """``(request id, text)`` of a line of a worker's output; no id when
    the line was written outside a call."""
    if line.startswith(TAG):
        request_id, sep, text = line[1:].partition(TAG_END)
        if sep:
            return request_id, text
    return None, line


class TaggedOutput:
    """A worker's ``sys.stdout`` or ``sys.stderr``: while a call runs
    (:attr:`running`, set by the worker for both streams), each line written
    starts with its request id's tag. Everything else is the stream's.

    Lines written through Python only (``print``, ``logging``, warnings,
    tracebacks): what a native library writes to the file descriptor
    itself is not seen here.
    """

    running: str | None = None  # the request id of the call being run

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._line_start = True

    def write(self, text: str) -> int:
        request_id = TaggedOutput.running
        if request_id is not None and text:
            tag = f"{TAG}{request_id}{TAG_END}"
            tagged = text.replace("\n", "\n" + tag)
            if text.endswith("\n"):  # the next line is tagged when it comes
                tagged = tagged[: -len(tag)]
            if self._line_start:
                tagged = tag + tagged
            self._stream.write(tagged)
        else:
            self._stream.write(text)
        if text:
            self._line_start = text.endswith("\n")
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, buffer...
        return getattr(self._stream, name)
