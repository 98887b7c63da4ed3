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
from tests.api.test_input_limits import (
    BOUNDARY,
    JSON,
    PREDICT,
    Answer,
    field,
    form_body,
    raw_post,
)
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


# -- values quoted by the libraries that read the body ------------------------


async def _raw(client: Client, path: str, body: bytes, **headers: str) -> Answer:
    answer = await raw_post(client, path, body, headers)
    text = answer.body.decode("utf-8", "replace")
    assert "x" * SHOWN not in text, text[:300]
    return answer


def _multipart(boundary: str = BOUNDARY) -> dict[str, str]:
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def test_a_long_multipart_boundary(client: Client) -> None:
    boundary = "x" * 3000
    body = form_body([(field("text"), b"t")], boundary)
    answer = await _raw(client, PREDICT, body, **_multipart(boundary))
    assert answer.status == 400
    assert "malformed multipart body" in answer.message()


async def test_a_long_charset_of_a_form_field(client: Client) -> None:
    head = field("text") + "\r\nContent-Type: text/plain; charset=" + "x" * 3000
    answer = await _raw(client, PREDICT, form_body([(head, b"t")]), **_multipart())
    assert answer.status == 400
    assert "unknown charset" in answer.message()


async def test_a_charset_no_codec_can_name(client: Client) -> None:
    """A charset with a byte that is no text: named, not Python's error
    about the surrogate it decoded to."""
    head = field("text").encode() + b"\r\nContent-Type: text/plain; charset=\xff"
    body = b"--%s\r\n%s\r\n\r\nt\r\n--%s--\r\n" % (
        BOUNDARY.encode(), head, BOUNDARY.encode()
    )  # fmt: skip
    answer = await _raw(client, PREDICT, body, **_multipart())
    assert answer.status == 400
    message = answer.message()
    assert "unknown charset" in message
    assert "surrogate" not in message


async def test_a_long_content_transfer_encoding(client: Client) -> None:
    head = field("text") + "\r\nContent-Transfer-Encoding: " + "x" * 3000
    answer = await _raw(client, PREDICT, form_body([(head, b"t")]), **_multipart())
    assert answer.status == 400


async def test_a_long_part_header_line(client: Client) -> None:
    head = field("text") + "\r\n" + "x" * 7000  # no colon
    answer = await _raw(client, PREDICT, form_body([(head, b"t")]), **_multipart())
    assert 400 <= answer.status < 500


async def test_a_long_expect_header(client: Client) -> None:
    answer = await _raw(client, PREDICT, b"{}", **JSON, Expect="x" * 3000)
    assert answer.status == 417
    assert "Unknown Expect" in answer.body.decode()


async def test_a_long_inference_header_length(client: Client) -> None:
    headers = {"Inference-Header-Content-Length": "9" * 3000, **JSON}
    answer = await raw_post(client, "/v2/models/demo/infer", b"{}", headers)
    assert answer.status == 400
    assert "9" * SHOWN not in answer.body.decode()
    assert "past the end of any body" in json.loads(answer.body)["error"]
