"""``POST /v2/models/{m}/predict/``: thin: parse, hand to the runtime, answer."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from deepaas.api.args import ArgParser, BodyLimits
from deepaas.api.limits import expect_within
from deepaas.api.metrics import label
from deepaas.api.openapi import Operation, SpecBuilder
from deepaas.api.response_schemas import VALIDATION_ERRORS
from deepaas.api.v2.responses import send_result
from deepaas.api.views import Holder, ModelViews
from deepaas.engine.runtime import ModelRuntime
from deepaas.lifecycle import Lifecycle
from deepaas.model.v2.wrapper import ModelWrapper
from deepaas.scratch import owner

Handler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]

RESPONSES = {
    200: "The prediction",
    400: "Malformed request body",
    408: "The request body stopped arriving (--client-timeout)",
    413: "Request body too large",
    422: "Invalid arguments",
    500: "The model failed",
    501: "The model does not implement predict",
    503: "No worker available, or the server is shutting down",
    504: "The prediction passed --predict-timeout",
    507: "No space left for uploads or results in the server's scratch directory",
}


class PredictView:
    """What the predict route needs of a model; replaced when it reloads."""

    __slots__ = ("model", "parser")

    def __init__(self, model: ModelWrapper) -> None:
        self.model = model
        self.parser = (
            ArgParser(model.predict_args, f"{model.name}PredictArgs")
            if model.has_predict
            else None
        )


def make_handler(
    view: Holder[PredictView],
    runtime: ModelRuntime,
    lifecycle: Lifecycle,
    tmp_dir: str,
    limits: BodyLimits,
) -> Handler:
    """The route's handler; it reads the model's current ``view`` once per
    request (``--reload`` replaces it)."""

    async def predict(request: web.Request) -> web.StreamResponse:
        current = view.value
        parser = current.parser
        if parser is None:
            raise web.HTTPNotImplemented(
                reason=f"model {current.model.name!r} does not implement predict"
            )
        with lifecycle.request():
            scratch = owner(tmp_dir)  # None for an app the server did not build
            if scratch is not None and scratch.due:  # made again if removed
                await scratch.ready()
            kwargs = parser.parse_at_once(request, limits)
            if kwargs is not None:  # no uploads: nothing to remove
                current.model.resolve_accept(kwargs)
                result = await runtime.predict(kwargs)
                return await send_result(request, result)
            parsed = parser.parse(request, tmp_dir, limits)
            async with parsed as kwargs:
                current.model.resolve_accept(kwargs)  # */* -> a type it knows
                # The uploads are removed when the block ends, unless a worker
                # may still read them (its client hung up mid-prediction):
                # the runtime then takes them over and removes them later.
                result = await runtime.predict(kwargs, parsed.files, parsed.big)
                return await send_result(request, result)

    return predict


def disabled(what: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPaymentRequired(reason=f"the {what} endpoint is disabled")

    return handler


def setup(
    app: web.Application,
    spec: SpecBuilder,
    views: ModelViews,
    runtimes: dict[str, ModelRuntime],
    *,
    enabled: bool,
    lifecycle: Lifecycle,
    tmp_dir: str,
    limits: BodyLimits,
) -> None:
    bp = spec.base_path
    schema_names: dict[str, str] = {}  # definition name -> its model
    for name, model in views.wrappers.items():
        path = f"{bp}/v2/models/{name}/predict/"
        if not enabled:
            app.router.add_route("*", path, label(disabled("predict"), name, "predict"))
            continue
        view = Holder(PredictView(model))
        handler = make_handler(view, runtimes[name], lifecycle, tmp_dir, limits)
        app.router.add_post(
            path,
            label(handler, name, "predict"),
            expect_handler=expect_within(limits),  # 413 before 100 Continue
        )
        spec.add(
            Operation(
                "post",
                path,
                "Make a prediction given the input data",
                "models",
                RESPONSES,
                prediction=True,
                operation_id=f"predict_{name}",
                schemas={422: VALIDATION_ERRORS},
                **_documented(name, model, schema_names),
            )
        )
        views.on_refresh(
            name, _preparer(views, view, path, schema_names), "the predict arguments"
        )


def _documented(
    name: str, model: ModelWrapper, schema_names: dict[str, str]
) -> dict[str, Any]:
    """The operation's fields that come from the model."""
    schema = model.response_schema
    schema_name = None
    if schema is not None:
        # Two models may both have a dict schema (ModelPredictionResponse).
        schema_name = schema.__name__
        if schema_names.get(schema_name, name) != name:
            schema_name = f"{name}_{schema_name}"
        schema_names[schema_name] = name
    return {
        "args": model.predict_args,
        "produces": model.produces(),
        "response_schema": schema,
        "response_name": schema_name,
    }


def _preparer(
    views: ModelViews, view: Holder[PredictView], path: str, names: dict[str, str]
) -> Callable[[ModelWrapper], Callable[[], None]]:
    def prepare(model: ModelWrapper) -> Callable[[], None]:
        new = PredictView(model)
        document = views.update_operation(
            "post", path, **_documented(model.name, model, names)
        )

        def commit() -> None:
            view.value = new
            document()

        return commit

    return prepare
