"""The training dashboard: ``<base>/ui/trainings`` and its static assets.

One HTML page and a few plain JavaScript modules (no build step), served
from this package's own files; the charts are drawn by uPlot, vendored
from npm with its licence into ``static/`` by ``scripts/vendor-uplot.sh``
(``make vendor-ui``): nothing is fetched from a CDN, so the page works on
an air-gapped node. The page reads the API it already has (the model list,
the OpenAPI document for the start form, the training routes with
``/logs?follow=true`` and ``/metrics?since=``), by URLs relative to its own,
so it works under ``--base-path`` and behind a proxy that adds a prefix.

One more document is the page's own, ``<base>/ui/trainings/models.json``:
which models have a ``train()`` (every model has the training routes, which
answer 501 without one), whether training is on, and how many GPUs the
trainings can lease (``gpus``: the start form shows ``deepaas_gpus`` only
when there are some); it names the models, as the open API documents do.

Like the Swagger UI, the page, its assets and that document are open (the page must load
before it can ask for a token) and are off with ``--nodoc-endpoint``; the
API calls it makes carry the token the user typed (``Authorization:
Bearer``), and the routes check it as for any client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from deepaas.api.metrics import label
from deepaas.api.views import ModelViews

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


#: The files' types by suffix (RFC 9239 for scripts; the licence as text).
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".LICENSE": "text/plain",
    ".VERSION": "text/plain",
}


class Assets:
    """The files of ``static/``, read once, served with an ETag and
    ``Cache-Control: no-cache``: a browser asks again each time (a 304 when
    unchanged), so a deepaas upgrade never runs yesterday's scripts against
    today's page."""

    def __init__(self, folder: Path) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(folder.iterdir()):
            kind = TYPES.get(path.suffix)
            if kind is None or not path.is_file():
                continue
            body = path.read_bytes()
            etag = hashlib.sha256(body).hexdigest()[:32]
            self.files[path.name] = (body, kind, f'"{etag}"')

    async def get(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind, etag = found
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        charset = "utf-8" if kind.startswith("text/") else None
        return web.Response(
            body=body, content_type=kind, charset=charset, headers=headers
        )


def _docs(handler: Any) -> Any:
    return label(handler, "", "docs", scope=None)  # open, like the Swagger UI


def setup(
    app: web.Application,
    base_path: str,
    views: ModelViews,
    *,
    enabled: bool,
    train_endpoint: bool,
    gpus: Callable[[], int] = lambda: 0,
) -> None:
    """Add the page and its assets when ``enabled`` (``--doc-endpoint``);
    ``views`` says which models can be trained (read per request: a
    ``--reload`` may change it), ``gpus()`` how many GPUs trainings lease."""
    if not enabled:
        return
    page = PAGE_FILE.read_bytes()  # a few KB: read once

    async def models(request: web.Request) -> web.Response:
        listed = [
            {"name": name, "train": wrapper.has_train}
            for name, wrapper in sorted(views.wrappers.items())
        ]
        document = {
            "train_endpoint": train_endpoint,
            "gpus": gpus(),
            "models": listed,
        }
        return web.json_response(document, headers={"Cache-Control": "no-cache"})

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
    app.router.add_get(
        f"{base_path}{PAGE_PATH}/models.json", _docs(models), allow_head=False
    )
    assets = Assets(STATIC_DIR)

    async def static(request: web.Request) -> web.Response:
        return await assets.get(request)

    app.router.add_get(
        f"{base_path}/ui/static/{{name}}", _docs(static), allow_head=False
    )
