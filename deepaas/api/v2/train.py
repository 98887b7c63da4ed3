"""The training routes: thin: parse, hand to the job manager, answer records.

``POST .../train/`` starts a training (answers its record at once; 503
while the server drains, 507 when the state directory is full), ``GET
.../train/`` lists the model's trainings, ``GET``/``DELETE
.../train/{uuid}`` show or cancel one (409 naming the owner when another
server sharing the state directory runs it and does not cancel it), and
``GET .../train/{uuid}/logs`` serves its output
(:mod:`deepaas.api.v2.train_logs`) and ``GET .../train/{uuid}/metrics``
its reported values as curves (:mod:`deepaas.api.v2.train_metrics`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from marshmallow import fields, validate

from deepaas import tracing
from deepaas.api.args import ArgParser, BodyLimits
from deepaas.api.limits import expect_within
from deepaas.api.metrics import label
from deepaas.api.openapi import Operation, SpecBuilder
from deepaas.api.response_schemas import (
    TRAINING,
    TRAINING_LIST,
    VALIDATION_ERRORS,
)
from deepaas.api.v2 import train_logs, train_metrics
from deepaas.api.v2.predict import disabled
from deepaas.api.views import ModelViews
from deepaas.exceptions import DeepaasError, echoed
from deepaas.lifecycle import Lifecycle
from deepaas.model.v2.fields import ArgSpec, arg_specs
from deepaas.model.v2.wrapper import ModelWrapper
from deepaas.training.jobs import JobManager
from deepaas.training.keeper import OwnerDidNotAct, client_error

Handler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]

GPUS_ARG = "deepaas_gpus"

UUID_PARAM = {"uuid": "The training's id (32 hex digits)"}


def train_arg_specs(model: ModelWrapper) -> dict[str, ArgSpec]:
    """The plugin's train arguments plus the framework's ``deepaas_gpus``."""
    framework = arg_specs(
        {
            # No load_default: a default of null is not Swagger 2.0 (which
            # has no null), and /swagger.json would not validate; absent,
            # the server's --train-gpus applies (kwargs.pop(GPUS_ARG, None)).
            GPUS_ARG: fields.Int(
                allow_none=True,
                validate=validate.Range(min=0),
                metadata={
                    "description": "GPUs this training holds while it runs "
                    "(default: --train-gpus)"
                },
            )
        },
        "deepaas",
    )
    return {**model.train_args, **framework}


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(value).encode(),
        content_type="application/json",
    )


def _not_found(uuid: str, model: str) -> DeepaasError:
    return DeepaasError(404, f"model {model!r} has no training {echoed(uuid)}")


class TrainRoutes:
    """The handlers of one model's training routes."""

    def __init__(
        self,
        model: ModelWrapper,
        manager: JobManager,
        limits: BodyLimits,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        self.model = model
        self.name = model.name
        self.manager = manager
        self.limits = limits
        self.lifecycle = lifecycle if lifecycle is not None else Lifecycle()
        self.parser = ArgParser(
            train_arg_specs(model), f"{model.name}TrainArgs", reserved="deepaas_"
        )

    async def post(self, request: web.Request) -> web.StreamResponse:
        if not self.model.has_train:
            raise web.HTTPNotImplemented(
                reason=f"model {self.name!r} does not implement train"
            )
        with self.lifecycle.request():  # 503 while the server drains
            manager = self.manager
            uuid = manager.new_id()
            job_dir = await manager.prepare(uuid)
            parsed = self.parser.parse(request, job_dir, self.limits)
            try:
                async with parsed as kwargs:
                    gpus = kwargs.pop(GPUS_ARG, None)
                    record = await manager.submit(
                        self.name, uuid, kwargs, gpus, tracing.current()
                    )
                    parsed.files.clear()  # the job owns its files now
            except OSError as exc:  # an upload written into a full disk
                manager.discard(uuid)
                answer = client_error(exc, str(manager.store.state_dir))
                if answer is None:
                    raise
                raise answer from exc
            except BaseException:
                manager.discard(uuid)
                raise
        return _json(record.to_json())

    async def list(self, request: web.Request) -> web.StreamResponse:
        records = await self.manager.records(self.name)
        return _json([r.to_json() for r in records])

    async def get(self, request: web.Request) -> web.StreamResponse:
        uuid = request.match_info["uuid"]
        record = await self.manager.get(uuid, self.name)
        if record is None:
            raise _not_found(uuid, self.name)
        return _json(record.to_json())

    async def delete(self, request: web.Request) -> web.StreamResponse:
        uuid = request.match_info["uuid"]
        try:
            record = await self.manager.cancel(uuid, self.name)
        except OwnerDidNotAct as exc:
            return _json({"message": exc.message, "owner": exc.owner}, 409)
        if record is None:
            raise _not_found(uuid, self.name)
        return _json(record.to_json())


def _renew(
    views: ModelViews, routes: TrainRoutes, base: str, model: ModelWrapper
) -> Callable[[], None]:
    """--reload: the routes and the document take the new model's arguments."""
    parser = ArgParser(train_arg_specs(model), f"{model.name}TrainArgs")
    document = views.update_operation("post", base, args=parser.specs)

    def commit() -> None:
        routes.model, routes.parser = model, parser
        document()

    return commit


def _route(method: Handler, model: str, endpoint: str) -> Handler:
    """A plain function over a bound handler (it can carry metric labels)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await method(request)

    return label(handler, model, endpoint)


POST_RESPONSES = {
    200: "The training's record (status queued or running)",
    400: "Malformed request body",
    408: "The request body stopped arriving (--client-timeout)",
    413: "Request body too large",
    422: "Invalid arguments, or more GPUs asked than the server has",
    501: "The model does not implement train",
    503: "The server is shutting down",
    507: "The state directory is full",
}


def setup(
    app: web.Application,
    spec: SpecBuilder,
    views: ModelViews,
    manager: JobManager | None,
    *,
    enabled: bool,
    limits: BodyLimits,
    lifecycle: Lifecycle | None = None,
) -> None:
    """Add the training routes of every model (402 when disabled).

    ``lifecycle`` refuses submissions (503) and ends log streams while the
    server drains; a fresh one (never draining) when not given.
    """
    bp = spec.base_path
    lifecycle = lifecycle if lifecycle is not None else Lifecycle()
    for name, model in views.wrappers.items():
        base = f"{bp}/v2/models/{name}/train/"
        one = base + "{uuid}"
        if not enabled or manager is None:
            off = label(disabled("train"), name, "train")
            for path in (base, one, one + "/logs", one + "/metrics"):
                app.router.add_route("*", path, off)
            continue
        routes = TrainRoutes(model, manager, limits, lifecycle)
        app.router.add_post(
            base,
            _route(routes.post, name, "train"),
            expect_handler=expect_within(limits),  # 413 before 100 Continue
        )
        app.router.add_get(base, _route(routes.list, name, "train"), allow_head=False)
        app.router.add_get(one, _route(routes.get, name, "train"), allow_head=False)
        app.router.add_delete(one, _route(routes.delete, name, "train"))
        logs = train_logs.LogRoutes(name, manager, lifecycle)
        app.router.add_get(
            one + "/logs", _route(logs.get, name, "train_logs"), allow_head=False
        )
        metrics = train_metrics.MetricsRoute(name, manager)
        app.router.add_get(
            one + "/metrics",
            _route(metrics.get, name, "train_metrics"),
            allow_head=False,
        )
        train_metrics.document(spec, one + "/metrics", name, UUID_PARAM)
        spec.add(
            Operation(
                "post",
                base,
                "Start a training",
                "models",
                POST_RESPONSES,
                args=routes.parser.specs,
                operation_id=f"train_{name}",
                # a 422 for too many GPUs is {"message": ...}: an object too
                schemas={200: TRAINING, 422: VALIDATION_ERRORS},
            )
        )
        views.on_refresh(
            name,
            functools.partial(_renew, views, routes, base),
            "the train arguments",
        )
        spec.add(
            Operation(
                "get",
                base,
                "List the trainings of this model",
                "models",
                {200: "The trainings' records"},
                operation_id=f"list_trainings_{name}",
                schemas={200: TRAINING_LIST},
            )
        )
        spec.add(
            Operation(
                "get",
                one,
                "Show one training",
                "models",
                {200: "The training's record", 404: "No such training"},
                path_params=UUID_PARAM,
                operation_id=f"get_training_{name}",
                schemas={200: TRAINING},
            )
        )
        spec.add(
            Operation(
                "delete",
                one,
                "Cancel a training (a finished one is answered unchanged)",
                "models",
                {
                    200: "The training's record",
                    404: "No such training",
                    409: "Another server sharing the state directory runs it and "
                    "did not cancel it in time (the answer names that server and "
                    "says whether the request was taken back or the cancel goes "
                    "on)",
                },
                path_params=UUID_PARAM,
                operation_id=f"cancel_training_{name}",
                schemas={200: TRAINING},
            )
        )
        spec.add(
            Operation(
                "get",
                one + "/logs",
                "The training's output (stdout and stderr)",
                "models",
                {
                    200: "Text from the offset on (X-Log-Offset: the next offset)",
                    404: "No such training",
                    422: "Bad offset or follow",
                },
                args=train_logs.LOG_ARGS,
                produces=["text/plain"],
                path_params=UUID_PARAM,
                operation_id=f"training_logs_{name}",
            )
        )
