"""The training dashboard: ``<base>/ui/trainings`` and its static assets.

One HTML page and a few plain JavaScript modules (no build step), served
from this package's own files; the charts are drawn by uPlot, vendored
from npm with its licence into ``static/`` by ``scripts/vendor-uplot.sh``
(``make vendor-ui``): nothing is fetched from a CDN, so the page works on
an air-gapped node. The page reads the API it already has (the model list,
the OpenAPI document for the start form, the training routes with
``/logs?follow=true`` and ``/metrics?since=``), by URLs relative to its own,
so it works under ``--base-path`` and behind a proxy that adds a prefix.

Like the Swagger UI, the page and its assets are open (the page must load
before it can ask for a token) and are off with ``--nodoc-endpoint``; the
API calls it makes carry the token the user typed (``Authorization:
Bearer``), and the routes check it as for any client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from deepaas.api.metrics import label

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
PAGE_FILE = HERE / "trainings.html"
#: Where the page lives, under the base path.
PAGE_PATH = "/ui/trainings"

#: The page may load and call only its own server: a request anywhere else
#: is refused by the browser (and nothing on it needs one). uPlot sizes its
#: elements through their ``style``; no inline script runs.
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
    )
)


def _docs(handler: Any) -> Any:
    return label(handler, "", "docs", scope=None)  # open, like the Swagger UI


def setup(app: web.Application, base_path: str, enabled: bool) -> None:
    """Add the page and its assets when ``enabled`` (``--doc-endpoint``)."""
    if not enabled:
        return
    page = PAGE_FILE.read_bytes()  # a few KB: read once

    async def trainings(request: web.Request) -> web.Response:
        return web.Response(
            body=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    async def slash(request: web.Request) -> web.Response:
        # relative URLs would resolve one level too deep: one page, one URL
        raise web.HTTPFound(f"{base_path}{PAGE_PATH}")

    app.router.add_get(f"{base_path}{PAGE_PATH}", _docs(trainings), allow_head=False)
    app.router.add_get(f"{base_path}{PAGE_PATH}/", _docs(slash), allow_head=False)
    app.router.add_static(f"{base_path}/ui/static", STATIC_DIR)
