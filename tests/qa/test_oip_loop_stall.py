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
    async with LoopStallProbe() as probe:
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
