"""Open Inference Protocol (OIP, "KServe v2") REST routes over the same engine.

``GET <bp>/v2`` (server metadata), ``GET <bp>/v2/models/{m}`` and
``.../versions/{v}`` (model metadata), ``GET .../ready`` and ``POST
.../infer``; ``/v2/health/live`` and ``/v2/health/ready`` are
:mod:`deepaas.api.health`'s. The DEEPaaS documents keep their paths with a
trailing slash (``/v2/``, ``/v2/models/``, ``/v2/models/{m}/``); the
unversioned model metadata also carries the DEEPaaS model document's keys,
since a DEEPaaS client following a model's ``self`` link lands there.

An infer request (:mod:`deepaas.api.oip_infer`) runs a tensor-native
plugin's ``infer(**arrays)`` (its inputs and outputs are those of its
``get_infer_signature()``), or else maps its inputs onto the plugin's
predict arguments (:mod:`deepaas.api.oip_mapping`), loaded with the same schema
as the DEEPaaS predict route, and runs ``predict`` exactly as that route
does (queue, batching, deadlines, ``--max-queue``; metrics under
``(model, "infer")``). Errors are ``{"error": ...}``
(:data:`deepaas.api.errors.OIP_PATHS`); a 422 of the DEEPaaS route is a 400
here, with the same message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

import deepaas
from deepaas.api import oip_mapping as mapping
from deepaas.api.errors import OIP_PATHS, UNSERVED_EXTENSIONS
from deepaas.api.limits import BodyLimits, expect_within
from deepaas.api.metrics import label
from deepaas.api.oip_infer import infer_response
from deepaas.api.oip_spec import model_operations, server_operation
from deepaas.api.scopes import PREDICT
from deepaas.api.v2.models import read_document
from deepaas.api.views import Holder, ModelViews, ViewError
from deepaas.engine.runtime import ModelRuntime
from deepaas.exceptions import DeepaasError, echoed
from deepaas.lifecycle import Lifecycle
from deepaas.model.v2.fields import build_schema
from deepaas.model.v2.wrapper import ModelWrapper

Handler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]

#: The one version of each model (DEEPaaS plugins have no versions).
VERSION = "1"
PLATFORM = "deepaas"
#: OIP extensions implemented (Triton's names).
EXTENSIONS = ["binary_tensor_data"]


class OipView:
    """What the OIP routes need of a model; replaced when it reloads.

    ``signature``: a tensor-native plugin's, whose inputs and outputs the
    model then has (``inputs`` and ``outputs``, its predict arguments
    mapped, serve only its DEEPaaS-side mapping then: none).
    """

    __slots__ = ("inputs", "model", "outputs", "schema", "signature")

    def __init__(self, model: ModelWrapper) -> None:
        self.model = model
        self.signature = model.infer_signature
        self.inputs = mapping.input_specs(model.predict_args)
        self.outputs = mapping.output_specs(model.response_schema)
        # The DEEPaaS route's schema: the same fields, loaded the same way.
        self.schema = build_schema(model.predict_args, f"{model.name}PredictArgs")

    def metadata(self) -> dict[str, Any]:
        signature = self.signature
        return {
            "name": self.model.name,
            "versions": [VERSION],
            "platform": PLATFORM,
            "inputs": (
                signature.metadata(signature.inputs)
                if signature is not None
                else [spec.metadata() for spec in self.inputs.values()]
            ),
            "outputs": (
                signature.metadata(signature.outputs)
                if signature is not None
                else [spec.metadata() for spec in self.outputs]
            ),
        }


def oip_paths(bp: str) -> re.Pattern[str]:
    """Every path an OIP route answers, and those of OIP extensions not
    served (``/config``, ``/stats``, ``/trace/setting``, Triton's
    ``/v2/repository/...``,
    ``/v2/systemsharedmemory/...``...: :data:`UNSERVED_EXTENSIONS`): an
    error there is ``{"error": ...}``, which OIP clients read. A model's
    DEEPaaS paths are not among them: ``predict/`` and ``train/...``
    (``.../train/<uuid>`` has no final ``/``, and an id of letters once
    read as an OIP action: its 404 was ``{"error": ...}``)."""
    extensions = "|".join(UNSERVED_EXTENSIONS)
    action = r"/(?!(?:train|predict)(?:/|$))[A-Za-z_]+(?:/[A-Za-z_]+)?"
    return re.compile(
        re.escape(bp)
        + r"/v2(?:/health/(?:live|ready)"
        + rf"|/models/[^/]+(?:/versions/[^/]+)?(?:{action})?"
        + rf"|/(?P<extension>{extensions})(?:/[^/]+)*)?"
    )


class OipRoutes:
    """The handlers, over the served models' views and runtimes."""

    def __init__(
        self,
        bp: str,
        runtimes: dict[str, ModelRuntime],
        *,
        enabled: bool,
        lifecycle: Lifecycle,
        tmp_dir: str,
        limits: BodyLimits,
    ) -> None:
        self.bp = bp
        self.runtimes = runtimes
        self.enabled = enabled
        self.lifecycle = lifecycle
        self.tmp_dir = tmp_dir
        self.limits = limits
        self.views: dict[str, Holder[OipView]] = {}

    # -- lookups -------------------------------------------------------------

    def _view(self, request: web.Request, name: str) -> OipView:
        """The model's view; 404 for a model, or a version, not served."""
        holder = self.views.get(name)
        if holder is None:
            served = ", ".join(self.views) or "none"
            raise DeepaasError(
                404, f"model {echoed(name)} is not served here; served: {served}"
            )
        version = request.match_info.get("version")
        if version is not None and version != VERSION:
            raise DeepaasError(
                404,
                f"model {name!r} has no version {echoed(version)}; versions: {VERSION}",
            )
        return holder.value

    # -- handlers ------------------------------------------------------------

    def server_metadata(self) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(
                {
                    "name": "deepaas",
                    "version": deepaas.__version__,
                    "extensions": EXTENSIONS,
                }
            )

        return handler

    def model_metadata(self, name: str | None, deepaas_keys: bool) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            view = self._view(request, name or request.match_info["name"])
            document: dict[str, Any] = {}
            if deepaas_keys:
                try:
                    with self.lifecycle.request():  # a stop answers it
                        document = await read_document(self.bp, view.model)
                except ViewError as exc:
                    raise DeepaasError(
                        500, f"model {view.model.name!r}: {exc}"
                    ) from exc
            document.update(view.metadata())  # the OIP keys win
            return web.json_response(document)

        return handler

    def model_ready(self, name: str | None) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            model = name or request.match_info["name"]
            self._view(request, model)
            ready = (
                self.lifecycle.ready and self.runtimes[model].status().ready_workers > 0
            )
            return web.json_response(
                {"name": model, "ready": ready}, status=200 if ready else 503
            )

        return handler

    def infer(self, name: str | None) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            model = name or request.match_info["name"]
            view = self._view(request, model)
            if not self.enabled:
                raise web.HTTPPaymentRequired(reason="the predict endpoint is disabled")
            if view.signature is None and not view.model.has_predict:
                raise DeepaasError(501, f"model {model!r} does not implement predict")
            with self.lifecycle.request():
                return await infer_response(
                    request,
                    view,
                    self.runtimes[model],
                    VERSION,
                    self.tmp_dir,
                    self.limits,
                )

        return handler


def setup(
    app: web.Application,
    views: ModelViews,
    runtimes: dict[str, ModelRuntime],
    *,
    enabled: bool,
    lifecycle: Lifecycle,
    tmp_dir: str,
    limits: BodyLimits,
) -> None:
    """Add the OIP routes. Call it before :func:`deepaas.api.v2.models.setup`:
    its catch-all for unknown models must come after the OIP routes'."""
    bp = views.spec.base_path
    routes = OipRoutes(
        bp,
        runtimes,
        enabled=enabled,
        lifecycle=lifecycle,
        tmp_dir=tmp_dir,
        limits=limits,
    )
    app[OIP_PATHS] = oip_paths(bp)
    router = app.router
    # The OIP GET routes answer HEAD too (RFC 9110: HEAD wherever GET is
    # served; an unknown model's is a 404 without a body), as the probes do.
    # The DEEPaaS routes (paths ending in '/') keep their 405.
    router.add_get(f"{bp}/v2", label(routes.server_metadata(), "", "oip"))
    spec = views.spec  # /openapi.json only (oip_spec)
    spec.add(server_operation(bp))
    for name, model in views.wrappers.items():
        holder = Holder(OipView(model))
        routes.views[name] = holder
        for operation in model_operations(bp, holder.value, enabled):
            spec.add(operation)
        base = f"{bp}/v2/models/{name}"
        for prefix, deepaas_keys in (
            (base, True),
            (f"{base}/versions/{{version}}", False),
        ):
            router.add_get(
                prefix,
                label(routes.model_metadata(name, deepaas_keys), name, "metadata"),
            )
            router.add_get(
                f"{prefix}/ready",
                label(routes.model_ready(name), name, "ready"),
            )
            router.add_post(
                f"{prefix}/infer",
                label(routes.infer(name), name, "infer"),
                expect_handler=expect_within(routes.limits, in_memory=True),
            )
        views.on_refresh(
            name, _preparer(views, holder, enabled), "the OIP inputs and outputs"
        )
    # Any other model: a 404 {"error": ...} naming the served ones.
    for prefix in (
        f"{bp}/v2/models/{{name}}",
        f"{bp}/v2/models/{{name}}/versions/{{version}}",
    ):
        router.add_get(prefix, _other(routes.model_metadata(None, False)))
        router.add_get(f"{prefix}/ready", _other(routes.model_ready(None)))
        router.add_post(f"{prefix}/infer", _other(routes.infer(None)))


def _other(handler: Any) -> Any:
    """A route of no served model: counted as "other", answered to predict
    tokens (its 404 names the models served)."""
    return label(handler, "", "other", scope=PREDICT)


def _preparer(
    views: ModelViews, holder: Holder[OipView], enabled: bool
) -> Callable[[ModelWrapper], Callable[[], None]]:
    def prepare(model: ModelWrapper) -> Callable[[], None]:
        new = OipView(model)
        documents = [
            views.update_operation(
                op.method, op.path, openapi_document=op.openapi_document
            )
            for op in model_operations(views.spec.base_path, new, enabled)
        ]

        def commit() -> None:
            holder.value = new
            for document in documents:
                document()

        return commit

    return prepare
