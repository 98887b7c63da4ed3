"""Wildcard ``accept`` values and the 422 for a bad one (issue 8, points 6, 7).

deepaas adds ``*/*`` to a plugin's accept choices; a plugin never receives
it: where only a wildcard matches, it gets its own choice (its default when
that is one of its choices, else its first). The 422 for a value it does
not produce lists the plugin's own choices, in its own words, as DEEPaaS
2.6.0 did.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.plugins import formats
from tests.support import DEMO_SPECS, Client, MakeClient, plugin_spec, predict

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

HEADER = "/v2/models/formats/predict/"  # accept from the Accept header
QUERY = "/v2/models/query_formats/predict/"  # accept from the arguments
PNG = formats.FORMATS["image/png"]


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client(
        [
            plugin_spec("formats"),
            plugin_spec("query_formats", "formats:QueryFormats"),
            *DEMO_SPECS,
        ]
    )


@pytest.mark.parametrize(
    ("accept", "content_type", "body"),
    [
        ("*/*", "image/png", PNG),  # curl's, requests' and httpie's default
        ("text/html,application/xhtml+xml,*/*;q=0.8", "image/png", PNG),  # browsers
        ("application/xml, */*;q=0.1", "image/png", PNG),
        ("text/*", "text/plain; charset=utf-8", b"plain text"),
        ("image/*;q=0.2, text/*;q=0.9", "text/plain; charset=utf-8", b"plain text"),
        ("application/json", "application/json", None),
    ],
)
async def test_wildcards_reach_the_plugin_as_its_own_choice(
    client, accept, content_type, body
):
    response = await client.post(HEADER, headers={"Accept": accept})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == content_type
    if body is None:
        assert await response.json() == {
            "status": "OK",
            "predictions": {"format": "json"},
        }
    else:
        assert await response.read() == body


@pytest.mark.parametrize("accept", ["*/*", "text/html, */*;q=0.5", None])
async def test_the_plugin_never_receives_a_wildcard(client, accept):
    headers = {"Accept": accept} if accept else {}
    skip = [] if accept else ["Accept"]
    response = await client.post(
        HEADER, params={"mode": "echo"}, headers=headers, skip_auto_headers=skip
    )
    assert response.status == 200
    body = await response.json()  # a JSON-able value for image/png: sent as JSON
    assert body["predictions"] == {"accept": "image/png"}


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        # "anything but PNG": the plugin's next choice
        ("image/png;q=0, */*", "text/plain; charset=utf-8"),
        ("image/*;q=0, */*;q=0.5", "text/plain; charset=utf-8"),
        ("image/png;q=0, text/plain;q=0, */*", "application/json"),
        # a range refused, an exact type of it asked for: the exact one wins
        ("image/*;q=0, image/png", "image/png"),
    ],
)
async def test_types_refused_with_q0_are_not_chosen_for_a_wildcard(
    client, accept, content_type
):
    response = await client.post(HEADER, headers={"Accept": accept})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == content_type


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("application/json;q=0, */*", "image/png"),
        # PNG named, but with less weight than anything else: the default
        ("*/*, image/png;q=0.5", "application/json"),
        ("image/png;q=0.5, text/*;q=0.7", "text/plain; charset=utf-8"),
    ],
)
async def test_demo_weights(client, accept, content_type):
    response = await client.post("/v2/models/demo/predict/", headers={"Accept": accept})
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type


async def test_everything_refused_is_422(client):
    response = await client.post(
        HEADER,
        headers={"Accept": "image/png;q=0, text/plain;q=0, application/json;q=0, */*"},
    )
    assert response.status == 422


@pytest.mark.parametrize("accept", ["image/gif", "application/xml;q=0.9", "video/*"])
async def test_an_accept_header_matching_nothing_is_422_with_the_plugins_choices(
    client, accept
):
    response = await client.post(HEADER, headers={"Accept": accept})
    assert response.status == 422
    assert response.content_type == "application/json"
    # exactly DEEPaaS 2.6.0's answer: the plugin's choices, not */*
    assert await response.json() == {
        "accept": ["Must be one of: image/png, text/plain, application/json."]
    }


# -- accept from the query string, form or JSON body ------------------------------


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"params": {"accept": "*/*", "mode": "echo"}},
        {"json": {"accept": "*/*", "mode": "echo"}},
        {"data": {"accept": "*/*", "mode": "echo"}},
        {"params": {"mode": "echo"}},
    ],
    ids=["query", "json", "form", "absent"],
)
async def test_an_argument_wildcard_is_the_plugins_default(client, request_kwargs):
    # its default (application/json) is one of its choices, though not the first
    response = await client.post(QUERY, **request_kwargs)
    assert response.status == 200
    assert await response.json() == {
        "status": "OK",
        "predictions": {"accept": "application/json"},
    }


async def test_an_argument_wildcard_looked_up_by_the_plugin(client):
    body = await predict(client, "query_formats", params={"accept": "*/*"})
    assert body == {"status": "OK", "predictions": {"format": "json"}}


async def test_a_bad_argument_keeps_the_plugins_own_message(client):
    body = await predict(client, "query_formats", expect=422, params={"accept": "x/y"})
    assert body == {
        "accept": [
            "x/y is not one of my formats: image/png, text/plain, application/json"
        ]
    }


async def test_the_spec_still_offers_the_wildcard(client):
    spec = await (await client.get("/swagger.json")).json()
    produces = spec["paths"][HEADER]["post"]["produces"]
    assert produces == [*formats.CHOICES, "*/*"]


# -- the demo plugin ----------------------------------------------------------------


async def test_demo_gets_json_for_any(client):
    response = await client.post("/v2/models/demo/predict/", headers={"Accept": "*/*"})
    assert response.status == 200
    assert (await response.json())["args"]["accept"] == "application/json"


async def test_demo_class_message_lists_its_choices(client):
    body = await predict(
        client, "demo_class", expect=422, params={"data": "a", "accept": "text/plain"}
    )
    assert body == {
        "accept": ["Must be one of: application/json, application/octet-stream."]
    }
