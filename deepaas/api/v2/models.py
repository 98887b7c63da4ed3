"""``/v2/`` and ``/v2/models/...``: the version and model documents.

A model's document is read each time it is asked for (``get_metadata()``
may answer something new), so a plugin's ``get_metadata()`` may fail then
(DEEPaaS 2.x answered 500 to the whole listing). Here one model's failure
never hides the others: the listing shows the broken model with its id,
name and links, the fallback description DEEPaaS 2.x gave a model whose
metadata it could not load, and an ``error`` saying why; its own
``/v2/models/NAME/`` answers 500 with that reason. ``--reload`` checks the
new version's metadata before serving it (:mod:`deepaas.api.views`).

``get_metadata()`` is plugin code: it runs on a thread of its model's own
(:func:`metadata_thread`, one call at a time), never on the event loop, so
a slow or stuck one (a file on a hung network share) holds up only the
requests for that model's document, which give up after
:data:`METADATA_TIMEOUT_S` with a 500 saying so; the probes, predictions,
trainings, the other models' documents and the server's stop go on. The
listing reads every model's document at once, and lists one that has not
answered by then as broken.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from deepaas.api.metrics import label
from deepaas.api.openapi import Operation, SpecBuilder
from deepaas.api.response_schemas import MODEL_META, MODELS, VERSION
from deepaas.api.scopes import PREDICT
from deepaas.api.versions import v2_version
from deepaas.api.views import ModelViews, ViewError, describe
from deepaas.exceptions import DeepaasError, echoed
from deepaas.lifecycle import Lifecycle
from deepaas.model.loading import defined_at
from deepaas.model.v2.results import dumps
from deepaas.model.v2.wrapper import ModelError, ModelWrapper
from deepaas.tasks import DaemonThread

LOG = logging.getLogger(__name__)

METADATA_TIMEOUT_S = 30.0  # a model document's request gives up after this
_THREADS: dict[str, DaemonThread] = {}


def metadata_thread(model: str) -> DaemonThread:
    """The thread that runs ``model``'s ``get_metadata()`` (made on first
    use): one per model, so that a stuck one holds up no other model."""
    thread = _THREADS.get(model)
    if thread is None:
        thread = _THREADS.setdefault(model, DaemonThread(f"deepaas-metadata-{model}"))
    return thread


def model_document(bp: str, model: ModelWrapper) -> dict[str, Any]:
    """The model's links, updated with its metadata (the model's keys win)."""
    document = _links(bp, model.name)
    document.update(model.get_metadata())
    return document


def _links(bp: str, name: str) -> dict[str, Any]:
    return {
        "id": name,
        "name": name,
        "links": [{"rel": "self", "href": f"{bp}/v2/models/{name}"}],
    }


def checked_document(bp: str, model: ModelWrapper) -> dict[str, Any]:
    """:func:`model_document`, which JSON can encode; else raises
    :class:`ViewError` saying why (what ``get_metadata()`` raised is its
    ``__cause__``)."""
    try:
        document = model_document(bp, model)
    except ModelError as exc:  # it returned no dict: where is it defined?
        location = defined_at(exc.source) if exc.source is not None else None
        suffix = f", at {location}" if location else ""
        raise ViewError(f"{exc.detail}{suffix}") from exc
    except Exception as exc:
        raise ViewError(f"get_metadata() failed: {describe(exc)}") from exc
    try:
        # Encoded as a prediction is: NaN and infinities as null (Python's
        # json writes bare NaN, which is no JSON), numpy values as numbers.
        return json.loads(dumps(document))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ViewError(
            f"get_metadata() returned what JSON cannot encode: {describe(exc)}"
        ) from exc


async def read_document(
    bp: str, model: ModelWrapper, timeout: float = METADATA_TIMEOUT_S
) -> dict[str, Any]:
    """:func:`checked_document` off the event loop; raises :class:`ViewError`
    also when ``get_metadata()`` has not answered in ``timeout`` seconds
    (it is then let finish, unwatched)."""
    future = asyncio.wrap_future(
        metadata_thread(model.name).submit(lambda: checked_document(bp, model))
    )
    try:
        return await asyncio.wait_for(future, timeout)
    except asyncio.TimeoutError:
        raise ViewError(
            f"get_metadata() did not answer within {timeout:g}s (it is slow or "
            "stuck, or a call of it before this one still runs)"
        ) from None


def _broken(bp: str, name: str, error: str) -> dict[str, Any]:
    """A model whose metadata failed, as the listing shows it."""
    return {
        **_links(bp, name),
        "description": (
            f"Could not load description from underlying model (loaded '{name}')"
        ),
        "error": error,
    }


def setup(
    app: web.Application, spec: SpecBuilder, views: ModelViews, lifecycle: Lifecycle
) -> None:
    bp = spec.base_path
    version = v2_version(bp)
    models = views.wrappers  # --reload replaces a model in it
    logged: dict[str, str] = {}  # the latest failure logged, per model

    async def document(name: str) -> dict[str, Any]:
        """The model's document; raises (and logs, once) :class:`ViewError`."""
        try:
            # In flight while get_metadata() runs on its thread: a stop
            # answers it (503 at the shutdown timeout), never drops it.
            with lifecycle.request():
                found = await read_document(bp, models[name])
        except ViewError as exc:
            if logged.get(name) != str(exc):  # once, not at every listing
                logged[name] = str(exc)
                LOG.error("model %s: %s", name, exc, exc_info=exc.__cause__)
            raise
        logged.pop(name, None)
        return found

    async def get_version(request: web.Request) -> web.Response:
        return web.json_response(version)

    async def listed(name: str) -> dict[str, Any]:
        try:
            return await document(name)
        except ViewError as exc:  # the others are listed all the same
            return _broken(bp, name, str(exc))

    async def list_models(request: web.Request) -> web.Response:
        # Every model's document at once (each on its model's thread): a
        # stuck get_metadata() costs the listing one timeout, not one each.
        listing = await asyncio.gather(*(listed(name) for name in list(models)))
        return web.json_response({"models": listing})

    app.router.add_get(
        f"{bp}/v2/", label(get_version, "", "versions"), allow_head=False
    )
    app.router.add_get(
        f"{bp}/v2/models/", label(list_models, "", "models"), allow_head=False
    )
    spec.add(
        Operation(
            "get",
            f"{bp}/v2/",
            "Get V2 API version information",
            "versions",
            {200: "The v2 API"},
            operation_id="get_version",
            schemas={200: VERSION},
        )
    )
    spec.add(
        Operation(
            "get",
            f"{bp}/v2/models/",
            "Return loaded models and metadata",
            "models",
            {200: "The served models"},
            operation_id="list_models",
            schemas={200: MODELS},
        )
    )
    for model in models.values():
        app.router.add_get(
            f"{bp}/v2/models/{model.name}/",
            _model_handler(document, model.name),
            allow_head=False,
        )
        views.on_refresh(model.name, functools.partial(_check, bp), "get_metadata()")
        spec.add(
            Operation(
                "get",
                f"{bp}/v2/models/{model.name}/",
                f"Return {model.name} model metadata",
                "models",
                {200: "The model's metadata"},
                operation_id=f"get_{model.name}",
                schemas={200: MODEL_META},
            )
        )

    async def unknown_model(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raise DeepaasError(
            404,
            f"model {echoed(name)} is not served here; served: {', '.join(models)}",
        )

    # Any other model name under /v2/models/ is a clear 404 naming it; the
    # lookahead leaves the served models' paths to their own routes.
    served = "|".join(re.escape(name) for name in models)
    name_pattern = f"(?!(?:{served})/)[^/]+" if served else "[^/]+"
    # Counted as "other" (no route of a model), answered to predict tokens:
    # the 404 names the models served.
    app.router.add_route(
        "*",
        f"{bp}/v2/models/{{name:{name_pattern}}}/{{rest:.*}}",
        label(unknown_model, "", "other", scope=PREDICT),
    )


def _model_handler(
    document: Callable[[str], Awaitable[dict[str, Any]]], name: str
) -> Any:
    # The model is looked up each time: --reload replaces it.
    async def get_model(request: web.Request) -> web.Response:
        try:
            return web.json_response(await document(name))
        except ViewError as exc:
            raise DeepaasError(500, f"model {name!r}: {exc}") from exc

    return label(get_model, name, "metadata")


def _check(bp: str, model: ModelWrapper) -> Callable[[], None]:
    """--reload: the new version's metadata must be served (or it raises)."""
    checked_document(bp, model)
    return lambda: None
