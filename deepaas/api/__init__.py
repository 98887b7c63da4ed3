"""HTTP only: the aiohttp application over parts built elsewhere.

:func:`create_app` receives the models (for introspection), their runtimes,
the training job manager and the server's life cycle, and adds routes; it
starts nothing. The parts are built, started and stopped by the composition
root, :mod:`deepaas.server`; :mod:`deepaas.serving` puts the front door
(:mod:`deepaas.api.front`: JSON errors, request metrics) in front of the app.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from deepaas.api import auth, oip, openapi, swagger_ui, ui, versions
from deepaas.api import health as health_routes
from deepaas.api.args import BodyLimits
from deepaas.api.cors import CORS, CorsPolicy
from deepaas.api.health import Health
from deepaas.api.metrics import Metrics
from deepaas.api.tokens import TokenTable
from deepaas.api.v2 import debug, models, predict, system, train
from deepaas.api.views import VIEWS, ModelViews
from deepaas.config import Settings
from deepaas.engine.devices import CPU, Device
from deepaas.engine.runtime import ModelRuntime
from deepaas.engine.telemetry import Telemetry
from deepaas.lifecycle import Lifecycle
from deepaas.log import OutputCapture
from deepaas.model.v2.wrapper import ModelWrapper
from deepaas.training.jobs import JobManager

SPEC = web.AppKey("spec", openapi.SpecBuilder)
HEALTH = web.AppKey("health", Health)
METRICS = web.AppKey("metrics", Metrics)


def create_app(
    settings: Settings,
    wrappers: dict[str, ModelWrapper],
    runtimes: dict[str, ModelRuntime],
    *,
    lifecycle: Lifecycle,
    tmp_dir: str,
    metrics: Metrics,
    capture: OutputCapture | None = None,
    selected: Sequence[Device] = (CPU,),
    telemetry: Telemetry | None = None,
    trainings: JobManager | None = None,
    tokens: TokenTable | None = None,
) -> web.Application:
    """The routes over already-built models and runtimes; with ``tokens``,
    those that need a scope answer only to a token that holds it
    (:mod:`deepaas.api.auth`)."""
    max_size = settings.client_max_size
    limits = BodyLimits(
        max_size=max_size,
        max_decoded_size=settings.client_max_decoded_size,
        max_parts=settings.max_form_parts,
        client_timeout=settings.client_timeout,
    )
    # No middlewares: deepaas.api.front does their work, in front of the app.
    app = web.Application(
        client_max_size=max_size or 2**62,
        # Bodies are decoded by api/guards.py, as they are read and within
        # --client-max-decoded-size: aiohttp's own decoding takes a gzip
        # stream cut short as complete and inflates a bomb whole.
        handler_args={"auto_decompress": False},
    )
    spec = openapi.SpecBuilder(settings.base_path)
    health = Health(runtimes, lifecycle)
    app[SPEC] = spec
    if settings.cors_origin:  # the front door answers preflights
        app[CORS] = CorsPolicy(settings.cors_origin)
    app[HEALTH] = health
    app[METRICS] = metrics
    views = ModelViews(wrappers, spec)  # --reload replaces a model's view
    app[VIEWS] = views
    versions.setup(app, spec, settings.doc_endpoint)
    # Before models.setup: its catch-all for unknown models comes last.
    oip.setup(
        app,
        views,
        runtimes,
        enabled=settings.predict_endpoint,
        lifecycle=lifecycle,
        tmp_dir=tmp_dir,
        limits=limits,
    )
    models.setup(app, spec, views, lifecycle)
    debug.setup(app, spec, capture)
    predict.setup(
        app,
        spec,
        views,
        runtimes,
        enabled=settings.predict_endpoint,
        lifecycle=lifecycle,
        tmp_dir=tmp_dir,
        limits=limits,
    )
    train.setup(
        app,
        spec,
        views,
        trainings,
        enabled=settings.train_endpoint,
        limits=limits,
        lifecycle=lifecycle,
    )
    if trainings is not None and settings.train_endpoint:
        metrics.add_trainings(trainings)
    health_routes.setup(app, spec, health)
    system.setup(app, spec, selected, runtimes, telemetry)
    app.router.add_get(
        f"{settings.base_path}/metrics",
        metrics.handler(),
        allow_head=False,
    )
    swagger_ui.add_docs_routes(app, spec, settings.doc_endpoint)
    ui.setup(
        app,
        settings.base_path,
        views,
        enabled=settings.doc_endpoint,
        train_endpoint=settings.train_endpoint,
        gpus=lambda: 0 if trainings is None else len(trainings.scheduler.gpus),
    )
    # Last: every route must say who may call it (raises if one does not).
    scopes = auth.protect(app, tokens, settings.metrics_public)
    if tokens is not None:
        spec.secure(scopes)  # both documents declare the bearer scheme
    return app
