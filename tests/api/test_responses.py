"""Predict responses and errors (contract section 3)."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.support import Client, MakeClient, plugin_spec, predict

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client([plugin_spec("outcomes"), plugin_spec("schema_check")])


async def outcome(client: Client, mode: str, expect: int) -> dict:
    response = await client.post("/v2/models/outcomes/predict/", params={"mode": mode})
    assert response.status == expect, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def test_wrapped_without_schema(client):
    body = await outcome(client, "ok", 200)
    assert body == {"status": "OK", "predictions": {"ok": True}}


async def test_schema_valid_output_is_sent_raw(client):
    body = await predict(client, "schema_check")
    assert body == {"value": 3, "label": "three"}


async def test_schema_invalid_output_is_500(client):
    body = await predict(client, "schema_check", expect=500, params={"valid": "no"})
    assert set(body) == {"message"}
    assert "did not match its schema" in body["message"]
    assert "value" in body["message"]


async def test_demo_schema_output_is_raw(demo_client):
    body = await predict(demo_client)
    assert set(body) == {"model", "warmed", "score", "received", "args"}
    assert body["warmed"] is True


async def test_model_exception_is_500_json(client):
    assert await outcome(client, "boom", 500) == {"message": "ValueError: boom"}


async def test_unexpected_exception_type(client):
    assert await outcome(client, "nonsense", 500) == {"message": "KeyError: 'nonsense'"}


async def test_http_exception_keeps_status_and_reason(client):
    assert await outcome(client, "http400", 400) == {"message": "nope"}


async def test_not_implemented_is_501(client):
    body = await outcome(client, "notimpl", 501)
    assert set(body) == {"message"}
    assert "not yet" in body["message"]


async def test_numpy_output_encoded(client):
    body = await outcome(client, "numpy", 200)
    assert body == {
        "status": "OK",
        "predictions": {"array": [0, 1, 2], "scalar": 1.5, "int": 7},
    }


async def test_model_keeps_working_after_errors(client):
    for mode, status in [("boom", 500), ("http400", 400), ("notimpl", 501)]:
        await outcome(client, mode, status)
        assert (await outcome(client, "ok", 200))["predictions"] == {"ok": True}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("DELETE", "/v2/models/", 405),
        ("GET", "/v2/models/nope/", 404),
        ("GET", "/v2/models/outcomes/predict/", 405),
    ],
)
async def test_errors_are_json_messages(client, method, path, status):
    response = await client.request(method, path)
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"message"} and isinstance(body["message"], str)
