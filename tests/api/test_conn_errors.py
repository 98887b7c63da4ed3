"""Requests aiohttp's parser refuses are answered JSON, saying what to change.

They never reach the app (its error middleware, its metrics): the guarded
handler of ``deepaas.api.connections`` answers them, logs them at info and
reports each to ``on_bad_request``. A body found undecodable only at its end
fails the request reading it, which the app answers.

Raw HTTP/1.1 over real sockets to a ``GuardedTCPSite`` on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from deepaas.api import front
from deepaas.api.connections import GuardedTCPSite, HeaderTimeout
from deepaas.config import Settings
from deepaas.server import SERVER, Server, build_app
from tests.api.test_slow_clients import OK, TIMEOUT, closed_within, connect
from tests.support import REPO_ROOT, plugin_spec

HOST = b"Host: 127.0.0.1\r\n"


async def echo(request: web.Request) -> web.Response:
    return web.Response(text=str(len(await request.read())))


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


@dataclass
class Served:
    port: int
    refused: list[int] = field(default_factory=list)  # on_bad_request's


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    refused: list[int] = []
    guard = HeaderTimeout(TIMEOUT, on_bad_request=refused.append)
    app = web.Application()
    app.router.add_get("/broken", broken)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        site = GuardedTCPSite(runner, "127.0.0.1", 0, guard=guard)
        await site.start()
        yield Served(site.port, refused)
    finally:
        await runner.cleanup()
    assert not guard.connections


@contextlib.asynccontextmanager
async def guarded_site(plugin: str) -> AsyncIterator[tuple[Server, int]]:
    """The deepaas app serving ``tests.plugins.<plugin>`` behind a
    ``GuardedTCPSite`` wired as ``deepaas-run`` wires it: the server and
    its port."""
    app = build_app(Settings(), [plugin_spec(plugin)], extra_path=(str(REPO_ROOT),))
    server = app[SERVER]
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    front.install(runner, server.metrics)
    try:
        site = GuardedTCPSite(runner, "127.0.0.1", 0, guard=server.header_timeout)
        await site.start()
        yield server, site.port
    finally:
        await runner.cleanup()


@pytest.fixture
async def deepaas_site() -> AsyncIterator[tuple[Server, int]]:
    """The deepaas app (echo model) behind a guarded site: see
    :func:`guarded_site`."""
    async with guarded_site("echo") as served:
        yield served


async def answer(
    reader: asyncio.StreamReader,
) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), Content-Length body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return int(lines[0].split()[1]), headers, body


async def refused_with(port: int, data: bytes) -> str:
    """Send ``data``; the answer must be a JSON 400 and then a close: its
    message."""
    async with connect(port) as (reader, writer):
        writer.write(data)
        status, headers, body = await answer(reader)
        assert status == 400, body
        assert headers["content-type"].startswith("application/json"), headers
        message = json.loads(body)["message"]
        assert isinstance(message, str)
        assert await closed_within(reader, 5), "not closed after the 400"
    return message


LONG = b"a" * 9000  # over aiohttp's max_line_size and max_field_size (8190)

CASES = {
    "method with a space": (
        b"FOO BAR / HTTP/1.1\r\n" + HOST + b"\r\n",
        ["the request method is not valid", "such as GET or POST"],
    ),
    "control character in the method": (
        b"G\x01T / HTTP/1.1\r\n" + HOST + b"\r\n",
        ["the request method is not valid"],
    ),
    "non-ASCII query": (
        b"GET /?q=\xc3\xa9 HTTP/1.1\r\n" + HOST + b"\r\n",
        ["the URL is not valid", "query", "percent-encode", "%C3%A9"],
    ),
    "non-ASCII path": (
        b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + HOST + b"\r\n",
        ["the URL is not valid", "path", "percent-encode"],
    ),
    "long URL": (
        b"GET /?q=" + LONG + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        ["the request line", "longer than 8190 bytes", "shorten the URL"],
    ),
    "long header value": (
        b"GET / HTTP/1.1\r\n" + HOST + b"X-Long: " + LONG + b"\r\n\r\n",
        ["a request header is longer than 8190 bytes", "shorter headers"],
    ),
    "long header name": (
        b"GET / HTTP/1.1\r\n" + HOST + LONG + b": 1\r\n\r\n",
        ["a request header is longer than 8190 bytes"],
    ),
    "too many headers": (
        b"GET / HTTP/1.1\r\n" + HOST + b"X-A: 1\r\n" * 200 + b"\r\n",
        ["more than 128 headers", "send fewer"],
    ),
    "unknown HTTP version": (
        b"GET / HTTP/9.9\r\n" + HOST + b"\r\n",
        ["the request line is not valid", "HTTP version", "HTTP/1.1"],
    ),
    "TLS on the HTTP port": (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32,
        ["speaks HTTP, not HTTPS", "http://"],
    ),
    "invalid header name": (
        b"GET / HTTP/1.1\r\n" + HOST + b"Bad Header: 1\r\n\r\n",
        ["not valid HTTP/1.1", "header"],
    ),
    "no Host header": (
        b"GET / HTTP/1.1\r\n\r\n",
        ["not valid HTTP/1.1", "Host"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_request_the_parser_refuses_is_answered_json(
    served: Served, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    data, expected = CASES[case]
    caplog.set_level(logging.DEBUG, logger="deepaas.api.connections")
    message = await refused_with(served.port, data)
    for text in expected:
        assert text in message, message
    assert served.refused == [400]
    logged = [r for r in caplog.records if r.name == "deepaas.api.connections"]
    assert [r.getMessage().endswith(message) for r in logged] == [True]


async def test_a_line_too_long_after_a_trickled_request_line(served: Served) -> None:
    """The limits are told apart by where the bytes were, not by packets."""
    async with connect(served.port) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r")
        await writer.drain()
        assert not await closed_within(reader, 0.05)
        writer.write(b"\n" + HOST + b"X-Long: " + LONG + b"\r\n\r\n")
        status, _, body = await answer(reader)
    assert status == 400
    assert "a request header is longer" in json.loads(body)["message"]


async def test_an_error_after_good_pipelined_requests(served: Served) -> None:
    """The requests before it are answered; then the JSON 400."""
    async with connect(served.port) as (reader, writer):
        writer.write(OK + OK + b"FOO BAR / HTTP/1.1\r\n" + HOST + b"\r\n")
        for _ in range(2):
            status, _, _ = await answer(reader)
            assert status == 200
        status, headers, body = await answer(reader)
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert "method is not valid" in json.loads(body)["message"]
    assert served.refused == [400]


async def test_an_exception_no_middleware_caught_is_a_json_500(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """(deepaas's error middleware catches them all; this is the net under it.)"""
    async with connect(served.port) as (reader, writer):
        writer.write(b"GET /broken HTTP/1.1\r\n" + HOST + b"\r\n")
        status, headers, body = await answer(reader)
    assert status == 500 and headers["content-type"].startswith("application/json")
    assert json.loads(body) == {
        "message": "the server failed on this request (500); see its log"
    }
    assert served.refused == []  # not a bad request
    errors = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [r.exc_info[0] for r in errors if r.exc_info] == [RuntimeError]
    caplog.clear()  # logged as aiohttp logs it, with its traceback: expected


# -- bodies undecodable at their end (the deepaas app reads them) ------------------


PREDICT = "/v2/models/echo/predict/"
bad_chunk_size = (
    f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    '4\r\n{"x"\r\nzz\r\n'
).encode()


def compressed_post(encoding: str, body: bytes) -> bytes:
    return (
        f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Encoding: {encoding}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def test_a_body_bad_at_its_end_is_answered_by_the_app(
    deepaas_site: tuple[Server, int],
) -> None:
    """A deflate body cut short is found only at its end (by deepaas's
    decoder), and a bad chunk size in aiohttp's parser: the request reading
    the body then fails at once (400 from the app, counted in its metrics),
    not after --client-timeout, and the connection is closed."""
    server, port = deepaas_site
    deflated = zlib.compress(json.dumps({"x": 1}).encode())[:-3]
    cases = [
        (compressed_post("deflate", deflated), "deflate stream is truncated"),
        (bad_chunk_size, "the chunked request body is not valid"),
    ]
    for data, expected in cases:
        for split in (None, data.index(b"\r\n\r\n") + 4):  # one packet, two
            async with connect(port) as (reader, writer):
                writer.write(data[:split])
                if split is not None:
                    await writer.drain()
                    assert not await closed_within(reader, 0.1)
                    writer.write(data[split:])
                status, headers, body = await asyncio.wait_for(answer(reader), TIMEOUT)
                assert status == 400, body
                assert headers["content-type"].startswith("application/json")
                assert expected in json.loads(body)["message"]
                assert await closed_within(reader, 5)
    requests = server.metrics.requests
    assert requests.value("echo", "predict", "400") == 4


async def test_a_bad_chunked_body_pipelined_behind_a_request_is_answered(
    deepaas_site: tuple[Server, int],
) -> None:
    """A request whose chunked body aiohttp's parser refuses, sent in one
    packet behind another request: both are answered (200, then the 400 of
    the body), then the connection is closed. It was closed right after the
    first answer: the second request got none."""
    server, port = deepaas_site
    async with connect(port) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n" + bad_chunk_size)
        first = await asyncio.wait_for(answer(reader), TIMEOUT)
        assert first[0] == 200, first
        status, headers, body = await asyncio.wait_for(answer(reader), TIMEOUT)
        assert status == 400, body
        assert headers["content-type"].startswith("application/json")
        assert "the chunked request body is not valid" in json.loads(body)["message"]
        assert await closed_within(reader, 5)
    assert server.metrics.requests.value("echo", "predict", "400") == 1


@pytest.mark.parametrize("path", ["/healthz", "/no/such/route"])
async def test_a_bad_chunked_body_nobody_reads_is_no_server_error(
    deepaas_site: tuple[Server, int], path: str
) -> None:
    """A route that does not read the body answers as usual, and the
    connection is then closed: aiohttp no longer reads what is left of the
    body after the answer (which raised the parser's error, logged as an
    "Unhandled exception" with its traceback, at ERROR, for any client that
    sends one; the autouse fixture fails on such a record)."""
    _, port = deepaas_site
    async with connect(port) as (reader, writer):
        writer.write(
            f"POST {path} HTTP/1.1\r\n".encode()
            + HOST
            + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        status, headers, _ = await asyncio.wait_for(answer(reader), TIMEOUT)
        assert status in (404, 405), status
        assert headers["content-type"].startswith("application/json")
        assert await closed_within(reader, 5)


async def test_a_bad_chunk_after_the_answer_is_no_server_error(
    deepaas_site: tuple[Server, int],
) -> None:
    """A route answers before reading a chunked body; aiohttp then reads
    what is left of it (lingering), and its next chunk is bad: the
    connection is closed, without aiohttp's "Unhandled exception" traceback
    at ERROR (which any client could make the server log at will)."""
    _, port = deepaas_site
    async with connect(port) as (reader, writer):
        writer.write(
            b"POST /no/such/route HTTP/1.1\r\n"
            + HOST
            + b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"
        )
        status, _, _ = await asyncio.wait_for(answer(reader), TIMEOUT)
        assert status == 404
        writer.write(b"zz\r\n")
        assert await closed_within(reader, 5)


async def test_a_refused_request_is_counted_in_the_servers_metrics(
    deepaas_site: tuple[Server, int],
) -> None:
    """The composition root wires the guard's ``on_bad_request`` to
    ``deepaas_requests_total`` (labels of an unknown route)."""
    server, port = deepaas_site
    for _ in range(2):
        message = await refused_with(port, b"GET /\xff HTTP/1.1\r\n" + HOST)
        assert "URL" in message or "ASCII" in message, message
    assert server.metrics.requests.value("", "other", "400") == 2


async def test_an_unknown_expectation_is_a_json_417_and_counted(
    deepaas_site: tuple[Server, int],
) -> None:
    """aiohttp refuses an ``Expect`` other than ``100-continue`` before the
    route's handler runs: the front door makes that answer JSON and counts
    it under the route asked for."""
    server, port = deepaas_site
    async with connect(port) as (reader, writer):
        writer.write(
            f"POST {PREDICT} HTTP/1.1\r\n".encode()
            + HOST
            + b"Expect: bogus\r\nContent-Length: 0\r\n\r\n"
        )
        status, headers, body = await asyncio.wait_for(answer(reader), TIMEOUT)
    assert status == 417
    assert headers["content-type"].startswith("application/json")
    assert "100-continue" in json.loads(body)["message"]
    assert server.metrics.requests.value("echo", "predict", "417") == 1
    async with connect(port) as (reader, writer):  # 100-continue works
        writer.write(
            f"POST {PREDICT} HTTP/1.1\r\n".encode()
            + HOST
            + b"Expect: 100-continue\r\nContent-Type: application/json\r\n"
            + b"Content-Length: 2\r\n\r\n"
        )
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == (
            b"HTTP/1.1 100 Continue\r\n"
        )
        await reader.readline()
        writer.write(b"{}")
        status, _, _ = await asyncio.wait_for(answer(reader), TIMEOUT)
    assert status == 200


@pytest.mark.parametrize(
    ("path", "labels"),
    [
        ("/v2/models/", ("", "models")),  # aiohttp's own expect handler
        ("/no/such/route", ("", "other")),  # a 404's
        ("/v2/models/", ("", "models")),
    ],
    ids=["route", "no-route", "again"],
)
async def test_an_expectation_that_is_no_utf8_is_a_json_417(
    deepaas_site: tuple[Server, int], path: str, labels: tuple[str, str]
) -> None:
    """An ``Expect`` value with bytes that are no UTF-8 (aiohttp decodes
    them to lone surrogates) is refused as any unknown expectation: aiohttp's
    default expect handler could not encode its 417 text, and the
    UnicodeEncodeError was a 500."""
    server, port = deepaas_site
    async with connect(port) as (reader, writer):
        writer.write(
            f"GET {path} HTTP/1.1\r\n".encode() + HOST + b"Expect: \xff\xfe\r\n\r\n"
        )
        status, headers, body = await asyncio.wait_for(answer(reader), TIMEOUT)
    assert status == 417, body
    assert headers["content-type"].startswith("application/json")
    message = json.loads(body)["message"]
    assert message.startswith("Unknown Expect: "), message
    assert "100-continue" in message
    assert server.metrics.requests.value(*labels, "417") >= 1


DECLARED_OVER = 20 << 20  # past the default --client-max-decoded-size (16 MiB)


@pytest.mark.parametrize("expect", [True, False], ids=["expect", "no-expect"])
async def test_a_body_declared_over_its_limit_is_refused_before_it_is_sent(
    deepaas_site: tuple[Server, int], expect: bool
) -> None:
    """A JSON body whose Content-Length is past the in-memory limit: 413 at
    once, instead of 100 Continue (with Expect) or of reading 16 MiB first;
    the connection is closed after the answer (its body never came)."""
    server, port = deepaas_site
    async with connect(port) as (reader, writer):
        writer.write(
            f"POST {PREDICT} HTTP/1.1\r\n".encode()
            + HOST
            + (b"Expect: 100-continue\r\n" if expect else b"")
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {DECLARED_OVER}\r\n\r\n".encode()
        )
        status, headers, body = await asyncio.wait_for(answer(reader), TIMEOUT)
        assert status == 413
        assert headers["content-type"].startswith("application/json")
        assert "--client-max-decoded-size" in json.loads(body)["message"]
        assert await closed_within(reader, 5)
    assert server.metrics.requests.value("echo", "predict", "413") == 1


async def test_a_multipart_body_declared_within_limits_gets_100_continue(
    deepaas_site: tuple[Server, int],
) -> None:
    """Multipart bodies go to disk part by part: only --client-max-size (no
    limit by default) caps them, so 20 MiB declared is welcome."""
    _, port = deepaas_site
    async with connect(port) as (reader, writer):
        writer.write(
            f"POST {PREDICT} HTTP/1.1\r\n".encode()
            + HOST
            + b"Expect: 100-continue\r\n"
            + b"Content-Type: multipart/form-data; boundary=x\r\n"
            + f"Content-Length: {DECLARED_OVER}\r\n\r\n".encode()
        )
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert line == b"HTTP/1.1 100 Continue\r\n"
