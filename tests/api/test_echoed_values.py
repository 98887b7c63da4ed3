"""An error about a value the client sent names it, elided: a long model
name, training id, header, form field, tensor name or path is not sent back
whole (:func:`deepaas.exceptions.echoed`, :func:`~deepaas.exceptions.elided`).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from deepaas.exceptions import echoed, elided
from tests.support import DEMO, Client, MakeClient

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

LONG = "x" * 3000
SHOWN = 100  # at most this many characters of a value in a message


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client([DEMO], cors_origin=("https://app.example",))


async def test_echoed_keeps_a_short_value_and_elides_a_long_one() -> None:
    assert echoed("demo") == "'demo'"
    assert echoed(LONG).startswith("'xxx") and "..." in echoed(LONG)
    assert len(echoed(LONG)) <= 80
    assert elided("/v2/models/") == "/v2/models/"
    assert len(elided("/" + LONG)) == 80


def _message(body: Any) -> str:
    return body.get("message") or body.get("error") or json.dumps(body)


async def _checked(response: aiohttp.ClientResponse, status: int) -> str:
    assert response.status == status, await response.text()
    text = await response.text()
    assert "x" * SHOWN not in text, text[:300]
    assert "..." in text
    return _message(await response.json())


async def test_a_long_model_name(client: Client) -> None:
    message = await _checked(await client.get(f"/v2/models/{LONG}/"), 404)
    assert "is not served here" in message


async def test_a_long_model_name_on_the_oip_route(client: Client) -> None:
    message = await _checked(await client.get(f"/v2/models/{LONG}"), 404)
    assert "is not served here" in message


async def test_a_long_oip_version(client: Client) -> None:
    path = f"/v2/models/demo/versions/{LONG}"
    assert "has no version" in await _checked(await client.get(path), 404)


async def test_a_long_training_id(client: Client) -> None:
    path = f"/v2/models/demo/train/{LONG}"
    assert "has no training" in await _checked(await client.get(path), 404)


async def test_a_long_path_with_no_route(client: Client) -> None:
    assert "no route" in await _checked(await client.get(f"/{LONG}"), 404)


async def test_a_long_content_encoding(client: Client) -> None:
    response = await client.post(
        "/v2/models/demo/predict/",
        data=b"{}",
        headers={"Content-Type": "application/json", "Content-Encoding": LONG},
    )
    assert "Content-Encoding" in await _checked(response, 400)


async def test_a_long_cors_origin(client: Client) -> None:
    headers = {"Origin": f"https://{LONG}", "Access-Control-Request-Method": "GET"}
    response = await client.options("/v2/models/", headers=headers)
    assert "may not call this API" in await _checked(response, 403)


async def test_a_long_oip_input_name(client: Client) -> None:
    body = {"inputs": [{"name": LONG, "shape": [1], "datatype": "INT64", "data": [1]}]}
    response = await client.post("/v2/models/demo/infer", json=body)
    assert "has no input" in await _checked(response, 400)


async def test_a_long_oip_output_name(client: Client) -> None:
    body = {"inputs": [], "outputs": [{"name": LONG}]}
    response = await client.post("/v2/models/demo/infer", json=body)
    assert "has no output" in await _checked(response, 400)
