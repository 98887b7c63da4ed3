"""``GET /``: the versions document (DEEPaaS v2 shape)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from deepaas.api.metrics import label
from deepaas.api.openapi import Operation, SpecBuilder
from deepaas.api.response_schemas import VERSIONS


def v2_version(bp: str) -> dict[str, Any]:
    return {
        "version": "stable",
        "id": "v2",
        "links": [{"rel": "self", "type": "application/json", "href": f"{bp}/v2/"}],
    }


def setup(app: web.Application, spec: SpecBuilder, docs: bool) -> None:
    bp = spec.base_path
    links = [
        {"rel": "describedby", "type": "application/json", "href": f"{bp}/swagger.json"}
    ]
    if docs:
        links.insert(0, {"rel": "help", "type": "text/html", "href": f"{bp}/api"})
        # the training dashboard (deepaas.api.ui)
        dashboard = f"{bp}/ui/trainings"
        links.append({"rel": "related", "type": "text/html", "href": dashboard})
    document = {"versions": [v2_version(bp)], "links": links}

    async def get_versions(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get(f"{bp}/", label(get_versions, "", "versions"), allow_head=False)
    spec.add(
        Operation(
            "get",
            f"{bp}/",
            "Get available API versions",
            "versions",
            {200: "The API versions"},
            operation_id="get_versions",
            schemas={200: VERSIONS},
        )
    )
