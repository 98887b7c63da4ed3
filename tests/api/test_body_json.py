"""JSON bodies: only standard JSON objects, big ones without stalling the loop.

``NaN`` and ``Infinity``, which Python's parser takes, are refused (400);
anything but an object is refused before it is parsed; a big body is
parsed in a worker thread that lets the event loop run every few
milliseconds (measured with :class:`tests.loop_probe.LoopStallProbe`: the
test server runs on the test's loop).
"""

from __future__ import annotations

import json

import pytest
import pytest_asyncio

from deepaas.api import body as body_module
from tests.api.test_input_limits import (
    JSON,
    PREDICT,
    TRAIN,
    raw_post,
    serves,
    trainings,
)
from tests.loop_probe import BIG_BODY_STALL_S, LoopStallProbe
from tests.support import DEMO, Client, MakeClient, plugin_spec

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

#: Longest the loop may be held by one big body (see the constant's notes).
STALL_BOUND = BIG_BODY_STALL_S
#: The same with a million live lists, which the garbage collector walks.
GC_STALL_BOUND = 1.0
BIG = body_module.OFFLOAD_PARSE_SIZE + 1


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    # Bodies of tens of MB are parsed here: over the 16 MiB default.
    return await make_client(
        [DEMO, plugin_spec("trainer")], client_max_decoded_size=128 << 20
    )


def padded(document: bytes, size: int) -> bytes:
    """``document`` (an object) with an unknown member that makes it
    ``size`` bytes or more: parsed in the executor when big."""
    pad = b'"zz_pad": "' + b"p" * size + b'", '
    return b"{" + pad + document[1:]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("size", [0, BIG], ids=["small", "big"])
@pytest.mark.parametrize(
    "template",
    ['{"ratio": %s}', '{"options": {"a": [1, %s]}}', '{"numbers": [%s]}'],
)
async def test_non_standard_constants_are_400(client, token, size, template):
    document = (template % token).encode()
    if size:
        document = padded(document, size)
    answer = await raw_post(client, PREDICT, document, JSON)
    assert answer.status == 400
    message = answer.message()
    assert f"contains {token}," in message
    assert "standard JSON" in message
    await serves(client)


async def test_constants_in_strings_are_text(client):
    answer = await raw_post(client, PREDICT, b'{"text": "NaN Infinity"}', JSON)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["args"]["text"] == "NaN Infinity"


async def test_train_body_with_nan_is_400(client):
    before = await trainings(client)
    answer = await raw_post(client, TRAIN, b'{"mode": "sleep", "x": NaN}', JSON)
    assert answer.status == 400
    assert "NaN" in answer.message()
    assert await trainings(client) == before


@pytest.mark.parametrize(
    ("document", "kind"),
    [
        (b"[1, 2]", "an array"),
        (b'  "text"', "a string"),
        (b"\n-1.5", "a number"),
        (b"null", "null"),
        (b"true", "true"),
    ],
)
async def test_not_an_object_is_400(client, document, kind):
    answer = await raw_post(client, PREDICT, document, JSON)
    assert answer.status == 400
    assert f"must be an object ({{...}}), got {kind}" in answer.message()


@pytest.mark.parametrize(
    "document",
    [b"text=hi", b"nope", b"1abc", b"true!", b"n", b"-", b"x" * 10_000],
)
async def test_not_json_at_all_is_called_invalid(client, document):
    """Not named after its first letter ("got true" for ``text=hi``)."""
    answer = await raw_post(client, PREDICT, document, JSON)
    assert answer.status == 400
    assert answer.message().startswith("invalid JSON body"), answer.message()


async def test_fifty_megabyte_array_is_refused_at_once(client):
    document = b"[" + b"12," * 17_000_000 + b"1]"  # 51 MB
    async with LoopStallProbe(cpu_bound=True) as probe:
        answer = await raw_post(client, PREDICT, document, JSON)
    assert answer.status == 400
    assert "got an array" in answer.message()
    assert probe.longest < STALL_BOUND, probe
    await serves(client)


@pytest.mark.parametrize(
    "member",
    [
        pytest.param(b"12345,", id="integers"),
        pytest.param(b"0.125,", id="floats"),
    ],
)
async def test_big_body_does_not_hold_the_loop(client, member):
    """About 25 MB of small values: the parse and the depth check run in
    slices, or call Python code often, so the loop gets its turn."""
    count = 25_000_000 // len(member)
    document = b'{"zz_unknown": [' + member * count + b'1], "text": "big"}'
    async with LoopStallProbe(cpu_bound=True) as probe:
        answer = await raw_post(client, PREDICT, document, JSON)
    assert answer.status == 200, answer.body[:300]
    assert json.loads(answer.body)["args"]["text"] == "big"
    assert probe.longest < STALL_BOUND, probe
    assert probe.wakeups > 10, probe
    await serves(client)


@pytest.mark.parametrize(
    "member",
    [
        pytest.param(b'{"k": 1},', id="objects"),
        pytest.param(b'{"k": [1, {"j": "x"}]},', id="lists"),
    ],
)
async def test_millions_of_containers_hold_the_loop_for_garbage_collection_only(
    client, member
):
    """Millions of small objects or lists: parsed cooperatively too, but
    Python's cyclic garbage collector, run as they pile up, walks every
    live container while holding the GIL, on whichever thread triggers it
    (docs/limits.md says so). Parsed while holding the GIL, these bodies
    held the loop 1 to 2 s and more."""
    count = 25_000_000 // len(member)
    document = b'{"zz_unknown": [' + member * count + b'1], "text": "big"}'
    async with LoopStallProbe(cpu_bound=True) as probe:
        answer = await raw_post(client, PREDICT, document, JSON)
    assert answer.status == 200, answer.body[:300]
    assert probe.longest < GC_STALL_BOUND, probe
    await serves(client)


async def test_big_deep_body_is_checked_in_slices(client):
    """A body over the depth limit is refused whatever its size, with
    brackets in strings not counted, across the slices of the scan."""
    strings = b'"[[[{{{\\"]]]", ' * 400_000  # 6.4 MB of brackets in strings
    deep = b"[" * 101 + b"]" * 101
    ok = b"[" * 98 + b"]" * 98  # 100 levels with the object and the list
    for inner, status in ((deep, 400), (ok, 200)):
        document = b'{"zz": [' + strings + inner + b'], "text": "deep"}'
        answer = await raw_post(client, PREDICT, document, JSON)
        assert answer.status == status, answer.body[:300]
        if status == 400:
            assert "nested deeper than 100 levels" in answer.message()
