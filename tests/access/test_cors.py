"""CORS (``--cors-origin``): preflights answered by the front door, CORS
headers on every answer to an allowed origin (errors too), none for other
origins, nothing at all when off."""

from __future__ import annotations

import pytest

from deepaas.config import load_settings
from tests.support import DEMO, MakeClient

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

APP = "http://app.example.org:8080"
EVIL = "https://evil.example.com"


def preflight(origin: str, method: str = "POST", headers: str = "") -> dict[str, str]:
    sent = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        sent["Access-Control-Request-Headers"] = headers
    return sent


async def test_off_by_default_nothing_changes(make_client: MakeClient) -> None:
    client = await make_client([DEMO])
    response = await client.options("/v2/models/", headers=preflight(APP))
    assert response.status == 405  # as before: no route answers OPTIONS
    response = await client.get("/v2/models/", headers={"Origin": APP})
    assert response.status == 200
    assert not any(h.lower().startswith("access-control") for h in response.headers)
    assert "Vary" not in response.headers


async def test_a_preflight_from_an_allowed_origin(make_client: MakeClient) -> None:
    client = await make_client([DEMO], cors_origin=(APP,))
    response = await client.options(
        "/v2/models/demo/predict/",
        headers=preflight(APP, headers="authorization, content-type, x-request-id"),
    )
    assert response.status == 204
    headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == (
        "authorization, content-type, x-request-id"
    )
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert headers.getall("Vary") == ["Origin"]  # once


async def test_a_preflight_from_another_origin_is_refused_clearly(
    make_client: MakeClient,
) -> None:
    client = await make_client([DEMO], cors_origin=(APP,))
    response = await client.options("/v2/models/", headers=preflight(EVIL, "GET"))
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "--cors-origin" in (await response.json())["message"]
    # An OPTIONS that is no preflight still goes to the routes
    response = await client.options("/v2/models/", headers={"Origin": APP})
    assert response.status == 405


async def test_answers_to_an_allowed_origin_can_be_read(
    make_client: MakeClient,
) -> None:
    client = await make_client([DEMO], cors_origin=(APP,))
    for path, status in (
        ("/v2/models/", 200),
        ("/v2/models/nope/", 404),  # an error too
        ("/no/such/route", 404),  # one no route made
        ("/v2/models/demo/predict/?number=1000", 422),
    ):
        method = "POST" if "predict" in path else "GET"
        response = await client.request(method, path, headers={"Origin": APP})
        assert response.status == status, path
        assert response.headers["Access-Control-Allow-Origin"] == APP
        exposed = response.headers["Access-Control-Expose-Headers"]
        for name in ("Content-Disposition", "X-Request-ID", "Retry-After"):
            assert name in exposed
        assert response.headers["Vary"] == "Origin"


async def test_another_origin_is_answered_without_cors_headers(
    make_client: MakeClient,
) -> None:
    client = await make_client([DEMO], cors_origin=(APP,))
    response = await client.get("/v2/models/", headers={"Origin": EVIL})
    assert response.status == 200  # answered: the browser keeps it from the page
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Vary"] == "Origin"  # caches keep one per origin
    response = await client.get("/v2/models/")  # no Origin: same-origin or curl
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_any_origin(make_client: MakeClient) -> None:
    client = await make_client([DEMO], cors_origin=("*",))
    response = await client.options("/v2/models/", headers=preflight(EVIL, "GET"))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    response = await client.get("/v2/models/", headers={"Origin": EVIL})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in response.headers


async def test_with_tokens_a_preflight_needs_none_and_a_401_is_readable(
    make_client: MakeClient,
) -> None:
    client = await make_client([DEMO], cors_origin=(APP,), auth_tokens="tok")
    response = await client.options(
        "/v2/models/", headers=preflight(APP, "GET", "authorization")
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Headers"] == "authorization"
    response = await client.get("/v2/models/", headers={"Origin": APP})
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "WWW-Authenticate" in response.headers["Access-Control-Expose-Headers"]


async def test_a_streamed_training_log_carries_them(make_client: MakeClient) -> None:
    client = await make_client([DEMO], cors_origin=(APP,))
    response = await client.post("/v2/models/demo/train/", json={"epochs": 1})
    uuid = (await response.json())["uuid"]
    response = await client.get(
        f"/v2/models/demo/train/{uuid}/logs", headers={"Origin": APP}
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "X-Log-Offset" in response.headers["Access-Control-Expose-Headers"]


async def test_an_origin_given_with_its_default_port_is_matched(
    make_client: MakeClient,
) -> None:
    """``--cors-origin https://b.example.org:443``: browsers send
    ``Origin: https://b.example.org``, without the default port."""
    settings = load_settings(
        ["--cors-origin", "https://b.example.org:443,http://c.example.org:80"]
    )
    client = await make_client([DEMO], cors_origin=settings.cors_origin)
    for origin in ("https://b.example.org", "http://c.example.org"):
        response = await client.options("/v2/models/", headers=preflight(origin))
        assert response.status == 204, origin
        assert response.headers["Access-Control-Allow-Origin"] == origin
        response = await client.get("/v2/models/", headers={"Origin": origin})
        assert response.headers["Access-Control-Allow-Origin"] == origin


async def test_requested_headers_are_header_names(make_client: MakeClient) -> None:
    """Access-Control-Request-Headers is a list of tokens (RFC 9110): empty
    items are dropped; an item that is no header name refuses the preflight
    as a disallowed origin is (no browser sends one), and is never echoed
    into Access-Control-Allow-Headers."""
    client = await make_client([DEMO], cors_origin=(APP,))
    response = await client.options(
        "/v2/models/", headers=preflight(APP, headers=" ,Authorization,, x-a_b.c ,")
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Headers"] == (
        "Authorization, x-a_b.c"
    )
    response = await client.options(
        "/v2/models/", headers=preflight(APP, headers=", ,")
    )
    assert response.status == 204
    assert "Access-Control-Allow-Headers" not in response.headers
    for wanted in ('xy, ,,, a b, "q"', "x-ok, a b", 'x-ok,"q"', "x:y", "x\ty", "é"):
        response = await client.options(
            "/v2/models/", headers=preflight(APP, headers=wanted)
        )
        assert response.status == 403, wanted
        assert "Access-Control-Allow-Headers" not in response.headers
        assert "Access-Control-Allow-Methods" not in response.headers
        assert response.headers["Vary"] == "Origin"
        assert "not a header name" in (await response.json())["message"]
