"""Concurrent infer calls of a tensor-native plugin with a batch axis are
batched: stacked into one ``infer`` call, split back per request.

Which batches formed is read from what the model saw (``tensor_batcher``
writes the first value of each row of each call to a file), never from
timing: a first request holds the model until the test opens a gate, the
others queue up behind it (the test waits until the queue holds them all),
then the gate opens and the model takes them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from deepaas.engine.runtime import ModelRuntime
from deepaas.server import SERVER
from tests.support import Client, MakeClient, eventually, plugin_spec, wait_for

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

MODEL = "tensor_batcher"
HOLD = -7.0  # the plugin waits for the gate
RAISE = -8.0
SHORT = -9.0  # the plugin answers one row too few
REFUSE = -6.0  # the plugin refuses the input (a TensorInputError)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the plugin writes what it saw (its workers inherit the variable)."""
    path = tmp_path_factory.mktemp("tensor-events")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TENSOR_EVENTS", str(path))
        yield path


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient, events: Path) -> Client:
    started = await make_client([plugin_spec(MODEL)], workers=1)

    async def ready() -> bool:
        return (await started.get(f"/v2/models/{MODEL}/ready")).status == 200

    assert await wait_for(ready, 30)
    return started


def runtime(client: Client) -> ModelRuntime:
    runtimes: dict[str, ModelRuntime] = client.app[SERVER].runtimes
    return runtimes[MODEL]


def seen(events: Path) -> list[list[float]]:
    """The calls the model saw: the first value of each of their rows."""
    path = events / "calls"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def infer(client: Client, *rows: list[float]) -> tuple[int, dict[str, Any]]:
    """POST rows of x; (status, outputs by name, or the error body)."""
    document = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [len(rows), len(rows[0])],
                "data": [value for row in rows for value in row],
            }
        ]
    }
    response = await client.post(f"/v2/models/{MODEL}/infer", json=document)
    body = await response.json()
    if response.status != 200:
        return response.status, body
    return 200, {o["name"]: o for o in body["outputs"]}


async def behind_a_held_call(
    client: Client, events: Path, requests: list[list[list[float]]]
) -> tuple[tuple[int, dict[str, Any]], list[tuple[int, dict[str, Any]]]]:
    """Hold the model with one call, queue ``requests`` behind it, then let
    it go; the held call's answer and theirs, in order."""
    for name in ("calls", "open"):
        (events / name).unlink(missing_ok=True)
    held = asyncio.ensure_future(infer(client, [HOLD, 0.0]))
    assert await eventually(lambda: seen(events) == [[HOLD]]), seen(events)
    queued = [asyncio.ensure_future(infer(client, *rows)) for rows in requests]
    queue = runtime(client).status
    assert await eventually(lambda: queue().queue_depth == len(requests))
    (events / "open").touch()
    return await held, list(await asyncio.gather(*queued))


async def test_concurrent_requests_are_one_infer_call(client, events) -> None:
    requests = [[[1.0, 10.0]], [[2.0, 20.0]], [[3.0, 30.0]]]
    held, answers = await behind_a_held_call(client, events, requests)
    assert held[0] == 200
    assert seen(events) == [[HOLD], [1.0, 2.0, 3.0]]
    for rows, (status, outputs) in zip(requests, answers, strict=True):
        assert status == 200
        assert outputs["y"]["shape"] == [1, 2]
        assert outputs["y"]["data"] == [value * 10 for value in rows[0]]
        assert outputs["rows"]["data"] == [3]  # the batch it was part of


async def test_a_batch_holds_at_most_max_batch_size_rows(client, events) -> None:
    requests = [
        [[1.0, 0.0], [1.0, 0.0]],
        [[2.0, 0.0], [2.0, 0.0]],
        [[3.0, 0.0], [3.0, 0.0]],
    ]
    _, answers = await behind_a_held_call(client, events, requests)
    assert seen(events)[1:] == [[1.0, 1.0, 2.0, 2.0], [3.0, 3.0]]
    assert [outputs["rows"]["data"] for _, outputs in answers] == [
        [4, 4],
        [4, 4],
        [2, 2],
    ]


async def test_only_calls_of_the_same_shapes_share_a_batch(client, events) -> None:
    requests = [[[1.0, 0.0]], [[2.0, 0.0, 0.0]], [[3.0, 0.0]]]
    _, answers = await behind_a_held_call(client, events, requests)
    assert seen(events)[1:] == [[1.0, 3.0], [2.0]]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert answers[1][1]["y"]["data"] == [20.0, 0.0, 0.0]


async def test_a_batch_that_raises_fails_each_of_its_calls(client, events) -> None:
    requests = [[[1.0, 0.0]], [[RAISE, 0.0]], [[3.0, 0.0]]]
    _, answers = await behind_a_held_call(client, events, requests)
    assert seen(events)[1:] == [[1.0, RAISE, 3.0]]
    assert answers == [(500, {"error": "ValueError: the model refused -8"})] * 3
    assert (await infer(client, [4.0, 0.0]))[0] == 200  # the worker serves on


async def test_a_call_refused_as_input_fails_alone(client, events) -> None:
    # A runtime's TensorInputError (an ONNX string input that is not UTF-8)
    # failed every call of the batch with the one call's 400.
    requests = [[[1.0, 0.0]], [[REFUSE, 0.0]], [[3.0, 0.0]]]
    _, answers = await behind_a_held_call(client, events, requests)
    assert seen(events)[1:] == [[1.0, REFUSE, 3.0], [1.0], [REFUSE], [3.0]]
    assert answers[1] == (400, {"error": "input 'x': the model refuses -6"})
    for (status, outputs), rows in zip(answers[::2], requests[::2], strict=True):
        assert status == 200
        assert outputs["y"]["data"] == [value * 10 for value in rows[0]]
        assert outputs["rows"]["data"] == [1]  # each was a call alone


async def test_a_batch_answered_with_too_few_rows_is_a_500(client, events) -> None:
    requests = [[[1.0, 0.0]], [[SHORT, 0.0], [2.0, 0.0]]]
    _, answers = await behind_a_held_call(client, events, requests)
    assert seen(events)[1:] == [[1.0, SHORT, 2.0]]
    message = (
        f"model '{MODEL}': infer() returned 2 rows in output 'y' for 3 input rows; "
        "return one row per input row, in their order"
    )
    assert answers == [(500, {"error": message})] * 2
