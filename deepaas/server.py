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

Listening, signals and the bounded shutdown (:meth:`Server.serve`,
:meth:`Server.drain`, :data:`~deepaas.serving.STOP_BUDGET_S`) are in
:mod:`deepaas.serving`, the half of the server that ``deepaas-run`` drives.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence

from aiohttp import web

from deepaas.api import create_app
from deepaas.api.connections import HeaderTimeout
from deepaas.api.errors import OIP_PATHS
from deepaas.api.metrics import Metrics
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
from deepaas.lifecycle import Lifecycle
from deepaas.log import CaptureHandler, OutputCapture
from deepaas.model import loading
from deepaas.model.v2.wrapper import ModelWrapper
from deepaas.scratch import ScratchDir
from deepaas.serving import (
    JOBS_STOP_S,
    STOP_BUDGET_S,
    WORKERS_STOP_S,
    ServingMixin,
)
from deepaas.training.jobs import JobManager
from deepaas.training.store import TrainingStore

# STOP_BUDGET_S (kept in deepaas.serving) is imported from here too.
__all__ = ["SERVER", "STOP_BUDGET_S", "Server", "build_app"]

LOG = logging.getLogger("deepaas")


class Server(ServingMixin):
    """Everything one ``deepaas-run`` serves, assembled once; served by
    :class:`~deepaas.serving.ServingMixin`."""

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
            size, where, env = settings.workers, self.devices, worker_env
            if self.repository is not None and spec.origin == REPOSITORY:
                size = self.repository.workers(spec.name, size)
                where = self.repository.devices(spec.name, self.devices, self.nvml)
                env = self.repository.worker_env(
                    spec.name, os.environ if worker_env is None else worker_env
                )
            self.runtimes[spec.name] = ModelRuntime(
                PoolConfig(
                    model=spec.name,
                    target=spec.target,
                    origin=spec.origin,
                    size=size,
                    tmp_dir=self.scratch.path,
                    warm=settings.warm,
                    start_timeout=settings.worker_start_timeout,
                    env=env,
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
        # A request refused before routing is answered by the guard: as OIP
        # has it on an OIP path.
        self.header_timeout.oip_paths = self.app.get(OIP_PATHS)
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
