"""QA: a binary infer body whose JSON header is small but whose BYTES
tensor has millions of elements must not be decoded on the event loop.

``deepaas.api.oip_infer.infer_response`` moved ``decode_request`` to a
worker thread only when the JSON header was over ``OFFLOAD_PARSE_SIZE``
(64 KiB); a binary body's header is a few hundred bytes, so its tensors
were decoded on the loop (now: also when its binary data is big and its
header names BYTES). Numeric tensors are views (cheap), but a BYTES
tensor is split into one Python ``bytes`` per element: 4 million empty
elements (a 16 MB body, under the default ``--client-max-decoded-size``)
took 1.4 s on a 2-core machine, during which ``/healthz`` and every other
request waited. The server runs on the test's loop, measured with
:class:`tests.loop_probe.LoopStallProbe` as ``tests/api/test_body_json.py``
does for JSON bodies.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import pytest_asyncio

from deepaas.oip import HEADER_LENGTH
from tests.loop_probe import BIG_BODY_STALL_S, LoopStallProbe
from tests.support import DEMO, Client, MakeClient

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

#: As in tests/api/test_body_json.py: the longest one big body may hold
#: the loop (decoded on the loop, this one held it 1.4 s).
STALL_BOUND = BIG_BODY_STALL_S
ELEMENTS = 4_000_000  # 16 MB of 4-byte lengths, under the 16 MiB default


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client([DEMO])


async def test_binary_bytes_tensor_is_not_decoded_on_the_loop(client: Client) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [ELEMENTS],
                    "parameters": {"binary_data_size": 4 * ELEMENTS},
                }
            ]
        }
    ).encode()
    body = header + bytes(4 * ELEMENTS)  # ELEMENTS empty strings
    async with LoopStallProbe(cpu_bound=True) as probe:
        answer = await client.post(
            "/v2/models/demo/infer",
            data=body,
            headers={HEADER_LENGTH: str(len(header))},
        )
        text = await answer.text()
    # 'text' takes one value: refused once decoded, before any worker.
    assert answer.status == 400, text
    assert "takes one value" in json.loads(text)["error"]
    assert probe.longest < STALL_BOUND, probe
    health = await client.get("/healthz")
    assert health.status == 200


def _numbers() -> list[dict[str, object]]:
    """1.5 million integers in one tensor (12 MB of JSON)."""
    count = 1_500_000
    return [
        {
            "name": "zz",
            "datatype": "INT64",
            "shape": [count],
            "data": list(range(count)),
        }
    ]


def _objects() -> list[dict[str, object]]:
    """150,000 small input objects (10 MB of JSON)."""
    return [
        {"name": f"in{i}", "datatype": "INT64", "shape": [1], "data": [i]}
        for i in range(150_000)
    ]


# The longest the loop was held, on a quiet 2-core machine: numbers 130 ms
# before (one C call after another), 20 ms after; objects 390 ms before,
# 100 ms after (what is left: the garbage collector walking new objects).
@pytest.mark.parametrize(
    ("inputs", "bound"),
    [
        pytest.param(_numbers, 0.1, id="numbers"),
        pytest.param(_objects, STALL_BOUND, id="objects"),
    ],
)
async def test_big_json_infer_body_does_not_hold_the_loop(
    client: Client, inputs: Callable[[], list[dict[str, object]]], bound: float
) -> None:
    """A JSON infer body is decoded in a thread; json's C parser and
    numpy's conversions held the GIL there for 0.1-0.4 s at a time (the
    same numbers as a predict argument held the loop 20-50 ms). Now parsed
    with Python-level hooks and converted a slice at a time."""
    body = json.dumps({"inputs": inputs()}).encode()
    async with LoopStallProbe(cpu_bound=True) as probe:
        answer = await client.post(
            "/v2/models/demo/infer",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        text = await answer.text()
    assert answer.status == 400, text  # decoded whole, then: no such input
    assert "has no input" in json.loads(text)["error"]
    assert probe.longest < bound, probe
    assert probe.wakeups > 10, probe
