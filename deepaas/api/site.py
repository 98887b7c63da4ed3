"""A TCP site whose connections are under a header timeout; why it cannot listen.

:class:`GuardedTCPSite` listens as :class:`aiohttp.web.TCPSite` does, but
its connections are made by :meth:`HeaderTimeout.protocol_factory
<deepaas.api.connections.HeaderTimeout.protocol_factory>`, so that each
follows the guard (slow clients closed, refused requests answered JSON).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ssl import SSLContext

    from deepaas.api.connections import HeaderTimeout


class GuardedTCPSite(web.BaseSite):
    """:class:`aiohttp.web.TCPSite`, its connections under a :class:`HeaderTimeout`.

    ``runner.setup()`` must have been awaited. Like aiohttp's own sites, it
    sets ``BaseSite._server``, so that ``site.stop()`` and
    ``runner.addresses`` work.
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


def listen_error(host: str, port: int, exc: OSError) -> str:
    """Why ``host:port`` cannot be listened on, and what to do about it."""
    # asyncio words it "error while attempting to bind on address ...": the
    # system's own words are enough, the address is said already.
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    text = f"cannot listen on {host}:{port}: {reason}"
    if exc.errno == errno.EADDRINUSE:
        text += (
            " (another process, perhaps another deepaas-run, is listening there: "
            "stop it or choose another port with --listen-port)"
        )
    elif exc.errno == errno.EACCES and 0 < port < 1024:
        text += " (ports below 1024 need privileges: choose one above 1023)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        text += (
            " (no network interface of this machine has that address: "
            "use --listen-ip 127.0.0.1, or 0.0.0.0 for every interface)"
        )
    return text


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` serves this machine only (127.0.0.0/8,
    ::1, localhost); an empty host means every address."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any address
