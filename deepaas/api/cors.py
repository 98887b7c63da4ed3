"""CORS: which web pages of other origins may call the API (``--cors-origin``).

Off by default: then nothing here runs. With origins, the front door
(:mod:`deepaas.api.front`) answers a preflight (``OPTIONS`` with ``Origin``
and ``Access-Control-Request-Method``) itself, before routing, and puts
the CORS headers on every answer to an allowed origin, errors included, so
that a page can read a 401, a 422 or a 503 as well as a 200.

Why not aiohttp-cors (aio-libs, 0.8): it works per route, by adding an
``OPTIONS`` route to each resource and a response-prepare signal to the
app. It refuses resources with a ``*`` route (deepaas's disabled predict
and train routes, its catch-all for unknown models: their 402 and 404
could not be read by a page), puts nothing on answers no route made (a
404, a 400 from the front door), sends no ``Vary: Origin`` (a shared cache
may then hand one origin's answer to another), answers a refused
preflight in plain text, and costs a signal on every response, CORS or
not. The front door already sees every request once; the policy below is
a set lookup and a few header assignments, and only for requests that
carry an ``Origin``.

An origin that is not allowed gets no CORS headers: the request is still
answered, and the browser keeps the answer from the page (the same-origin
rule). Its preflight is answered 403 JSON, saying which setting allows it;
so is a preflight asking for a header that is not a header name
(:func:`requested_headers`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from aiohttp import hdrs, web
from multidict import CIMultiDict

from deepaas.exceptions import echoed

#: What a page may read of an answer, besides the CORS-safelisted headers.
EXPOSED = ", ".join(
    (
        "Content-Disposition",  # a returned file's name
        "X-Request-ID",
        "Retry-After",  # 503: when to retry
        "WWW-Authenticate",  # 401/403: why
        "X-Log-Offset",  # training logs: where to resume
    )
)
#: The methods of deepaas's routes.
METHODS = "GET, HEAD, POST, DELETE"
#: How long a browser may keep a preflight's answer (Chromium keeps 2 h at most).
MAX_AGE_S = 600


class CorsPolicy:
    """The origins allowed (``*``: any) and the headers that say so."""

    __slots__ = ("any", "origins")

    def __init__(self, origins: Iterable[str]) -> None:
        given = tuple(origins)
        self.any = "*" in given
        self.origins = frozenset(o for o in given if o != "*")

    def allows(self, origin: str) -> bool:
        return self.any or origin in self.origins

    def preflight(self, request: web.BaseRequest) -> web.Response | None:
        """The answer to ``request`` if it is a CORS preflight, else None
        (an ``OPTIONS`` that is not one goes to the routes: a 405)."""
        headers = request.headers
        origin = headers.get(hdrs.ORIGIN)
        method = headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD)
        if origin is None or method is None:
            return None
        if not self.allows(origin):
            return _refused(
                f"origin {echoed(origin)} may not call this API from a "
                "browser: the server's operator can allow it with --cors-origin"
            )
        names = requested_headers(headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, ""))
        if isinstance(names, str):
            return _refused(
                f"Access-Control-Request-Headers names {echoed(names)}, which "
                "is not a header name: list header names separated by commas"
            )
        answer: dict[str, str] = {
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: "*" if self.any else origin,
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: METHODS,
            hdrs.ACCESS_CONTROL_MAX_AGE: str(MAX_AGE_S),
        }
        if not self.any:
            answer[hdrs.VARY] = "Origin"
        if names:
            # Any header the page sends: plugins read headers of their own
            # choosing (fields with location "headers"), and a wildcard
            # would not cover Authorization.
            answer[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ", ".join(names)
        return web.Response(status=204, headers=answer)

    def decorate(self, request: web.BaseRequest, headers: CIMultiDict[str]) -> None:
        """Add to an answer's ``headers`` what lets a page of an allowed
        origin read it."""
        origin = request.headers.get(hdrs.ORIGIN)
        if self.any:
            if origin is not None:
                headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*"
                headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED
            return
        # The answer depends on Origin: caches must keep one per origin,
        # also of answers without CORS headers.
        if "Origin" not in headers.getall(hdrs.VARY, ()):  # a preflight has it
            headers.add(hdrs.VARY, "Origin")
        if origin is not None and origin in self.origins:
            headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED


def requested_headers(value: str) -> list[str] | str:
    """The header names of an ``Access-Control-Request-Headers`` value, or
    the first item that is not one.

    The value is a comma-separated list (RFC 9110, section 5.6.1): empty
    items are dropped, as recipients must, and each item must be a token
    (section 5.6.2), which every header name is. An item that is not one
    refuses the whole preflight rather than being left out of the answer:
    a browser builds this header itself, sorted and lower-cased, from the
    names a page could set (fetch() throws for any other), so such an item
    comes from no browser; and a browser that got a shorter list back would
    fail the request anyway, less clearly. Echoing it, as before, put
    something that is not a header name into a header we send. Starlette's
    CORSMiddleware and aiohttp-cors likewise refuse a preflight for
    requested headers they do not allow (400 and 403), rather than trim the
    list; here any valid name is allowed, see :meth:`CorsPolicy.preflight`.
    """
    names = [item.strip(" \t") for item in value.split(",")]
    for name in names:
        if name and not _TOKEN.fullmatch(name):
            return name
    return [name for name in names if name]


#: A token (RFC 9110, section 5.6.2): what a header name is.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _refused(message: str) -> web.Response:
    """The answer to a preflight that is refused: 403, JSON."""
    return web.Response(
        status=403,
        body=json.dumps({"message": message}).encode(),
        content_type="application/json",
        headers={hdrs.VARY: "Origin"},
    )


CORS = web.AppKey("cors", CorsPolicy)
