"""Runs of slashes in a request's path (issue 8, point 1).

DEEPaaS 2.6.0 (aiohttp's ``normalize_path_middleware``) answered a path such
as ``//v2/models/demo/`` with a 308 to the route meant, and the Gradio UI
fetches model metadata that way. Requests are sent on a raw connection, so
the request target is exactly the one written here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import pytest_asyncio

from tests.support import DEMO_SPECS, Client, MakeClient

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


async def raw(
    client: Client, method: str, target: str, body: bytes = b"", **headers: str
) -> tuple[int, dict[str, str], Any]:
    """One request with ``target`` as written: (status, headers, JSON body)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"{head}Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    try:
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head_bytes, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    is_json = fields.get("Content-Type", "").startswith("application/json")
    return int(status_line.split()[1]), fields, json.loads(payload) if is_json else None


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client(DEMO_SPECS)


@pytest_asyncio.fixture(loop_scope="module")
async def based(make_client: MakeClient) -> Client:
    return await make_client(DEMO_SPECS, base_path="/foo")


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("///v2/models/demo/", "/v2/models/demo/"),
        ("//swagger.json", "/swagger.json"),
        ("//openapi.json", "/openapi.json"),
        ("//", "/"),
        ("///", "/"),
        # merged: /v2/models/demo is a route (OIP model metadata) since issue 10
        ("//v2//models//demo", "/v2/models/demo"),
        ("//v2//models//demo//", "/v2/models/demo/"),
        ("/v2/models//demo/?a=1&b=%2F%2F", "/v2/models/demo/?a=1&b=%2F%2F"),
        ("//api", "/api"),
        ("/v2//models/", "/v2/models/"),
    ],
)
async def test_runs_of_slashes_are_308_to_the_route(client, target, location):
    status, headers, body = await raw(client, "GET", target)
    assert status == 308
    assert headers["Location"] == location
    assert body == {"message": f"use {location}"}
    status, _, _ = await raw(client, "GET", location)
    assert status == 200


async def test_the_gradio_ui_metadata_fetch_lands(client):
    # as the Gradio UI does: its base URL ends in "/" and the paths start with
    # one; aiohttp's client follows the 308 as the UI's requests does
    url = f"http://{client.host}:{client.port}/" + "/v2/models/demo/"
    response = await client.session.get(url)
    assert response.status == 200
    assert (await response.json())["name"] == "demo"
    assert response.history[0].status == 308


async def test_predict_with_slashes_keeps_method_body_and_query(client):
    body = json.dumps({"data": "abc"}).encode()
    status, headers, _ = await raw(
        client,
        "POST",
        "//v2/models/demo_class/predict/?accept=application/json",
        body,
        Content_Type="application/json",
    )
    assert status == 308
    location = headers["Location"]
    assert location == "/v2/models/demo_class/predict/?accept=application/json"
    status, _, answer = await raw(
        client, "POST", location, body, Content_Type="application/json"
    )
    assert status == 200
    assert answer["upper"] == "ABC"


async def test_wrong_method_still_redirects_to_the_route(client):
    # the route exists (405 there): the client gets the 405 from the right URL
    status, headers, _ = await raw(client, "DELETE", "//v2/models/")
    assert status == 308
    assert headers["Location"] == "/v2/models/"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.com/x",
        "//evil.com",
        "//evil.com/v2/models/",
        "///evil.com/",
        "/\\evil.com/",
        "//nope",
        "//%2Fevil.com/",
        "/v2%2F%2Fmodels/",
    ],
)
async def test_no_route_no_redirect(client, target):
    status, headers, body = await raw(client, "GET", target)
    assert status == 404
    assert "Location" not in headers
    assert set(body) == {"message"}


async def test_a_route_that_then_finds_nothing(client):
    # /v2/models/{m}/ is a route: the redirect lands, the model is not there
    status, headers, _ = await raw(client, "GET", "//v2/models/nope/")
    assert status == 308
    status, _, body = await raw(client, "GET", headers["Location"])
    assert status == 404
    assert set(body) == {"message"}


async def test_with_a_base_path(based):
    status, headers, _ = await raw(based, "GET", "//foo//v2/models/demo/?x=1")
    assert status == 308
    assert headers["Location"] == "/foo/v2/models/demo/?x=1"
    status, headers, _ = await raw(based, "GET", "//foo")
    assert status == 308
    assert headers["Location"] == "/foo/"
    status, _, _ = await raw(based, "GET", "//v2/models/demo/")  # no prefix
    assert status == 404
