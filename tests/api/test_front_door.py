"""The front door (``deepaas.api.front``): errors as JSON, every request counted,
with no aiohttp middleware in the way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from deepaas.api import front
from deepaas.api.metrics import OTHER, Metrics, label
from deepaas.exceptions import DeepaasError

pytestmark = pytest.mark.timeout(30)


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def broken(request: web.Request) -> web.Response:
    raise ZeroDivisionError("division by zero")


async def refused(request: web.Request) -> web.Response:
    raise DeepaasError(409, "busy: retry later", {"Retry-After": "2"})


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient, Metrics]]:
    metrics = Metrics({})
    app = web.Application()
    app.router.add_get("/ok/", label(ok, "m", "ok"))
    app.router.add_get("/broken/", label(broken, "m", "broken"))
    app.router.add_get("/refused/", label(refused, "m", "refused"))
    client = TestClient(TestServer(app))
    await client.start_server()
    runner = client.server.runner
    assert isinstance(runner, web.AppRunner)
    front.install(runner, metrics)
    front.install(runner, metrics)  # twice: still one door
    try:
        yield client, metrics
    finally:
        await client.close()


async def test_answers_and_counts_under_the_routes_labels(served) -> None:
    client, metrics = served
    response = await client.get("/ok/")
    assert response.status == 200
    assert metrics.requests.value("m", "ok", "200") == 1


async def test_an_unexpected_error_is_a_json_500_counted_once(served) -> None:
    client, metrics = served
    response = await client.get("/broken/")
    assert response.status == 500
    assert await response.json() == {
        "message": "Internal server error: ZeroDivisionError: division by zero"
    }
    assert metrics.requests.value("m", "broken", "500") == 1


async def test_a_deepaas_error_keeps_its_status_message_and_headers(served) -> None:
    client, metrics = served
    response = await client.get("/refused/")
    assert response.status == 409
    assert response.headers["Retry-After"] == "2"
    assert await response.json() == {"message": "busy: retry later"}
    assert metrics.requests.value("m", "refused", "409") == 1


async def test_no_route_is_a_json_404_or_a_308_counted_as_other(served) -> None:
    client, metrics = served
    response = await client.get("/nope/")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert "message" in await response.json()
    response = await client.get("/ok", allow_redirects=False)  # no slash
    assert response.status == 308
    assert response.headers["Location"] == "/ok/"
    assert metrics.requests.value(*OTHER, "404") == 1
    assert metrics.requests.value(*OTHER, "308") == 1


async def test_a_wrong_method_is_a_json_405_with_allow(served) -> None:
    client, _ = served
    response = await client.post("/ok/")
    assert response.status == 405
    assert response.headers["Allow"] == "GET,HEAD"
    assert response.content_type == "application/json"
    assert await response.json() == {
        "message": "POST is not allowed on /ok/; it takes GET, HEAD"
    }


async def test_install_needs_a_runner_that_is_set_up() -> None:
    runner = web.AppRunner(web.Application())
    with pytest.raises(RuntimeError, match=r"after runner\.setup"):
        front.install(runner, Metrics({}))
