"""``/v2/`` and ``/v2/models/...``: the version and model documents."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from deepaas.api.metrics import label
from deepaas.api.openapi import Operation, SpecBuilder
from deepaas.api.response_schemas import MODEL_META, MODELS, VERSION
from deepaas.api.versions import v2_version
from deepaas.exceptions import DeepaasError
from deepaas.model.v2.wrapper import ModelWrapper


def model_document(bp: str, model: ModelWrapper) -> dict[str, Any]:
    """The model's links, updated with its metadata (the model's keys win)."""
    document: dict[str, Any] = {
        "id": model.name,
        "name": model.name,
        "links": [{"rel": "self", "href": f"{bp}/v2/models/{model.name}"}],
    }
    document.update(model.get_metadata())
    return document


def setup(
    app: web.Application, spec: SpecBuilder, models: Mapping[str, ModelWrapper]
) -> None:
    bp = spec.base_path
    version = v2_version(bp)

    async def get_version(request: web.Request) -> web.Response:
        return web.json_response(version)

    async def list_models(request: web.Request) -> web.Response:
        return web.json_response(
            {"models": [model_document(bp, m) for m in models.values()]}
        )

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
            _model_handler(bp, models, model.name),
            allow_head=False,
        )
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
            404, f"model {name!r} is not served here; served: {', '.join(models)}"
        )

    # Any other model name under /v2/models/ is a clear 404 naming it; the
    # lookahead leaves the served models' paths to their own routes.
    served = "|".join(re.escape(name) for name in models)
    name_pattern = f"(?!(?:{served})/)[^/]+" if served else "[^/]+"
    app.router.add_route(
        "*", f"{bp}/v2/models/{{name:{name_pattern}}}/{{rest:.*}}", unknown_model
    )


def _model_handler(bp: str, models: Mapping[str, ModelWrapper], name: str) -> Any:
    # The model is looked up each time: --reload replaces it in ``models``.
    async def get_model(request: web.Request) -> web.Response:
        return web.json_response(model_document(bp, models[name]))

    return label(get_model, name, "metadata")
