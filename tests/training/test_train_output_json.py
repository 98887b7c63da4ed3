"""A training's result is sent as strict JSON: NaN and infinities as null
(issue 8, point 10, as for predictions)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import MakeClient, plugin_spec, training_ended

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

BASE = "/v2/models/nan_trainer/train/"


def strict_json(body: bytes) -> Any:
    def refuse(token: str) -> Any:
        raise AssertionError(f"the body is not JSON: it holds {token}")

    return json.loads(body, parse_constant=refuse)


async def test_a_diverged_training_result_is_strict_json(
    make_client: MakeClient, tmp_path
):
    client = await make_client(
        [plugin_spec("nan_trainer")], state_dir=str(tmp_path), devices="cpu"
    )
    response = await client.post(BASE, json={"epochs": 2})
    assert response.status == 200, await response.text()
    uuid = (await response.json())["uuid"]
    record = await training_ended(client, BASE + uuid, decode=strict_json)
    assert record["status"] == "done", record
    assert record["result"]["output"] == {
        "loss": None,
        "curve": [1.0, None, None],
        "best": None,
        "epochs": 2,
    }
    listing = strict_json(await (await client.get(BASE)).read())
    assert [r["result"]["output"]["loss"] for r in listing] == [None]
