"""Serving a built :class:`~deepaas.server.Server` until a signal, then
stopping it within a bound.

:class:`ServingMixin` is the half of :class:`~deepaas.server.Server` that
``deepaas-run`` drives (:meth:`ServingMixin.serve`): it listens (before any
worker starts, so a port in use fails at once), tells when every model is
warm or has failed, and on SIGINT/SIGTERM drains. The other half,
:mod:`deepaas.server`, assembles the parts and starts and stops them with
the app; tests that use only the app (:func:`~deepaas.server.build_app`)
never come here. It is a mixin, not a class of its own, so that
``Server.serve`` and ``Server.drain`` stay where callers and docs find them;
the attributes it declares are what it uses of the server.

Shutdown is bounded (:meth:`ServingMixin.drain`, then the app's cleanup):
after SIGTERM readiness turns 503 and the server still serves new requests
for ``--drain-delay`` seconds (so balancers take it out first), then drains
for at most ``--shutdown-timeout`` seconds, answers what is left with 503,
stops workers and training jobs and exits, all within ``--drain-delay`` +
``--shutdown-timeout`` + :data:`STOP_BUDGET_S` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from deepaas.api import front
from deepaas.api.access_log import AccessLog
from deepaas.api.auth import warn_if_open
from deepaas.api.connections import GuardedTCPSite, HeaderTimeout
from deepaas.api.metrics import Metrics
from deepaas.api.site import listen_error
from deepaas.api.tokens import TokenTable
from deepaas.config import ConfigError, Settings
from deepaas.engine import orphans
from deepaas.engine.runtime import ModelRuntime
from deepaas.lifecycle import Lifecycle, ShuttingDown
from deepaas.log import ACCESS_LOGGER
from deepaas.training.jobs import JobManager

LOG = logging.getLogger("deepaas")


# After --shutdown-timeout: time for the 503 answers to go out, for
# connections to close, and for workers and jobs to stop (SIGTERM, SIGKILL).
ABORT_WAIT_S = 1.0
CONNECTIONS_CLOSE_S = 1.0
WORKERS_STOP_S = 1.0
JOBS_STOP_S = 2.0
STOP_BUDGET_S = 5.0  # the sum of the above, and a margin


class ServingMixin:
    """Listen, wait for a signal, drain and stop: ``deepaas-run``'s part of
    a :class:`~deepaas.server.Server`."""

    # What serving uses of the server (set by Server.__init__).
    settings: Settings
    tokens: TokenTable | None
    runtimes: dict[str, ModelRuntime]
    metrics: Metrics
    header_timeout: HeaderTimeout
    lifecycle: Lifecycle
    trainings: JobManager
    app: web.Application
    port: int | None
    _bind_first: bool
    _start_workers: Callable[[], Awaitable[None]]

    def settled(self) -> bool:
        """Every model has a warm worker or has failed to start one."""
        return all(runtime.settled() for runtime in self.runtimes.values())

    def start_errors(self) -> dict[str, str]:
        """The models that cannot serve, and why."""
        errors = {}
        for name, runtime in self.runtimes.items():
            error = runtime.status().start_error
            if error:
                errors[name] = error
        return errors

    async def drain(self, hurry: asyncio.Event) -> None:
        """Stop taking work; let the work in flight end; answer the rest 503.

        Readiness turns 503 at once. With ``--drain-delay``, new requests are
        still served for that long (a lame duck: balancers see the 503 and
        take the server out before it refuses anything). Then new requests
        are refused; requests in flight (uploads included) and running
        trainings get ``--shutdown-timeout`` seconds. ``hurry`` (a second
        signal) cuts both short. Then every request still in flight, queued
        or running, is answered 503 (the trainings left are stopped with the
        app).
        """
        lifecycle = self.lifecycle
        delay = self.settings.drain_delay
        if delay > 0 and not hurry.is_set():
            lifecycle.leave()
            LOG.info(
                "stopping: readiness is 503; new requests are still served for "
                "%gs (--drain-delay)",
                delay,
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(hurry.wait(), delay)
        lifecycle.drain()
        timeout = self.settings.shutdown_timeout
        loop = asyncio.get_running_loop()
        began = loop.time()
        trainings = asyncio.ensure_future(self.trainings.drain(timeout, hurry))
        LOG.info(
            "stopping: %d request(s) in flight get up to %gs to finish",
            lifecycle.in_flight,
            timeout,
        )
        idle = asyncio.ensure_future(lifecycle.wait_idle(timeout))
        hurried = asyncio.ensure_future(hurry.wait())
        try:
            await asyncio.wait({idle, hurried}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (idle, hurried):
                waiter.cancel()
        left = lifecycle.in_flight
        if left:
            LOG.warning(
                "stopping with %d request(s) unfinished after %.1fs%s: answering 503",
                left,
                loop.time() - began,
                " (a second signal)" if hurry.is_set() else "",
            )
        await trainings  # ends by the same timeout, or at the second signal
        for runtime in self.runtimes.values():
            runtime.abort(ShuttingDown())
        lifecycle.abort()
        await lifecycle.wait_idle(ABORT_WAIT_S)

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGINT/SIGTERM; then drain and stop (bounded).

        ``on_ready`` is called once every model is warm or has failed.
        Raises :class:`~deepaas.config.ConfigError` when the port cannot be
        listened on.
        """
        settings = self.settings
        runner = web.AppRunner(
            self.app,
            # --access-log (deepaas.log.setup): off, aiohttp never calls it
            access_log_class=AccessLog,
            access_log=logging.getLogger(ACCESS_LOGGER),
            access_log_format=settings.access_log,
            shutdown_timeout=CONNECTIONS_CLOSE_S,
            handle_signals=False,
            # A client that hangs up cancels its request: a queued prediction
            # is then dropped instead of computed for nobody.
            handler_cancellation=True,
        )
        stop = asyncio.Event()
        hurry = asyncio.Event()  # a second signal: stop without waiting

        def on_signal() -> None:
            (hurry if stop.is_set() else stop).set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        self._bind_first = True
        warn_if_open(settings.listen_ip, self.tokens)
        # Before any child starts: the token children mark their plugins'
        # processes with, stopped when the child ends (Linux only).
        orphans.enable()
        try:
            await runner.setup()
            front.install(runner, self.metrics)
            site = GuardedTCPSite(
                runner,
                settings.listen_ip,
                settings.listen_port,
                guard=self.header_timeout,
                reuse_address=True,
            )
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(
                    listen_error(settings.listen_ip, settings.listen_port, exc)
                ) from None
            self.port = site.port  # the one chosen, with --listen-port 0
            await self._start_workers()
            settled = asyncio.ensure_future(self._wait_settled())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({settled, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not stop.is_set() and on_ready is not None:
                on_ready()
            await stopped
            settled.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settled
            await self.drain(hurry)
        finally:
            started = time.monotonic()
            await runner.cleanup()
            await orphans.sweep("stopping")  # anything its children left
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            LOG.info("stopped (cleanup took %.1fs)", time.monotonic() - started)

    async def _wait_settled(self) -> None:
        while not self.settled():
            await asyncio.sleep(0.02)
