"""Every route declares who may call it (its scope), and the scopes are the
documented ones (docs/security.md)."""

from __future__ import annotations

import pytest
from aiohttp import web

from deepaas.api import auth
from deepaas.api.metrics import label
from deepaas.config import Settings
from deepaas.server import build_app
from tests.support import DEMO

TOKENS = "p-secret predict; t-secret train; a-secret admin; all-secret"

#: Every route of a fully configured app with one model -> the scope it
#: needs (None: open). A route added to deepaas and not listed here fails
#: test_every_route_has_the_scope_the_docs_say: say who may call it.
EXPECTED: dict[tuple[str, str], str | None] = {
    ("GET", "/"): None,
    ("GET", "/v2/"): None,
    ("GET", "/swagger.json"): None,
    ("GET", "/openapi.json"): None,
    ("GET", "/api"): None,
    ("GET", "/ui"): None,
    # the training dashboard: open like the Swagger UI (its API calls are not)
    ("GET", "/ui/trainings"): None,
    ("GET", "/ui/trainings/"): None,
    ("GET", "/ui/trainings/models.json"): None,
    ("GET", "/ui/static/{name}"): None,
    ("GET", "/swagger-ui/{name}"): None,
    ("HEAD", "/swagger-ui/{name}"): None,
    **{
        (method, path): None
        for method in ("GET", "HEAD")
        for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")
    },
    ("GET", "/v2/models/"): "predict",
    ("GET", "/v2/models/demo/"): "predict",
    ("*", "/v2/models/{name}/{rest}"): "predict",
    ("POST", "/v2/models/demo/predict/"): "predict",
    ("GET", "/v2"): "predict",
    ("HEAD", "/v2"): "predict",  # the OIP GET routes answer HEAD (RFC 9110)
    **{
        (method, f"{prefix}{tail}"): "predict"
        for prefix in (
            "/v2/models/demo",
            "/v2/models/demo/versions/{version}",
            "/v2/models/{name}",
            "/v2/models/{name}/versions/{version}",
        )
        for method, tail in (
            ("GET", ""),
            ("HEAD", ""),
            ("GET", "/ready"),
            ("HEAD", "/ready"),
            ("POST", "/infer"),
        )
    },
    ("POST", "/v2/models/demo/train/"): "train",
    ("GET", "/v2/models/demo/train/"): "train",
    ("GET", "/v2/models/demo/train/{uuid}"): "train",
    ("DELETE", "/v2/models/demo/train/{uuid}"): "train",
    ("GET", "/v2/models/demo/train/{uuid}/logs"): "train",
    ("GET", "/v2/models/demo/train/{uuid}/metrics"): "train",
    ("GET", "/v2/debug/"): "admin",
    ("GET", "/v2/system/"): "admin",
    ("GET", "/metrics"): "admin",
}


def test_every_route_has_the_scope_the_docs_say() -> None:
    app = build_app(Settings(debug_endpoint=True, auth_tokens=TOKENS), [DEMO])
    found = {
        (route.method, route.resource.canonical): auth.route_scope(route)
        for route in app.router.routes()
        if route.resource is not None
    }
    unlisted = sorted(set(found) - set(EXPECTED), key=str)
    assert not unlisted, f"routes without an expected scope here: {unlisted}"
    assert found == EXPECTED


def test_metrics_public_opens_metrics_only() -> None:
    app = build_app(Settings(auth_tokens=TOKENS, metrics_public=True), [DEMO])
    scopes = {
        (route.method, route.resource.canonical): auth.route_scope(route, True)
        for route in app.router.routes()
        if route.resource is not None
    }
    assert scopes[("GET", "/metrics")] is None
    assert scopes[("GET", "/v2/system/")] == "admin"


def test_a_route_that_declares_nothing_stops_the_app() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/fine", label(handler, "", "health"))

    async def forgotten(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/forgotten", forgotten)
    with pytest.raises(auth.UndeclaredRoute, match="/forgotten declares no scope"):
        auth.protect(app, None)


def test_a_family_without_a_scope_stops_the_app() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/new", label(handler, "", "brand_new"), allow_head=False)
    with pytest.raises(auth.UndeclaredRoute, match="family 'brand_new' has no scope"):
        auth.protect(app, None)
    label(handler, "", "brand_new", scope="admin")
    assert auth.protect(app, None) == {("GET", "/new"): "admin"}
