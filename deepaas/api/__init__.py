"""HTTP only: assemble the aiohttp application from its parts.

:func:`build_app` loads the plugins, creates one runtime (queue + workers) per
model and wires the routes; the runtimes start and stop with the app.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from aiohttp import web

from deepaas.api import health as health_routes
from deepaas.api import openapi, versions
from deepaas.api.args import BodyLimits
from deepaas.api.errors import error_middleware
from deepaas.api.health import Health
from deepaas.api.metrics import Metrics
from deepaas.api.v2 import debug, models, predict, system, train
from deepaas.config import ConfigError, Settings
from deepaas.engine import devices
from deepaas.engine.batching import resolve_policy
from deepaas.engine.devices import CPU, Device, Telemetry
from deepaas.engine.pool import PoolConfig
from deepaas.engine.runtime import Limits, ModelRuntime
from deepaas.log import CaptureHandler, OutputCapture
from deepaas.model import loading
from deepaas.model.v2.wrapper import ModelWrapper
from deepaas.scratch import ScratchDir
from deepaas.training.jobs import JobManager
from deepaas.training.store import TrainingStore

LOG = logging.getLogger(__name__)

MODELS = web.AppKey("models", dict)
RUNTIMES = web.AppKey("runtimes", dict)
SPEC = web.AppKey("spec", openapi.SpecBuilder)
HEALTH = web.AppKey("health", Health)
METRICS = web.AppKey("metrics", Metrics)
TRAININGS = web.AppKey("trainings", JobManager)


def build_app(
    settings: Settings,
    specs: Sequence[loading.PluginSpec],
    *,
    worker_env: Mapping[str, str] | None = None,
    capture: OutputCapture | None = None,
    extra_path: tuple[str, ...] = (),
) -> web.Application:
    """Load the plugins (introspection only) and build the application.

    ``worker_env`` is the environment workers start with (the server's own,
    before GPUs were hidden from it); ``extra_path`` is prepended to their
    ``PYTHONPATH`` (tests serve plugins that are not installed).
    """
    wrappers = {spec.name: loading.load(spec) for spec in specs}
    wanted = settings.devices.strip().lower()
    nvml = devices.Nvml.open() if wanted != "cpu" else None
    try:
        selected = tuple(devices.select_devices(settings.devices, nvml))
    except devices.DeviceError as exc:
        if nvml is not None:
            nvml.close()
        raise ConfigError(f"devices: {exc}") from exc
    telemetry = devices.Telemetry(nvml, list(selected)) if nvml is not None else None
    limits = Limits(settings.predict_timeout, settings.max_queue)
    scratch = ScratchDir()  # created when the app starts, removed when it stops
    runtimes: dict[str, ModelRuntime] = {}
    metrics = Metrics(runtimes, telemetry)
    for spec in specs:
        wrapper = wrappers[spec.name]
        runtimes[spec.name] = ModelRuntime(
            PoolConfig(
                model=spec.name,
                target=spec.target,
                size=settings.workers,
                tmp_dir=scratch.path,
                warm=settings.warm,
                env=worker_env,
                extra_path=extra_path,
                devices=selected,
                events=metrics,
            ),
            resolve_policy(
                wrapper.has_predict_batch,
                wrapper.batching,
                settings.max_batch_size,
                settings.max_batch_delay,
            ),
            limits,
        )
    trainings = JobManager(
        TrainingStore(settings.resolved_state_dir),
        {spec.name: spec.target for spec in specs},
        selected,
        max_trainings=settings.max_trainings,
        default_gpus=settings.train_gpus,
        cancel_grace=settings.train_cancel_grace,
        env=worker_env,
        extra_path=extra_path,
        warm=settings.warm,
    )
    app = get_app(
        settings,
        wrappers,
        runtimes,
        tmp_dir=scratch.path,
        capture=capture if settings.debug_endpoint else None,
        selected=selected,
        telemetry=telemetry,
        metrics=metrics,
        trainings=trainings,
    )

    # Log records and the workers' output (which is logged) go to /v2/debug/.
    handler = CaptureHandler(capture) if capture and settings.debug_endpoint else None

    async def start_workers(app: web.Application) -> None:
        scratch.create()
        if handler is not None:
            logging.getLogger().addHandler(handler)
        if settings.train_endpoint:
            trainings.open()
        for runtime in runtimes.values():
            await runtime.start()

    async def stop_workers(app: web.Application) -> None:
        await trainings.stop()
        for runtime in runtimes.values():
            await runtime.stop()
        scratch.remove()
        if nvml is not None:
            nvml.close()
        if handler is not None:
            logging.getLogger().removeHandler(handler)

    app.on_startup.append(start_workers)
    app.on_cleanup.append(stop_workers)
    return app


def get_app(
    settings: Settings,
    wrappers: dict[str, ModelWrapper],
    runtimes: dict[str, ModelRuntime],
    *,
    tmp_dir: str,
    capture: OutputCapture | None = None,
    selected: Sequence[Device] = (CPU,),
    telemetry: Telemetry | None = None,
    metrics: Metrics | None = None,
    trainings: JobManager | None = None,
) -> web.Application:
    """The routes and middlewares over already-built models and runtimes."""
    max_size = settings.client_max_size
    limits = BodyLimits(
        max_size=max_size,
        max_parts=settings.max_form_parts,
        client_timeout=settings.client_timeout,
    )
    metrics = metrics or Metrics(runtimes, telemetry)
    app = web.Application(
        middlewares=[metrics.middleware(), error_middleware],
        client_max_size=max_size or 2**62,
    )
    spec = openapi.SpecBuilder(settings.base_path)
    health = Health(runtimes)
    app[MODELS] = wrappers
    app[RUNTIMES] = runtimes
    app[SPEC] = spec
    app[HEALTH] = health
    app[METRICS] = metrics
    versions.setup(app, spec, settings.doc_endpoint)
    models.setup(app, spec, wrappers)
    debug.setup(app, spec, capture)
    predict.setup(
        app,
        spec,
        wrappers,
        runtimes,
        enabled=settings.predict_endpoint,
        tmp_dir=tmp_dir,
        limits=limits,
    )
    train.setup(
        app,
        spec,
        wrappers,
        trainings,
        enabled=settings.train_endpoint,
        limits=limits,
    )
    if trainings is not None:
        app[TRAININGS] = trainings
        if settings.train_endpoint:
            metrics.add_trainings(trainings)
    health_routes.setup(app, spec, health)
    system.setup(app, spec, selected, runtimes, telemetry)
    app.router.add_get(
        f"{settings.base_path}/metrics",
        metrics.handler(),
        allow_head=False,
    )
    openapi.add_docs_routes(app, spec, settings.doc_endpoint)
    return app
