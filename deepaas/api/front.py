"""The front door: the one handler every request passes through first.

It does what two aiohttp middlewares did: it answers every error as JSON
(:func:`deepaas.api.errors.error_response`) and it times and counts each
request for the metrics, under the labels its route declared
(:meth:`deepaas.api.metrics.Metrics.request_done`). It also gives each
request its id (:mod:`deepaas.tracing`: the client's ``X-Request-ID`` or
a new one), returned on every answer, errors included, and with
``--cors-origin`` answers preflights and puts the CORS headers on every
answer (:mod:`deepaas.api.cors`).

Why not middlewares: with any middleware at all, aiohttp wraps every
request in its own current-app middleware too and builds a chain of
``partial`` objects, so our two became three coroutine frames per request.
One frame, installed as the server's request handler around the
application's, does the same work; on the trivial model that saved about
8 us of the ~60 us of API-process CPU per request
(``benchmarks/predict_overhead.py``). It also sees what no middleware saw:
an error aiohttp raises before the middlewares run (a 417 for an
``Expect`` other than ``100-continue``).

:func:`install` puts it in front of an application served by a runner;
:mod:`deepaas.serving` calls it, and so must anything else that serves the
app (the tests' ``TestServer`` does, see ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from deepaas.api.cors import CORS, CorsPolicy
from deepaas.api.errors import OIP_PATHS, error_response, oip_shaped
from deepaas.api.metrics import CLIENT_CLOSED_REQUEST, Metrics
from deepaas.log import ACCESS_LOGGER
from deepaas.tracing import HEADER, REQUEST_ID, new_id, usable

#: Where a request's start (time.perf_counter()) is kept for the access log.
STARTED = web.RequestKey("deepaas_started", float)

RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class FrontDoor:
    """``handler`` (the application's), with errors answered as JSON and
    every request counted in ``metrics``; with a CORS ``cors`` policy,
    preflights answered and CORS headers on every answer."""

    __slots__ = ("cors", "handler", "metrics", "oip_paths", "timed")

    def __init__(
        self,
        handler: RequestHandler,
        metrics: Metrics,
        cors: CorsPolicy | None = None,
        timed: bool = False,
        oip_paths: re.Pattern[str] | None = None,
    ) -> None:
        self.handler = handler
        self.metrics = metrics
        self.cors = cors
        # A preflight is answered before routing (no app to ask): where its
        # refusal is an OIP error.
        self.oip_paths = oip_paths
        # The access log is on: it reads when the request began (aiohttp's
        # own clock is uvloop's, to the millisecond).
        self.timed = timed

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        # No reset: aiohttp runs each request in a task of its own, with a
        # copy of the context; the access log, after us, still sees it.
        request_id = request.headers.get(HEADER)  # tracing.accepted(), inlined
        if request_id is None or not usable(request_id):
            request_id = new_id()
        REQUEST_ID.set(request_id)
        if self.timed:
            request[STARTED] = started
        status = 500
        cors = self.cors
        try:
            try:
                preflight = None
                if cors is not None and request.method == "OPTIONS":
                    preflight = cors.preflight(request)
                if preflight is not None:
                    response: web.StreamResponse = preflight
                    oip = self.oip_paths
                    if preflight.status >= 400 and oip and oip.fullmatch(request.path):
                        response = oip_shaped(preflight)  # refused: {"error": ...}
                else:
                    response = await self.handler(request)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                # Plugin code runs on the loop too (get_metadata(), an
                # argument's validator): a KeyboardInterrupt or another
                # BaseException it raised would end the server, or drop the
                # connection unanswered. A 500, as any error of its own.
                answer = await error_response(request, exc)
                if answer is None:  # already an HTTP answer: aiohttp sends it
                    raise
                response = answer
            status = response.status
            if not response.prepared:  # else see prepare()
                headers = response.headers
                headers[HEADER] = request_id
                if cors is not None:
                    cors.decorate(request, headers)
            return response
        except web.HTTPException as exc:
            # A 408 comes this way: raised, as a ClosingError that closes the
            # connection after the answer.
            status = exc.status
            exc.headers[HEADER] = request_id
            if cors is not None:
                cors.decorate(request, exc.headers)
            raise
        except asyncio.CancelledError:
            # With handler_cancellation, a client that hung up (or, at the
            # very end of a shutdown, the server giving up): no answer sent.
            status = CLIENT_CLOSED_REQUEST
            raise
        finally:
            self.metrics.request_done(request, status, started)


def install(runner: web.AppRunner, metrics: Metrics) -> None:
    """Serve ``runner``'s application through a :class:`FrontDoor` counting
    in ``metrics`` (the app's, ``app[deepaas.api.METRICS]``), with the
    app's CORS policy (``app[deepaas.api.cors.CORS]``) if it has one, and
    each request's start noted for the access log when it is on.

    Call it after ``runner.setup()`` and before a site accepts connections:
    each connection takes the server's request handler when it opens.
    Raises RuntimeError before ``runner.setup()``.
    """
    server = runner.server
    if server is None:
        raise RuntimeError("install the front door after runner.setup()")
    if not isinstance(server.request_handler, FrontDoor):
        app = runner.app if isinstance(runner.app, web.Application) else None
        cors = app.get(CORS) if app is not None else None
        oip_paths = app.get(OIP_PATHS) if app is not None else None
        timed = logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.INFO)
        server.request_handler = FrontDoor(
            server.request_handler, metrics, cors, timed, oip_paths
        )


async def prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``response.prepare(request)``, for a handler that streams its answer
    (the front door then sees it only once its headers are sent): first the
    headers the front door puts on every answer (request id, CORS)."""
    request_id = REQUEST_ID.get()
    if request_id is not None:
        response.headers[HEADER] = request_id
    cors = request.app.get(CORS)
    if cors is not None:
        cors.decorate(request, response.headers)
    await response.prepare(request)
