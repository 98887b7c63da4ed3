"""aiohttp HTTP errors raised by plugin code (issue 8, points 9 and 12).

The status is kept and the message says what the plugin wrote: its text,
after its reason when it set both; an error the plugin failed to make
because current aiohttp refuses its arguments (``reason=exc``, a reason of
several lines, a text that is not a str) is answered as it was meant.
DEEPaaS 2.6.0 hung on every one of them (the exception could not be
unpickled from its worker pool).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import pytest_asyncio

from tests.support import Client, MakeClient, plugin_spec, training_ended

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

PREDICT = "/v2/models/http_errors/predict/"
TRAIN = "/v2/models/http_errors/train/"


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient, tmp_path_factory) -> Client:
    state_dir = str(tmp_path_factory.mktemp("state"))
    return await make_client(
        [plugin_spec("http_errors")], state_dir=state_dir, devices="cpu"
    )


async def error_of(client: Client, kind: str) -> tuple[int, Any]:
    response = await client.post(PREDICT, params={"kind": kind})
    assert response.content_type == "application/json"
    return response.status, await response.json()


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        # point 9: HTTPBadRequest(reason=exc), a TypeError in current aiohttp
        ("reason_exception", 400, "the image is too small"),
        ("reason_lines", 400, "line one\nline two"),  # a ValueError in aiohttp
        ("reason_int", 409, "42"),
        ("text_not_str", 400, "'no such key'"),
        ("own_class", 422, "the image is 8 px, at least 32"),
        ("bad_headers", 403, "closed"),
        # point 12: the text is kept, and the reason with it
        ("text", 400, "why"),
        ("reason", 400, "custom reason"),
        ("reason_and_text", 400, "Invalid image: why"),
        ("plain", 404, "Not Found"),
    ],
)
async def test_plugin_http_error_keeps_status_and_detail(client, kind, status, message):
    assert await error_of(client, kind) == (status, {"message": message})


async def test_other_type_errors_stay_500(client):
    assert await error_of(client, "type_error") == (
        500,
        {"message": "TypeError: not an HTTP error"},
    )


async def test_model_keeps_answering_after_each(client):
    for kind in ("reason_exception", "text", "reason_lines"):
        status, _ = await error_of(client, kind)
        assert status == 400
    assert (await error_of(client, "plain"))[0] == 404


async def test_training_that_raises_one_says_why(client):
    response = await client.post(TRAIN, json={"kind": "reason_exception"})
    assert response.status == 200, await response.text()
    uuid = (await response.json())["uuid"]
    record = await training_ended(client, TRAIN + uuid)
    assert record["status"] == "error"
    assert record["message"] == "the image is too small"


async def test_the_log_has_the_traceback_at_the_lines_level(client, caplog):
    """A plugin's 4xx is logged at INFO with its traceback in the same
    record; a 500 at WARNING, likewise (issue 15)."""
    caplog.set_level(logging.INFO, "deepaas.api.errors")
    for kind, level in (("text", logging.INFO), ("type_error", logging.WARNING)):
        caplog.clear()
        await error_of(client, kind)
        (record,) = [r for r in caplog.records if r.name == "deepaas.api.errors"]
        first, *lines = record.getMessage().splitlines()
        assert record.levelno == level, first
        assert first.startswith(f"POST {PREDICT} -> "), first
        assert lines[0] == "Traceback (most recent call last):"
        assert "http_errors.py" in "\n".join(lines)
