"""A small JSON body that came with its head is parsed at once: the same
answers as when the body reader reads it.

:meth:`deepaas.api.args.ArgParser.parse_at_once` takes a JSON body that
aiohttp has already fed whole (:func:`deepaas.api.body.arrived_json`)
without the body reader's coroutines. Each body below is sent over a real
socket, in the packet of its head, to the app wired as ``deepaas-run``
wires it: once as served (parsed at once: the spy on ``arrived_json``
shows it), once with ``arrived_json`` switched off (read by
``BodyReader``). The answers must be the same.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import pytest

from deepaas.api import args as args_module
from tests.api.test_conn_errors import HOST, answer, guarded_site
from tests.api.test_slow_clients import connect

PREDICT = "/v2/models/mapping_args/predict/"

BODIES = [
    b'{"n": 5}',
    b'{"d": {"a": [1, 2.5, null]}, "p": {"x": 3}, "pl": [{"x": 1, "y": 2}]}',
    b'{"n": "x", "p": {"y": 1}}',  # 422: not an integer, x required
    b'{"n": 123456789012345678901234}',  # exact integer: the Python path
    b'{"d": {"v": NaN}}',  # 400: not standard JSON
    b'{"d": 1e400}',  # 400: out of a float's range
    b"[1, 2]",  # 400: not an object
    b"  ",  # no arguments
    b'{"d": ' + b"[" * 101 + b"]" * 101 + b"}",  # 400: too deep
    b'{"n": 1,}',  # 400: invalid JSON
    '{"d": {"t": "caf\u00e9"}}'.encode("utf-16"),  # another encoding
]


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with guarded_site("mapping_args") as (_, served_port):
        yield served_port


@pytest.fixture
def at_once(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each request's JSON body was parsed at once (in order)."""
    seen: list[bool] = []
    real = args_module.arrived_json

    def spy(request, limits):  # type: ignore[no-untyped-def]
        parsed = False
        try:
            value = real(request, limits)
            parsed = value is not None
            return value
        except Exception:
            parsed = True  # refused as it was parsed
            raise
        finally:
            seen.append(parsed)

    monkeypatch.setattr(args_module, "arrived_json", spy)
    return seen


def head(length: int, extra: bytes = b"") -> bytes:
    return (
        f"POST {PREDICT} HTTP/1.1\r\n".encode()
        + HOST
        + b"Content-Type: application/json\r\n"
        + extra
        + f"Content-Length: {length}\r\n\r\n".encode()
    )


async def with_head(port: int, body: bytes) -> tuple[int, object]:
    async with connect(port) as (reader, writer):
        writer.write(head(len(body)) + body)
        status, _, raw = await answer(reader)
    return status, json.loads(raw)


@pytest.mark.parametrize("body", BODIES)
async def test_same_answer_either_way(
    port: int, at_once: list[bool], body: bytes, monkeypatch: pytest.MonkeyPatch
):
    now = await with_head(port, body)
    assert at_once == [True]
    monkeypatch.setattr(args_module, "arrived_json", lambda request, limits: None)
    read = await with_head(port, body)
    assert now == read
    assert read[0] < 500
    if read[0] == 400:
        assert isinstance(read[1], dict) and read[1]["message"]


async def test_the_usual_body_is_parsed_at_once(port: int, at_once: list[bool]):
    status, result = await with_head(port, b'{"n": 2, "d": {"k": "v"}}')
    assert status == 200, result
    got = result["predictions"]  # type: ignore[index]
    assert got["n"] == {"type": "int", "value": 2}
    assert got["d"] == {"type": "dict", "value": {"k": "v"}}
    assert at_once == [True]


async def test_compressed_or_big_bodies_are_read(port: int, at_once: list[bool]):
    """Not parsed at once, and still answered: a gzip body, and one over
    the size parsed on the loop (64 KiB)."""
    packed = gzip.compress(b'{"n": 7}')
    async with connect(port) as (reader, writer):
        writer.write(head(len(packed), b"Content-Encoding: gzip\r\n") + packed)
        status, _, raw = await answer(reader)
    assert status == 200, raw
    assert json.loads(raw)["predictions"]["n"]["value"] == 7
    big = b'{"d": {"pad": "' + b"p" * (70 << 10) + b'"}, "n": 8}'
    status, result = await with_head(port, big)
    assert status == 200, result
    assert result["predictions"]["n"]["value"] == 8  # type: ignore[index]
    assert True not in at_once
