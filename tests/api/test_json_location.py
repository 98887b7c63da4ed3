"""A required argument read from the JSON body only, sent elsewhere: the
422 says where it is read (it said "Missing data for required field.",
though the client sent it)."""

from __future__ import annotations

import aiohttp
import pytest
import pytest_asyncio

from tests.support import Client, MakeClient, plugin_spec, predict

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client([plugin_spec("json_required")])


async def test_sent_in_a_json_body_it_is_read(client: Client) -> None:
    body = await predict(client, "json_required", json={"x": 3}, params={"note": "n"})
    assert body["predictions"] == {"x": 3, "note": "n"}


@pytest.mark.parametrize(
    ("request_kwargs", "sent"),
    [
        ({"params": {"x": "3"}}, "in the query string"),
        ({"data": {"x": "3"}}, "as a form field"),
    ],
)
async def test_sent_elsewhere_the_422_says_where_it_is_read(
    client: Client, request_kwargs: dict, sent: str
) -> None:
    body = await predict(client, "json_required", expect=422, **request_kwargs)
    (message,) = body["errors"]["x"] if "errors" in body else body["x"]
    assert f"sent {sent}" in message and "JSON body" in message, body


async def test_a_multipart_part_of_json_text_is_read(client: Client) -> None:
    form = aiohttp.FormData()
    form.add_field("x", "5", content_type="application/json")
    form.add_field("f", b"bytes", filename="f.bin")
    body = await predict(client, "json_required", data=form)
    assert body["predictions"]["x"] == 5


@pytest.mark.parametrize("text", ["abc", "", "{"])
async def test_a_multipart_part_not_json_says_its_value_is_json_text(
    client: Client, text: str
) -> None:
    # curl -F x=abc sends bare text: "Not valid JSON" alone left the sender
    # without a clue that the part is read as JSON (a string quoted).
    form = aiohttp.FormData()
    form.add_field("x", text)
    form.add_field("f", b"bytes", filename="f.bin")
    body = await predict(client, "json_required", data=form, expect=422)
    (message,) = body["errors"]["x"] if "errors" in body else body["x"]
    assert message.startswith("Not valid JSON: "), body
    assert "read from the JSON body" in message and "JSON text" in message, body


async def test_not_sent_at_all_it_is_marshmallows_missing(client: Client) -> None:
    body = await predict(client, "json_required", expect=422)
    assert "Missing data for required field." in str(body)
    assert "JSON body" not in str(body)
