"""What a plugin's exception tells the client: a status and a message.

Plugin code runs in worker and training processes; whatever it raises is
reduced here to a :class:`~deepaas.engine.protocol.RemoteError` (plain,
picklable values) before it crosses to the API process. aiohttp is not
imported: the ``HTTPException`` classes plugins raise (``from aiohttp
import web``) are known by their ``__http_exception__`` marker.
"""

from __future__ import annotations

import http
import traceback

from deepaas.engine.protocol import RemoteError
from deepaas.exceptions import DeepaasError, elided

#: The most of a plugin's exception text the client is told, and the most
#: of its traceback the server logs: a longer one keeps its start and end
#: (an exception may hold megabytes, a whole input or output).
MESSAGE_MAX = 16_000
TRACEBACK_MAX = 64_000


def describe_exception(exc: BaseException) -> RemoteError:
    """Reduce any exception to a picklable status and message.

    An aiohttp ``HTTPException`` raised by plugin code keeps its status, and
    its message says what the plugin wrote (:func:`_http_message`); one the
    plugin failed to make, because current aiohttp refuses its arguments
    (``HTTPBadRequest(reason=exc)``, a common DEEPaaS 1.x idiom, is a
    ``TypeError`` now), is answered as the plugin meant it
    (:func:`_http_exception_being_made`). A
    :class:`~deepaas.exceptions.DeepaasError` keeps its status and message.
    NotImplementedError is a 501;
    anything else is a 500 saying ``<ExceptionType>: <text>``. aiohttp is
    not imported here: its exceptions are known by their marker.
    """
    cls = type(exc)
    tb = elided(_traceback(exc), TRACEBACK_MAX)
    if isinstance(exc, DeepaasError) and 400 <= exc.status <= 599:
        # deepaas's own errors say the status (an upload that is no image,
        # for a repository model, is the client's 422)
        return _remote(exc.status, exc.message, tb)
    if _is_http_exception(cls):
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and 400 <= status <= 599:
            return _remote(status, _http_message(exc), tb)
    attempted = _http_exception_being_made(exc)
    if attempted is not None:
        status, message = attempted
        return _remote(status, message, tb)
    text = _text(exc, "<exception could not be printed>")
    if isinstance(exc, NotImplementedError):
        return _remote(501, f"NotImplementedError: {text}".rstrip(": "), tb)
    message = f"{cls.__name__}: {text}" if text else cls.__name__
    return _remote(500, message, tb)


def _remote(status: int, message: object, tb: str) -> RemoteError:
    """The error, its message a str (a plugin's error may hold anything as
    its ``message``) of at most :data:`MESSAGE_MAX` characters."""
    text = message if isinstance(message, str) else _text(message, "")
    return RemoteError(status, elided(text, MESSAGE_MAX), tb)


def _is_http_exception(cls: type) -> bool:
    """An aiohttp ``web.HTTPException`` class, or a plugin's subclass of one."""
    return getattr(cls, "__http_exception__", False) is True and any(
        klass.__module__.startswith("aiohttp.") for klass in cls.__mro__
    )


def _traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` as Python prints it; its frames alone when
    printing the exception raises what ``traceback`` does not catch (a
    ``__str__`` raising ``KeyboardInterrupt``: it must not end the worker)."""
    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # a plugin's __str__ may raise anything
        frames = "".join(traceback.format_tb(exc.__traceback__))
        return (
            f"Traceback (most recent call last):\n{frames}"
            f"{type(exc).__name__}: <exception could not be printed>\n"
        )


def _text(value: object, fallback: str = "") -> str:
    try:
        return str(value)
    except BaseException:  # a plugin's __str__ may raise anything
        return fallback


def _http_message(exc: BaseException) -> str:
    """What a plugin's HTTPException says: its ``text`` when it set one,
    after its ``reason`` when it set that too, else its reason.

    aiohttp fills ``text`` with ``"<status>: <reason>"`` when none is
    given; that one says nothing more than the status and reason.
    """
    reason = _text(getattr(exc, "reason", None) or "")
    status = getattr(exc, "status_code", None)
    try:
        text = getattr(exc, "text", None) or ""
    except Exception:  # a body aiohttp cannot show as text
        text = ""
    if not isinstance(text, str) or text == f"{status}: {reason}":
        text = ""
    return _combine(reason, text, _default_reason(exc))


def _combine(reason: str, text: str, default_reason: str) -> str:
    if text and reason and reason != default_reason:
        return f"{reason}: {text}"
    return text or reason or default_reason


def _default_reason(exc: object) -> str:
    """The standard phrase of the status of ``exc`` (its class's status)."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        return ""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _http_exception_being_made(exc: BaseException) -> tuple[int, str] | None:
    """``(status, message)`` of the aiohttp HTTPException whose constructor
    raised ``exc``, if one did; its message from the arguments the plugin
    passed.

    aiohttp 3.x wants a str without CR or LF as ``reason`` and a str as
    ``text``; DEEPaaS 1.x plugins wrote ``HTTPBadRequest(reason=exc)`` and
    ``reason=str(exc)`` (which may hold several lines). The constructor's
    frame in the traceback still holds the half-made exception (``self``,
    which knows its status) and those arguments: the frame of
    ``HTTPException.__init__`` itself (the innermost in aiohttp's
    ``web_exceptions``: a subclass's ``__init__``, such as
    ``HTTPMethodNotAllowed``'s or a plugin's own, calls it), else the
    outermost constructor of one.
    """
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "__init__":
            made = frame.f_locals.get("self")
            status = getattr(type(made), "status_code", None)
            if (
                _is_http_exception(type(made))
                and isinstance(status, int)
                and 400 <= status <= 599
            ):
                frames.append((frame, status, made))
        tb = tb.tb_next
    if not frames:
        return None
    own = [f for f in frames if f[0].f_globals.get("__name__") == _WEB_EXCEPTIONS]
    frame, status, made = own[-1] if own else frames[0]
    reason = frame.f_locals.get("reason")
    text = frame.f_locals.get("text")
    reason_text = "" if reason is None else _text(reason)
    text_text = "" if text is None else _text(text)
    return status, _combine(reason_text, text_text, _default_reason(made))


_WEB_EXCEPTIONS = "aiohttp.web_exceptions"
