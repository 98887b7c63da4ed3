"""What the client raises: HTTP errors, connection failures and timeouts.

Every exception is a :class:`ClientError`, so ``except ClientError`` catches
all of them. An answer with a 4xx/5xx status is an :class:`APIError`
carrying the status and the server's JSON ``message`` (422 for invalid
arguments is :class:`InvalidArguments`, with marshmallow's per-field
messages in ``errors``); no answer at all is :class:`ConnectionFailed`
(also a builtin ``ConnectionError``) or :class:`Timeout` (also a builtin
``TimeoutError``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "ClientError",
    "ConnectionFailed",
    "InvalidArguments",
    "NotFound",
    "Timeout",
]


class ClientError(Exception):
    """Base class of every error the deepaas client raises."""


class APIError(ClientError):
    """The server answered with an error status (4xx or 5xx).

    Attributes:
        status: the HTTP status code, e.g. 404, 422, 500.
        message: the server's ``message`` (deepaas answers every error as
            JSON ``{"message": ...}``); for a 422 without one, the
            per-field messages in one line; else the start of the body or
            the status' reason phrase.
        body: the answer's parsed JSON (a dict for deepaas), or its text
            when it was not JSON.
        method, url: the request that failed.
    """

    def __init__(
        self, status: int, message: str, body: Any, method: str, url: str
    ) -> None:
        super().__init__(f"{status} from {method} {url}: {message}")
        self.status = status
        self.message = message
        self.body = body
        self.method = method
        self.url = url


class NotFound(APIError):
    """404: no such model, training or route (is the base path right?)."""


class InvalidArguments(APIError):
    """422: the arguments did not pass the model's fields.

    ``errors`` maps each argument name to marshmallow's messages, e.g.
    ``{"number": ["Must be greater than or equal to 0 and less than or equal
    to 100."]}``; empty when the server answered a plain ``message``.
    """

    def __init__(
        self, status: int, message: str, body: Any, method: str, url: str
    ) -> None:
        super().__init__(status, message, body, method, url)
        has_message = isinstance(body, dict) and isinstance(body.get("message"), str)
        self.errors: dict[str, Any] = (
            body if isinstance(body, dict) and not has_message else {}
        )


class ConnectionFailed(ClientError, ConnectionError):
    """No answer: the server could not be reached (refused, unknown host,
    TLS failure) or the connection broke before the answer was complete."""


class Timeout(ClientError, TimeoutError):
    """The request (or a wait) took longer than its timeout."""


def api_error(status: int, reason: str, body: Any, method: str, url: str) -> APIError:
    """The exception for an error answer (``body``: parsed JSON or text)."""
    message = _message(status, reason, body)
    kind = {404: NotFound, 422: InvalidArguments}.get(status, APIError)
    return kind(status, message, body, method, url)


def _message(status: int, reason: str, body: Any) -> str:
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str):
            return message
        if status == 422 and body:
            return "invalid arguments: " + "; ".join(
                f"{name}: {_flatten(errors)}" for name, errors in body.items()
            )
    if isinstance(body, str) and body.strip():
        text = " ".join(body.split())
        return text if len(text) <= 300 else text[:300] + "..."
    return reason or f"HTTP {status}"


def _flatten(errors: Any) -> str:
    """marshmallow's messages (lists, or dicts for nested fields) in one line."""
    if isinstance(errors, list):
        return " ".join(_flatten(e) for e in errors)
    if isinstance(errors, dict):
        return " ".join(f"[{k}] {_flatten(v)}" for k, v in errors.items())
    return str(errors)
