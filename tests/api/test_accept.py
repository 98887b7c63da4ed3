"""The ``accept`` argument: negotiation and raw responses (contract section 1)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import pytest_asyncio
from multidict import CIMultiDict

from tests.plugins import binary
from tests.support import (
    Client,
    MakeClient,
    plugin_spec,
    predict,
    tmp_dir_empties,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

PREDICT = "/v2/models/demo/predict/"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# -- header negotiation (demo: accept has location "headers") ---------------------


async def test_accept_png(demo_client):
    response = await demo_client.post(PREDICT, headers={"Accept": "image/png"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/png"
    assert png_size(await response.read()) == (8, 8)


@pytest.mark.parametrize(
    "accept",
    [
        "*/*",
        "application/json",
        "text/html,application/xhtml+xml,*/*;q=0.8",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "application/json, text/plain;q=0.5",
    ],
)
async def test_accept_json_path(demo_client, accept):
    response = await demo_client.post(PREDICT, headers={"Accept": accept})
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["model"] == "demo"  # the schema-validated raw output
    assert body["args"]["accept"] == "application/json"  # never */*


async def test_no_accept_header_uses_the_default(demo_client):
    response = await demo_client.post(PREDICT, skip_auto_headers=["Accept"])
    assert response.status == 200
    assert (await response.json())["args"]["accept"] == "application/json"


async def test_several_accept_lines_are_one_list(demo_client):
    """RFC 9110, 5.3: ``Accept: text/html`` then ``Accept: image/png``."""
    headers = CIMultiDict([("Accept", "text/html"), ("Accept", "image/png")])
    response = await demo_client.post(PREDICT, headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "image/png"


@pytest.mark.parametrize("accept", [",", " , ,", ";q=0.5"])
async def test_an_accept_header_of_empty_elements_is_no_preference(demo_client, accept):
    # RFC 9110, 5.6.1: empty list elements are ignored; nothing is left.
    response = await demo_client.post(PREDICT, headers={"Accept": accept})
    assert response.status == 200, await response.text()
    assert (await response.json())["args"]["accept"] == "application/json"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("image/*", "image/png"),
        ("text/plain;q=0.5, image/png", "image/png"),
        ("image/png;q=0.1, text/plain;q=0.9", "text/plain; charset=utf-8"),
        ("text/html, image/png;q=0.3, */*;q=0.1", "image/png"),
        ("IMAGE/PNG", "image/png"),
    ],
)
async def test_accept_ranking(demo_client, accept, content_type):
    response = await demo_client.post(PREDICT, headers={"Accept": accept})
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type


async def test_accept_text(demo_client):
    response = await demo_client.post(
        PREDICT, params={"number": "3"}, headers={"Accept": "text/plain"}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    text = await response.text()
    assert "number=3\n" in text
    assert 'accept="text/plain"\n' in text


@pytest.mark.parametrize("accept", ["image/gif", "application/xml;q=0.9"])
async def test_unsupported_accept_is_422(demo_client, accept):
    response = await demo_client.post(PREDICT, headers={"Accept": accept})
    assert response.status == 422
    body = await response.json()
    assert list(body) == ["accept"]
    assert "image/png" in body["accept"][0]


async def test_accept_header_ignored_in_query(demo_client):
    # demo reads accept from the header only
    response = await demo_client.post(
        PREDICT, params={"accept": "image/png"}, headers={"Accept": "application/json"}
    )
    assert response.content_type == "application/json"


# -- accept from query/form/JSON (demo_class: no location) --------------------------


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"params": {"data": "abc", "accept": "application/octet-stream"}},
        {"json": {"data": "abc", "accept": "application/octet-stream"}},
        {"data": {"data": "abc", "accept": "application/octet-stream"}},
    ],
    ids=["query", "json", "form"],
)
async def test_accept_from_arguments(demo_client, request_kwargs):
    response = await demo_client.post(
        "/v2/models/demo_class/predict/", **request_kwargs
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert await response.read() == b"abc"


async def test_accept_header_not_read_without_header_location(demo_client):
    response = await demo_client.post(
        "/v2/models/demo_class/predict/",
        params={"data": "abc"},
        headers={"Accept": "application/octet-stream"},
    )
    assert response.status == 200
    assert await response.json() == {
        "data": "abc",
        "upper": "ABC",
        "length": 3,
        "warmed": True,
    }


async def test_accept_argument_validated(demo_client):
    body = await predict(
        demo_client,
        "demo_class",
        expect=422,
        params={"data": "abc", "accept": "text/plain"},
    )
    # the plugin's own choices, as DEEPaaS 2.6.0 listed them (*/* is accepted)
    assert body == {
        "accept": ["Must be one of: application/json, application/octet-stream."]
    }
    body = await predict(
        demo_client, "demo_class", params={"data": "abc", "accept": "*/*"}
    )
    assert body["upper"] == "ABC"


# -- plugins with unusual accept fields, binary outputs -----------------------------


async def test_accept_without_validator(make_client: MakeClient):
    client = await make_client([plugin_spec("free", "accept_free")])
    body = await predict(client, "free")
    assert body == {"status": "OK", "predictions": {"accept": "application/json"}}
    response = await client.post(
        "/v2/models/free/predict/", params={"accept": "text/plain"}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert await response.text() == "plain text"
    spec = await (await client.get("/swagger.json")).json()
    assert spec["paths"]["/v2/models/free/predict/"]["post"]["produces"] == [
        "application/json"
    ]


@pytest_asyncio.fixture(loop_scope="module")
async def binary_client(make_client: MakeClient) -> Client:
    return await make_client([plugin_spec("binary")])


async def test_tuple_choices(binary_client):
    client = binary_client
    body = await predict(client, "binary")
    assert body == {
        "status": "OK",
        "predictions": {"kind": "json", "accept": "application/json"},
    }
    spec = await (await client.get("/swagger.json")).json()
    post = spec["paths"]["/v2/models/binary/predict/"]["post"]
    assert post["produces"] == [*binary.ACCEPT, "*/*"]
    body = await predict(client, "binary", expect=422, params={"accept": "a/b"})
    assert list(body) == ["accept"]


@pytest.mark.parametrize("accept", ["application/pdf", "application/json", "*/*"])
async def test_returned_file(binary_client, accept):
    client = binary_client
    response = await client.post(
        "/v2/models/binary/predict/",
        params={"kind": "returned_file", "accept": accept},
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/pdf"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert 'filename="report.pdf"' in disposition
    assert await response.read() == Path(binary.__file__).read_bytes()
    assert Path(binary.__file__).exists()  # the plugin's own file is kept


async def test_open_file_streamed(binary_client):
    client = binary_client
    response = await client.post(
        "/v2/models/binary/predict/",
        params={"kind": "open_file", "accept": "application/octet-stream"},
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert 'filename="binary.py"' in response.headers["Content-Disposition"]
    assert await response.read() == Path(binary.__file__).read_bytes()
    assert await tmp_dir_empties(client) == []


async def test_bytesio(binary_client):
    client = binary_client
    response = await client.post(
        "/v2/models/binary/predict/",
        json={"kind": "bytesio", "accept": "application/pdf"},
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert "Content-Disposition" not in response.headers
    assert await response.read() == b"from bytesio"


async def test_large_bytes_intact(binary_client):
    client = binary_client
    response = await client.post(
        "/v2/models/binary/predict/",
        params={"kind": "big", "accept": "application/octet-stream"},
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    body = await response.read()
    assert len(body) == binary.BIG_SIZE > 1024 * 1024
    assert body == binary.big_bytes()
    assert await tmp_dir_empties(client) == []  # the result file is removed


async def test_bytes_when_json_asked_use_the_binary_type(binary_client):
    client = binary_client
    response = await client.post(
        "/v2/models/binary/predict/", params={"kind": "bytesio"}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert await response.read() == b"from bytesio"


async def test_json_value_when_bytes_asked_is_json(binary_client):
    client = binary_client
    response = await client.post(
        "/v2/models/binary/predict/", params={"accept": "application/pdf"}
    )
    assert response.status == 200
    assert response.content_type == "application/json"
    assert (await response.json())["predictions"]["accept"] == "application/pdf"


@pytest.mark.parametrize(
    "header",
    [
        {"Range": "bytes=0-9"},
        {"If-Modified-Since": "Sun, 01 Jan 2090 00:00:00 GMT"},
        {"If-None-Match": "*"},
        {"If-Match": '"nope"'},
    ],
    ids=lambda h: next(iter(h)),
)
async def test_large_result_ignores_range_and_conditions(binary_client, header):
    # a POST's answer is always the whole, fresh result (no 206/304/412)
    response = await binary_client.post(
        "/v2/models/binary/predict/",
        params={"kind": "big", "accept": "application/octet-stream"},
        headers=header,
    )
    assert response.status == 200
    assert await response.read() == binary.big_bytes()
    assert "Content-Range" not in response.headers


async def test_large_json_result(binary_client):
    response = await binary_client.post(
        "/v2/models/binary/predict/", params={"kind": "big_json"}
    )
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert body == {"status": "OK", "predictions": {"items": list(range(300_000))}}
    assert await tmp_dir_empties(binary_client) == []


async def test_returned_file_missing_is_500(binary_client):
    body = await predict(
        binary_client,
        "binary",
        expect=500,
        params={"kind": "missing_file", "accept": "application/pdf"},
    )
    assert "ReturnedFile" in body["message"]
    assert "/nonexistent/deepaas-test.pdf" in body["message"]
