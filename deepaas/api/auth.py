"""Access control: bearer tokens with scopes, checked before a route runs.

Off by default (DEEPaaS 2.x had none): then nothing here runs per request.
With tokens (``--auth-token-file``, ``DEEPAAS_AUTH_TOKENS``), every route
whose family needs a scope (:mod:`deepaas.api.scopes`) has its handler,
and its ``Expect: 100-continue`` handler, wrapped once, when the app is
built, by a check of the request's ``Authorization: Bearer`` token
(:meth:`Gate.check`: a header read, one SHA-256 and one lookup). Open
routes (probes, documents) are left as they are.

Why wrap route handlers and not check in the front door: the scope is the
matched route's, known only once aiohttp has routed the request, inside
the application's handler; a middleware would add a frame and aiohttp's
middleware chain to every request (see :mod:`deepaas.api.front`). The
wrapper returns the handler's coroutine without awaiting it: no frame
added. The expect handler is wrapped so that a client without a valid
token is refused before it is told to send its body.

Answers follow RFC 6750: 401 with ``WWW-Authenticate: Bearer
realm="deepaas"`` for no token (or another scheme), 401 with
``error="invalid_token"`` for a token not accepted, 400 with
``error="invalid_request"`` for a malformed header, 403 with
``error="insufficient_scope"`` and the ``scope`` needed. The bodies are
the API's JSON errors (``{"error": ...}`` on OIP paths, as
:mod:`deepaas.api.errors` writes them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import AbstractRoute

from deepaas.api.scopes import SCOPES, scope_of
from deepaas.api.site import is_loopback
from deepaas.api.tokens import TokenTable, is_token
from deepaas.exceptions import DeepaasError, echoed

LOG = logging.getLogger(__name__)

REALM = 'Bearer realm="deepaas"'
_BEARER = "Bearer "
METRICS_LABELS = ("", "metrics")

#: (method, route path) -> the scope it needs, or None: open.
RouteScopes = dict[tuple[str, str], str | None]


def warn_if_open(listen_ip: str, tokens: TokenTable | None) -> None:
    """One warning line when the server listens beyond loopback without
    tokens: access control is off by default (DEEPaaS compatibility), and
    whoever can reach the port can then do everything."""
    if tokens is None and not is_loopback(listen_ip):
        LOG.warning(
            "listening on %s without tokens: anyone who can reach this port can "
            "predict, train and read the debug output and metrics; set "
            "--auth-token-file (docs/security.md)",
            listen_ip or "every address",
        )


class UndeclaredRoute(RuntimeError):
    """A route says nothing of who may call it: a bug in deepaas."""


def route_scope(route: AbstractRoute, metrics_public: bool = False) -> str | None:
    """The scope ``route`` needs (None: open): the one its handler was
    given, or that of its family (:func:`deepaas.api.metrics.label`).
    Raises :class:`UndeclaredRoute` when it declares neither, or a family
    :data:`~deepaas.api.scopes.ENDPOINT_SCOPES` does not know."""
    if isinstance(route.resource, web.StaticResource):
        return None  # the Swagger UI's own files, as open as the UI
    handler = route.handler
    labels = getattr(handler, "metric_labels", None)
    if metrics_public and labels == METRICS_LABELS:
        return None
    try:
        given: str | None = handler.scope  # type: ignore[attr-defined]
        return given
    except AttributeError:
        pass
    if labels is None:
        raise UndeclaredRoute(
            f"route {route.method} {_path(route)} declares no scope: declare "
            "its family with deepaas.api.metrics.label()"
        )
    try:
        return scope_of(labels[1])
    except ValueError as exc:
        raise UndeclaredRoute(f"route {route.method} {_path(route)}: {exc}") from None


def _path(route: AbstractRoute) -> str:
    return route.resource.canonical if route.resource is not None else "?"


def protect(
    app: web.Application, tokens: TokenTable | None, metrics_public: bool = False
) -> RouteScopes:
    """Check that every route of ``app`` declares its scope and, with
    ``tokens``, guard those that need one. Returns each route's scope (for
    the API documents). Call it once, after the last route is added.
    """
    scopes: RouteScopes = {}
    gate = Gate(tokens) if tokens is not None else None
    for route in app.router.routes():
        scope = route_scope(route, metrics_public)
        scopes[(route.method, _path(route))] = scope
        if gate is None or scope is None:
            continue
        # aiohttp keeps a route's handlers in these two attributes (public
        # as .handler, and called through match_info): replaced before the
        # router is frozen, so every request of the route sees the guard.
        route._handler = _guarded(route.handler, gate, scope)
        route._expect_handler = _guarded(route._expect_handler, gate, scope)
    return scopes


def _guarded(
    handler: Callable[[web.Request], Any], gate: Gate, scope: str
) -> Callable[[web.Request], Any]:
    """``handler``, called only once the request's token holds ``scope``;
    it returns the handler's awaitable (no frame of its own on the
    request's path).

    The usual case (``Bearer <a valid token>``) is checked here, with one
    call (:meth:`~deepaas.api.tokens.TokenTable.find`: the hash, the lookup,
    the constant-time compare); anything else goes to :meth:`Gate.check`,
    which says what is wrong.
    """
    find = gate.tokens.find
    check = gate.check

    def guarded(request: web.Request) -> Any:
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is not None and header.startswith(_BEARER):
            presented = header[7:]
            if presented and presented.isascii() and presented.isprintable():
                token = find(presented) if " " not in presented else None
                if (
                    token is not None
                    and scope in token.scopes
                    and len(request.headers.getall(hdrs.AUTHORIZATION)) == 1
                ):
                    return handler(request)
        check(request, scope)  # raises the answer
        return handler(request)  # (a check that passes: not reached)

    for name in ("metric_labels", "scope"):
        if hasattr(handler, name):
            setattr(guarded, name, getattr(handler, name))
    guarded.__wrapped__ = handler  # type: ignore[attr-defined]
    return guarded


class Gate:
    """Checks a request's bearer token against the accepted ones."""

    __slots__ = ("tokens",)

    def __init__(self, tokens: TokenTable) -> None:
        self.tokens = tokens

    def check(self, request: web.BaseRequest, scope: str) -> None:
        """Return if the request's token holds ``scope``; else raise the
        :class:`~deepaas.exceptions.DeepaasError` to answer."""
        headers = request.headers.getall(hdrs.AUTHORIZATION, ())
        if len(headers) > 1:
            # A proxy that reads the last while we read the first would let
            # one token pass for another: neither is taken.
            raise DeepaasError(
                400,
                f"the request has {len(headers)} Authorization headers: send "
                "one, 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": f'{REALM}, error="invalid_request"'},
            )
        header = headers[0] if headers else None
        if header is not None and header.startswith(_BEARER):
            presented = header[7:]
        else:
            presented = _other_form(header, scope)
        if not is_token(presented):
            presented = presented.strip(" ")  # RFC 7235 allows more spaces
            if not is_token(presented):
                raise _malformed()
        token = self.tokens.find(presented)
        if token is None:
            LOG.debug("refused %s %s: unknown token", request.method, request.path)
            raise DeepaasError(
                401,
                "the bearer token is not valid: check it, or ask the server's "
                "operator for one",
                {"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
            )
        if scope not in token.scopes:
            held = ", ".join(s for s in SCOPES if s in token.scopes)
            LOG.debug(
                "refused %s %s: token of %s lacks scope %s",
                request.method,
                request.path,
                token.where,
                scope,
            )
            raise DeepaasError(
                403,
                f"this token may not call this route: it needs the scope "
                f"{scope!r}, and the token holds {held}",
                {
                    "WWW-Authenticate": (
                        f'{REALM}, error="insufficient_scope", scope="{scope}"'
                    )
                },
            )


#: The IANA HTTP Authentication Scheme Registry's names (lower case): the
#: only first words of an Authorization header an answer repeats.
_KNOWN_SCHEMES = frozenset(
    {
        "basic",
        "concealed",
        "digest",
        "dpop",
        "gnap",
        "hoba",
        "mutual",
        "negotiate",
        "oauth",
        "privatetoken",
        "scram-sha-1",
        "scram-sha-256",
        "vapid",
    }
)


def _other_form(header: str | None, scope: str) -> str:
    """What follows the scheme of an ``Authorization`` header that does not
    start with ``Bearer `` exactly; raises the 401 to answer when there is
    none or its scheme is another."""
    if header is not None:
        scheme, *rest = header.strip(" \t").replace("\t", " ").split(" ", 1)
        if scheme.lower() == "bearer":
            return rest[0] if rest else ""
        if scheme:
            # Named only when it is a registered scheme: a header holding a
            # bare token (no "Bearer ") would otherwise be echoed back.
            named = (
                f"{echoed(scheme)} credentials"
                if scheme.lower() in _KNOWN_SCHEMES
                else "credentials without the 'Bearer' scheme"
            )
            raise DeepaasError(
                401,
                f"this route takes bearer tokens (scope {scope!r}), not "
                f"{named}: send 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": REALM},
            )
    raise DeepaasError(
        401,
        f"this route needs a token with the scope {scope!r}: send "
        "'Authorization: Bearer <token>'",
        {"WWW-Authenticate": REALM},
    )


def _malformed() -> DeepaasError:
    return DeepaasError(
        400,
        "malformed Authorization header: send 'Authorization: Bearer <token>', "
        "the token in visible ASCII characters with no space",
        {"WWW-Authenticate": f'{REALM}, error="invalid_request"'},
    )
