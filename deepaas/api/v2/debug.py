"""``GET /v2/debug/``: captured log and worker output (204 when disabled)."""

from __future__ import annotations

from aiohttp import web

from deepaas.api.metrics import label
from deepaas.api.openapi import Operation, SpecBuilder
from deepaas.log import OutputCapture


def setup(
    app: web.Application, spec: SpecBuilder, capture: OutputCapture | None
) -> None:
    bp = spec.base_path

    async def get_debug(request: web.Request) -> web.Response:
        if capture is None:
            return web.Response(status=204)
        return web.Response(text=capture.getvalue(), content_type="text/plain")

    app.router.add_get(
        f"{bp}/v2/debug/", label(get_debug, "", "debug"), allow_head=False
    )
    spec.add(
        Operation(
            "get",
            f"{bp}/v2/debug/",
            "Return debug information",
            "debug",
            {200: "Captured output", 204: "Debug endpoint disabled"},
            produces=["text/plain"],
            operation_id="get_debug",
        )
    )
