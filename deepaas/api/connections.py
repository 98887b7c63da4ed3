"""Slow clients: a connection must send each request's headers in time.

aiohttp has no timeout for request headers: a client that sends them one
byte at a time, or connects and sends nothing, keeps its connection as long
as aiohttp's ``keepalive_timeout`` allows (3630 s by default, a timeout
meant for idle connections between requests). A few hundred such
connections (slowloris) hold sockets and file descriptors for an hour.
:class:`HeaderTimeout` closes them after ``--client-timeout``, as Go's
``ReadHeaderTimeout`` and nginx's ``client_header_timeout`` do.

What is timed out (``--client-timeout`` seconds, ``T``):

- a request's headers must be complete within ``T`` of its first byte; a
  new connection that sends nothing for ``T`` is closed too. Each such
  connection is closed (``transport.abort()``: the socket is freed at once,
  even when the peer does not read) and counted, as
  ``deepaas_client_timeouts_total{phase="headers"}`` when
  :meth:`deepaas.api.metrics.Metrics.client_timed_out` is ``on_timeout``;
- on a keep-alive connection the clock of the next request starts at its
  first byte: time spent idle between requests is not a timeout (aiohttp's
  ``keepalive_timeout`` closes idle connections, uncounted).

What is not: once aiohttp hands a request to the application (its headers
arrived), this guard stands aside until that request's task ends, which is
after its response has been written. A slow body is the argument parser's
to time out (408); a slow response, streamed after the handler returns
(large result files), is never cut, even when the client pipelines the
next request's first bytes during it.

How, and what it relies on (aiohttp >= 3.9, public API unless said):

- :class:`GuardedTCPSite`, a :class:`aiohttp.web.BaseSite`, listens with
  ``runner.server`` (the :class:`aiohttp.web.Server` protocol factory)
  wrapped by :meth:`HeaderTimeout.protocol_factory`: each connection gets a
  thin :class:`asyncio.Protocol` in front of aiohttp's ``RequestHandler``.
  It forwards every protocol callback and keeps one deadline (a float) and
  at most one timer per connection, re-armed lazily: the timer is not
  cancelled per request; when it fires early it sleeps again until the
  deadline, as aiohttp's own keep-alive timer does. Like aiohttp's own
  sites, it sets ``BaseSite._server``, so that ``site.stop()`` and
  ``runner.addresses`` work.
- :meth:`HeaderTimeout.request_started` is called when aiohttp starts
  handling a request, by the first middleware
  (:meth:`HeaderTimeout.middleware`); it finds the connection by
  ``request.protocol`` and remembers ``asyncio.current_task()``. That
  aiohttp runs each request, its response write included, in a task of its
  own is the one internal behaviour used (true in every release from 3.9
  to 3.14); were it to change, only a client that pipelines the next
  request during a long response could be cut.
- Malformed requests never reach a middleware; aiohttp answers them 400 and
  closes the connection itself.

A partial next request sent during a response and then never continued is
indistinguishable here from an idle keep-alive connection: aiohttp's
``keepalive_timeout`` closes it. TLS handshakes happen before the wrapper
sees the connection (asyncio's ``ssl_handshake_timeout`` bounds them).

Cost: per request, one ``loop.time()`` and a few attribute stores when its
first bytes arrive, and in the middleware a dict lookup and
``current_task()``: about 0.15 + 0.4 microseconds on CPython 3.11, under 1%
of the API process's CPU per prediction. No timer is created or cancelled
per request on a busy keep-alive connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

if TYPE_CHECKING:
    from ssl import SSLContext

LOG = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ProtocolFactory = Callable[[], asyncio.Protocol]

HEADERS = "headers"  # the phase label of a header timeout


class HeaderTimeout:
    """Closes the connections that do not send a request's headers in time.

    ``on_timeout(phase)`` is called (with ``"headers"``) for each connection
    closed, before it is closed. One guard may serve several sites.
    """

    def __init__(
        self, timeout: float, on_timeout: Callable[[str], None] | None = None
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"the header timeout must be more than 0, got {timeout}")
        self.timeout = float(timeout)
        self.on_timeout = on_timeout
        # aiohttp's RequestHandler -> our wrapper, for request_started().
        self.connections: dict[asyncio.BaseProtocol, _Connection] = {}
        self.timed_out = 0  # connections closed by this guard
        self._middleware: Any = None

    def protocol_factory(self, factory: ProtocolFactory) -> ProtocolFactory:
        """``factory`` (e.g. ``runner.server``) with each protocol guarded."""

        def make() -> asyncio.Protocol:
            return _Connection(self, factory())

        return make

    def request_started(self, request: web.BaseRequest) -> None:
        """aiohttp is handling ``request``: its headers are in; stop the clock.

        Must be called from the request's own task (a middleware), before
        anything that may wait on the client.
        """
        conn = self.connections.get(request.protocol)
        if conn is not None:
            conn.deadline = None
            conn.task = asyncio.current_task(conn.loop)  # faster given the loop

    def middleware(self) -> Any:
        """The middleware that calls :meth:`request_started`; put it first
        (before anything that may wait on the client). Always the same one."""
        if self._middleware is None:
            started = self.request_started

            @web.middleware
            async def headers_received(
                request: web.Request, handler: Handler
            ) -> web.StreamResponse:
                started(request)
                return await handler(request)

            headers_received.header_timeout = self  # type: ignore[attr-defined]
            self._middleware = headers_received
        return self._middleware

    def installed_in(self, app: web.Application) -> bool:
        """Whether ``app`` tells this guard when requests start (for every
        route: the root app's middlewares run for its sub-apps' routes too).

        That is :meth:`middleware`, or another middleware that calls
        :meth:`request_started` first and says so with a ``header_timeout``
        attribute naming this guard (one layer less per request).
        """
        return any(getattr(m, "header_timeout", None) is self for m in app.middlewares)

    def _expired(self, transport: asyncio.BaseTransport) -> None:
        self.timed_out += 1
        LOG.debug(
            "closing the connection of %s: no complete request headers in %gs",
            transport.get_extra_info("peername"),
            self.timeout,
        )
        if self.on_timeout is not None:
            self.on_timeout(HEADERS)


class _Connection(asyncio.Protocol):
    """One connection: aiohttp's protocol behind a header deadline.

    States: ``deadline`` set = waiting for a request's headers (``silent``
    while not one byte has come); ``deadline`` None = a request is being
    handled (``task`` not done), or the connection is idle between requests
    (``task`` done) until the next byte arrives.
    """

    __slots__ = (
        "deadline",
        "guard",
        "inner",
        "loop",
        "silent",
        "task",
        "timer",
        "transport",
    )

    def __init__(self, guard: HeaderTimeout, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.deadline: float | None = None
        self.silent = True
        self.task: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None

    # -- the clock -------------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        self.deadline = deadline
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._check)
        # else: the pending timer fires no later than this deadline (they only
        # grow) and sleeps again until it.

    def _check(self) -> None:
        self.timer = None
        deadline = self.deadline
        transport = self.transport
        if deadline is None or transport is None or transport.is_closing():
            return  # headers arrived, or the connection is closing: not a timeout
        if self.loop.time() < deadline:
            self.timer = self.loop.call_at(deadline, self._check)
            return
        self.deadline = None
        self.guard._expired(transport)
        transport.abort()

    # -- asyncio.Protocol, forwarded -----------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream socket's
        self.guard.connections[self.inner] = self
        self._arm(self.loop.time() + self.guard.timeout)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.deadline is None:
            task = self.task
            if task is None or task.done():
                # The first byte of the next request on a keep-alive connection.
                self._arm(self.loop.time() + self.guard.timeout)
            # else: body bytes, or a pipelined request during a response.
        elif self.silent:
            # The first byte on this connection: its own full timeout.
            self.silent = False
            self.deadline = self.loop.time() + self.guard.timeout
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.deadline = None
        self.task = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.guard.connections.pop(self.inner, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GuardedTCPSite(web.BaseSite):
    """:class:`aiohttp.web.TCPSite`, its connections under a :class:`HeaderTimeout`.

    ``runner.setup()`` must have been awaited. The app must run
    :meth:`HeaderTimeout.middleware`, or the guard would take every request
    lasting the timeout for a slow client: an :class:`aiohttp.web.AppRunner`
    whose app does not is refused (``RuntimeError``). With a low-level
    :class:`aiohttp.web.ServerRunner`, the handler calls
    :meth:`HeaderTimeout.request_started` itself.
    """

    __slots__ = (
        "_bound_port",
        "_guard",
        "_host",
        "_port",
        "_reuse_address",
        "_reuse_port",
    )

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        guard: HeaderTimeout,
        ssl_context: SSLContext | None = None,
        backlog: int = 128,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        if isinstance(runner, web.AppRunner) and not guard.installed_in(runner.app):
            raise RuntimeError(
                "the app does not tell the header guard when a request starts: "
                "put guard.middleware() first in its middlewares"
            )
        self._guard = guard
        self._host = host
        self._port = (8443 if ssl_context else 8080) if port is None else port
        self._bound_port: int | None = None
        self._reuse_address = reuse_address
        self._reuse_port = reuse_port

    @property
    def guard(self) -> HeaderTimeout:
        return self._guard

    @property
    def port(self) -> int:
        """The port listened on (the one given until started; useful with 0)."""
        return self._port if self._bound_port is None else self._bound_port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        host = self._host or "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        await super().start()  # registers the site with its runner
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner was cleaned up before the site started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.protocol_factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
