"""The header timeout on keep-alive connections that pipeline.

A request head's clock starts at its first byte, whenever it comes: while an
earlier request is handled, in the same packet as the end of an earlier
request (after no body, a Content-Length body or a chunked one), or left
over when a response is sent. And no clock runs on complete requests that
wait behind a long one, on bodies, or on empty lines.

Same server and raw-socket clients as ``test_slow_clients`` (1 s timeout);
the handler that waits is released by the test, so ordering is by events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from deepaas.api.connections import GuardedTCPSite, HeaderTimeout
from tests.api.test_slow_clients import (
    OK,
    PACE,
    SLACK,
    TIMEOUT,
    closed_within,
    connect,
    read_response,
    request,
    trickle,
)

ENTERED = web.AppKey("entered", asyncio.Event)
RELEASE = web.AppKey("release", asyncio.Event)
PARTIAL = OK[:10]  # the first bytes of a next request


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def wait(request: web.Request) -> web.Response:
    request.app[ENTERED].set()
    await request.app[RELEASE].wait()
    return web.Response(text="waited")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2 * TIMEOUT)  # longer than the timeout: never cut
    return web.Response(text="slow")


async def upload(request: web.Request) -> web.Response:
    body = await request.read()
    if request.query.get("then") == "slow":
        await asyncio.sleep(1.5 * TIMEOUT)
    return web.Response(text=str(len(body)))


@dataclass
class Served:
    port: int
    guard: HeaderTimeout
    app: web.Application


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    guard = HeaderTimeout(TIMEOUT)
    app = web.Application()
    app[ENTERED], app[RELEASE] = asyncio.Event(), asyncio.Event()
    app.router.add_get("/ok", ok)
    app.router.add_get("/wait", wait)
    app.router.add_get("/slow", slow)
    app.router.add_post("/upload", upload)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        site = GuardedTCPSite(runner, "127.0.0.1", 0, guard=guard)
        await site.start()
        yield Served(site.port, guard, app)
    finally:
        app[RELEASE].set()
        await runner.cleanup()
    assert not guard.connections, "a connection outlived the server"


def post(body: bytes, path: str = "/upload") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    ) + body


def chunked(*chunks: bytes, path: str = "/upload") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return head.encode() + body + b"0\r\n\r\n"


async def cut_within_timeout(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """The partial head just sent is trickled on; the server must close the
    connection one timeout after its first byte, not later, not earlier."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    finished = await trickle(writer, reader, OK[len(PARTIAL) :], PACE)
    assert not finished, "a trickled pipelined head was never cut"
    lasted = loop.time() - started
    assert TIMEOUT - 0.05 <= lasted <= TIMEOUT + SLACK, lasted


# -- the clock starts at a next request's first byte -------------------------


async def test_a_head_trickled_while_a_request_is_handled_is_cut(
    served: Served,
) -> None:
    async with connect(served.port) as (reader, writer):
        writer.write(request("/wait"))
        await asyncio.wait_for(served.app[ENTERED].wait(), 5)
        writer.write(PARTIAL)
        await cut_within_timeout(reader, writer)
    assert served.guard.timed_out == 1


UPGRADE = b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"


@pytest.mark.parametrize(
    "first",
    [
        OK,
        post(b"x" * 100),
        post(b"\r\n\r\n" * 5),
        chunked(b"ab", b"\r\n\r\n"),
        UPGRADE,  # aiohttp sets the bytes after it aside until it answers
    ],
    ids=["no-body", "content-length", "body-of-blank-lines", "chunked", "upgrade"],
)
async def test_a_head_in_the_same_packet_as_a_request_is_cut(
    served: Served, first: bytes
) -> None:
    """The guard finds where the first request ends (after its body, if
    any): the bytes after it are a head, timed from their arrival."""
    loop = asyncio.get_running_loop()
    async with connect(served.port) as (reader, writer):
        writer.write(first + PARTIAL)
        started = loop.time()
        status, _ = await read_response(reader)
        assert status == 200
        assert await closed_within(reader, TIMEOUT + SLACK)
        assert loop.time() - started >= TIMEOUT - 0.05
    assert served.guard.timed_out == 1


async def test_a_partial_head_left_over_after_a_response_is_cut(
    served: Served,
) -> None:
    """Its bytes arrived during the request; once answered, the client says
    nothing more: closed one timeout after those bytes, not at keep-alive's
    hour."""
    loop = asyncio.get_running_loop()
    async with connect(served.port) as (reader, writer):
        writer.write(request("/wait") + PARTIAL)
        started = loop.time()
        await asyncio.wait_for(served.app[ENTERED].wait(), 5)
        served.app[RELEASE].set()
        assert await read_response(reader) == (200, b"waited")
        assert await closed_within(reader, TIMEOUT + SLACK)
        assert loop.time() - started >= TIMEOUT - 0.05
    assert served.guard.timed_out == 1


# -- and nothing else runs one -----------------------------------------------


async def test_complete_requests_pipelined_behind_a_long_one_are_served(
    served: Served,
) -> None:
    """More than aiohttp's queue of parsed requests (32) wait behind one
    that lasts twice the timeout; all of them are answered, in order."""
    async with connect(served.port) as (reader, writer):
        writer.write(request("/slow") + (OK + post(b"abc")) * 20 + OK)
        assert await asyncio.wait_for(read_response(reader), 10) == (200, b"slow")
        for _ in range(20):
            assert await read_response(reader) == (200, b"ok")
            assert await read_response(reader) == (200, b"3")
        assert await read_response(reader) == (200, b"ok")
        # The guard still follows the connection: a trickled head is cut.
        writer.write(PARTIAL)
        await cut_within_timeout(reader, writer)
    assert served.guard.timed_out == 1


@pytest.mark.parametrize(
    "message",
    [
        post(b"y" * 50_000, "/upload?then=slow"),
        chunked(b"y" * 1000, b"z" * 999, path="/upload?then=slow"),
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_in_pieces_then_a_long_handler_is_not_cut(
    served: Served, message: bytes
) -> None:
    """Body bytes are not a head: neither they nor the handler's time after
    them start a clock."""
    async with connect(served.port) as (reader, writer):
        pieces = [message[i : i + 7000] for i in range(0, len(message), 7000)]
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            assert not await closed_within(reader, 0.02)
        status, body = await asyncio.wait_for(read_response(reader), 10)
        assert status == 200 and int(body) in (50_000, 1999)
        writer.write(OK)
        assert await read_response(reader) == (200, b"ok")
    assert served.guard.timed_out == 0


async def test_empty_lines_between_requests_start_no_clock(served: Served) -> None:
    """Some clients send a CRLF after a body; servers ignore such lines."""
    async with connect(served.port) as (reader, writer):
        writer.write(b"\r\n" + post(b"abc") + b"\r\n")
        assert await read_response(reader) == (200, b"3")
        assert not await closed_within(reader, 1.5 * TIMEOUT)
        writer.write(b"\r\n\r\n" + OK)
        assert await read_response(reader) == (200, b"ok")
    assert served.guard.timed_out == 0
