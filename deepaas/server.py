"""The composition root: settings and plugins in, a running server out.

:class:`Server` builds every part once, in one place, from the
:class:`~deepaas.config.Settings`: the device inventory (NVML) and its
telemetry, the scratch directory, one
:class:`~deepaas.engine.runtime.ModelRuntime` per model, the training
:class:`~deepaas.training.jobs.JobManager`, the
:class:`~deepaas.lifecycle.Lifecycle`, the metrics, and the aiohttp
application over them (:func:`deepaas.api.create_app`). The parts do not
know each other; the server starts them with the app and stops them with
it, and tells a model's runtime to reload its workers when a training of
that model ends ``done`` (``--reload-after-train``). ``deepaas-run`` calls
:meth:`Server.serve`; tests use :func:`build_app`.

Shutdown is bounded (:meth:`Server.drain`, then the app's cleanup): after
SIGTERM readiness turns 503 and the server still serves new requests for
``--drain-delay`` seconds (so balancers take it out first), then drains for
at most ``--shutdown-timeout`` seconds, answers what is left with 503, stops
workers and training jobs and exits, all within ``--drain-delay`` +
``--shutdown-timeout`` + :data:`STOP_BUDGET_S` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

from deepaas.api import create_app, front
from deepaas.api.access_log import AccessLog
from deepaas.api.auth import warn_if_open
from deepaas.api.connections import GuardedTCPSite, HeaderTimeout
from deepaas.api.metrics import Metrics
from deepaas.api.site import listen_error
from deepaas.api.tokens import TokenTable, load_tokens
from deepaas.api.views import VIEWS
from deepaas.config import ConfigError, Settings
from deepaas.devloop import PluginWatcher
from deepaas.engine import devices
from deepaas.engine.batching import resolve_policy
from deepaas.engine.pool import PoolConfig
from deepaas.engine.runtime import Limits, ModelRuntime
from deepaas.engine.selection import select_devices
from deepaas.engine.telemetry import Telemetry
from deepaas.engine.visible import Visible
from deepaas.frameworks.repository import REPOSITORY, Repository, open_repository
from deepaas.lifecycle import Lifecycle, ShuttingDown
from deepaas.log import ACCESS_LOGGER, CaptureHandler, OutputCapture
from deepaas.model import loading
from deepaas.model.v2.wrapper import ModelWrapper
from deepaas.scratch import ScratchDir
from deepaas.training.jobs import JobManager
from deepaas.training.store import TrainingStore

LOG = logging.getLogger("deepaas")

# After --shutdown-timeout: time for the 503 answers to go out, for
# connections to close, and for workers and jobs to stop (SIGTERM, SIGKILL).
ABORT_WAIT_S = 1.0
CONNECTIONS_CLOSE_S = 1.0
WORKERS_STOP_S = 1.0
JOBS_STOP_S = 2.0
STOP_BUDGET_S = 5.0  # the sum of the above, and a margin


class Server:
    """Everything one ``deepaas-run`` serves, assembled once."""

    def __init__(
        self,
        settings: Settings,
        specs: Sequence[loading.PluginSpec],
        *,
        worker_env: Mapping[str, str] | None = None,
        capture: OutputCapture | None = None,
        extra_path: tuple[str, ...] = (),
        tokens: TokenTable | None = None,
    ) -> None:
        """Load the plugins (introspection only) and build every part.

        ``tokens``: the accepted tokens, when the caller read them already
        (else they are read here from the settings).

        ``worker_env`` is the environment workers start with (the server's
        own, before GPUs were hidden from it); ``extra_path`` is prepended to
        their ``PYTHONPATH`` (tests serve plugins that are not installed).
        Raises :class:`~deepaas.config.ConfigError` for unusable settings and
        :class:`~deepaas.model.loading.PluginLoadError` for a broken plugin.
        """
        self.settings = settings
        # First: a bad token file stops start-up before plugins are imported.
        self.tokens = tokens or load_tokens(
            settings.auth_token_file, settings.auth_tokens
        )
        self.specs = list(specs)
        # Every broken plugin is reported, not only the first.
        self.wrappers: dict[str, ModelWrapper] = loading.load_all(self.specs)
        plugins = list(self.specs)
        self.repository: Repository | None = None
        if settings.model_repository:  # model files, described by probe children
            self.repository, files = open_repository(
                settings.model_repository, worker_env, extra_path, self.specs
            )
            self.specs += self.repository.specs
            self.wrappers.update(files)
        wanted = settings.devices.strip().lower()
        # The GPUs a batch system or container runtime gave us (unset: all).
        inherited = Visible.from_env(os.environ if worker_env is None else worker_env)
        self.nvml = devices.Nvml.open() if wanted != "cpu" else None
        try:
            self.devices = tuple(select_devices(settings.devices, self.nvml, inherited))
        except devices.DeviceError as exc:
            if self.nvml is not None:
                self.nvml.close()
            raise ConfigError(f"devices: {exc}") from exc
        self.telemetry = (
            Telemetry(self.nvml, list(self.devices)) if self.nvml is not None else None
        )
        self.lifecycle = Lifecycle()
        self.scratch = ScratchDir()  # created when the app starts
        self.port: int | None = None  # listened on, once serve() has bound it
        self.runtimes: dict[str, ModelRuntime] = {}
        self.metrics = Metrics(self.runtimes, self.telemetry)
        # Slow clients: headers must arrive within --client-timeout.
        self.header_timeout = HeaderTimeout(
            settings.client_timeout,
            on_timeout=self.metrics.client_timed_out,
            on_bad_request=self.metrics.refused,
        )
        limits = Limits(settings.predict_timeout, settings.max_queue)
        for spec in self.specs:
            wrapper = self.wrappers[spec.name]
            size, where = settings.workers, self.devices
            if self.repository is not None and spec.origin == REPOSITORY:
                size = self.repository.workers(spec.name, size)
                where = self.repository.devices(spec.name, self.devices, self.nvml)
            self.runtimes[spec.name] = ModelRuntime(
                PoolConfig(
                    model=spec.name,
                    target=spec.target,
                    origin=spec.origin,
                    size=size,
                    tmp_dir=self.scratch.path,
                    warm=settings.warm,
                    env=worker_env,
                    extra_path=extra_path,
                    devices=where,
                    max_requests=settings.worker_max_requests,
                    max_memory=settings.worker_max_memory << 20,
                ),
                resolve_policy(
                    wrapper.has_predict_batch,
                    wrapper.batching,
                    settings.max_batch_size,
                    settings.max_batch_delay,
                    (
                        wrapper.infer_signature.max_batch_size
                        if wrapper.infer_signature is not None
                        else 0
                    ),
                ),
                limits,
                self.metrics,
            )
        self.trainings = JobManager(
            TrainingStore(settings.resolved_state_dir),
            {spec.name: spec.target for spec in self.specs},
            self.devices,
            origins={spec.name: spec.origin for spec in self.specs},
            max_trainings=settings.max_trainings,
            default_gpus=settings.train_gpus,
            cancel_grace=settings.train_cancel_grace,
            env=worker_env,
            extra_path=extra_path,
            warm=settings.warm,
            on_done=self._trained if settings.reload_after_train else None,
        )
        self.capture = capture if settings.debug_endpoint else None
        # Log records and the workers' output (which is logged) go to /v2/debug/.
        self._capture_handler = (
            CaptureHandler(self.capture) if self.capture is not None else None
        )
        self.app = create_app(
            settings,
            self.wrappers,
            self.runtimes,
            lifecycle=self.lifecycle,
            tmp_dir=self.scratch.path,
            metrics=self.metrics,
            capture=self.capture,
            selected=self.devices,
            telemetry=self.telemetry,
            trainings=self.trainings,
            tokens=self.tokens,
        )
        self.app[SERVER] = self
        # --reload: a changed plugin file reloads its model (deepaas/devloop.py)
        self.watcher = (
            PluginWatcher(plugins, self.app[VIEWS], self.runtimes, debug=settings.debug)
            if settings.reload
            else None
        )
        # serve() binds the port before it starts workers: a port in use
        # then fails at once, with no worker started for nothing.
        self._bind_first = False
        self.app.on_startup.append(self._start)
        self.app.on_cleanup.append(self._stop)

    # -- start and stop (with the app) ----------------------------------------

    async def _start(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.scratch.create)
        if self._capture_handler is not None:
            logging.getLogger().addHandler(self._capture_handler)
        if self.settings.train_endpoint:
            await self.trainings.open()
        if not self._bind_first:
            await self._start_workers()

    async def _start_workers(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.start()
        if self.telemetry is not None:  # the first reading, while workers warm
            await self.telemetry.start()
        if self.watcher is not None:
            await self.watcher.start()

    async def _stop(self, app: web.Application) -> None:
        """Stop jobs and workers together, bounded; then remove what is ours."""
        self.lifecycle.abort()
        if self.watcher is not None:
            await self.watcher.stop()
        results = await asyncio.gather(
            self.trainings.stop(JOBS_STOP_S - 1.0),  # returns within grace + 1 s
            *(rt.stop(WORKERS_STOP_S) for rt in self.runtimes.values()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                LOG.error("stopping: %s", result, exc_info=result)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.scratch.remove)
        if self.telemetry is not None:  # stop sampling before NVML goes
            await self.telemetry.aclose()
        if self.nvml is not None:
            self.nvml.close()
        if self._capture_handler is not None:
            logging.getLogger().removeHandler(self._capture_handler)

    def _trained(self, model: str, uuid: str) -> None:
        """A training of ``model`` ended done: its predict workers load what
        it saved (``--reload-after-train``)."""
        runtime = self.runtimes.get(model)
        if runtime is not None and self.lifecycle.ready:  # else: stopping
            runtime.reload(f"training {uuid} ended")

    # -- serving ----------------------------------------------------------------

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
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            LOG.info("stopped (cleanup took %.1fs)", time.monotonic() - started)

    async def _wait_settled(self) -> None:
        while not self.settled():
            await asyncio.sleep(0.02)


SERVER = web.AppKey("deepaas_server", Server)


def build_app(
    settings: Settings,
    specs: Sequence[loading.PluginSpec],
    *,
    worker_env: Mapping[str, str] | None = None,
    capture: OutputCapture | None = None,
    extra_path: tuple[str, ...] = (),
) -> web.Application:
    """The app of a :class:`Server` (``app[SERVER]`` is the server)."""
    return Server(
        settings,
        specs,
        worker_env=worker_env,
        capture=capture,
        extra_path=extra_path,
    ).app
