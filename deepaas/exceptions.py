"""Errors that carry the HTTP status a client should see.

The engine raises them without knowing about HTTP frameworks; the API's
front door (:mod:`deepaas.api.front`) turns each into a JSON
``{"message": ...}`` answer.
"""

from __future__ import annotations

import reprlib
from typing import Any

_ECHO = reprlib.Repr()
_ECHO.maxstring = 80  # characters of a text shown, with its quotes
_ECHO.maxother = 80


def echoed(value: Any) -> str:
    """``repr(value)`` for an error message that names what a client sent
    (a model name, a header, a training id): at most about 80 characters,
    the middle of a longer one elided (``'aaaa...aaaa'``), so that an error
    about a long value does not send the value back whole."""
    return _ECHO.repr(value)


#: How much of a library's error text (which may quote what the client sent)
#: an error message shows: :func:`elided` to this many characters.
LIBRARY_TEXT = 200


def elided(text: str, limit: int = 80) -> str:
    """``text`` as it is when at most ``limit`` characters, else its start
    and end around ``...`` (``limit`` characters in all): a path a client
    sent, named unquoted in an error message."""
    if len(text) <= limit:
        return text
    head = (limit - 3) // 2
    return f"{text[:head]}...{text[len(text) - (limit - 3 - head) :]}"


class DeepaasError(Exception):
    """An error with a status code and a message meant for the client.

    ``detail`` is for the server's log only, never sent: a plugin's
    traceback, logged in one record with the line that reports the error,
    at that line's level (a ``--log-level WARNING`` log that shows the
    summary shows the traceback too).
    """

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.detail = detail


class ModelUnavailable(DeepaasError):
    """No worker can take the call (failed to start, shutting down): 503."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


class WorkerDied(DeepaasError):
    """The worker running the call died: 503, saying how it died."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


SHUTTING_DOWN = "the server is shutting down"


class ShuttingDown(ModelUnavailable):
    """503: the server is draining or stopping and takes no new work."""

    def __init__(self, message: str = SHUTTING_DOWN) -> None:
        super().__init__(message)


class TensorError(DeepaasError):
    """An Open Inference Protocol request or tensor that cannot be used.

    Raised by :mod:`deepaas.oip` for every malformed infer request (bad JSON,
    missing or mistyped fields, unknown datatype, shape and data that
    disagree, binary data that does not add up): status 400. A caller that
    enforces a size limit passes ``status=413``. The message names the
    tensor and says what to change, e.g. ``input 'x': shape [2, 3] needs 6
    values, got 5``.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


class TensorInputError(TensorError, ValueError):
    """An array handed to a model runtime does not match the model's input.

    Raised by :meth:`deepaas.frameworks.Runtime.run` before the framework
    sees the arrays (a missing or unknown input, an array of another
    datatype or shape): status 400, and a ``ValueError`` for code that calls
    a runtime directly. The message names the input, what the model expects
    and what it got, e.g. ``input 'x': expected FP32 [-1, 4], got FP64 [2,
    4]; convert it with .astype(numpy.float32)``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400)
