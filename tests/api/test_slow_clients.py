"""Slow clients: the header timeout of ``deepaas.api.connections``, and a
client that hangs up counted as 499 by the front door.

The tests serve a small app on a real ``AppRunner`` with
:class:`GuardedTCPSite` on a free 127.0.0.1 port and a 1 s client timeout
(one serves the whole deepaas app), and talk raw HTTP/1.1 over asyncio
streams, so that they control every byte.
Waits are on events (bytes, EOF, a counter) with deadlines; the pauses in
the clients are the behaviour under test (trickling, idling), not ordering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from deepaas.api import front
from deepaas.api.connections import GuardedTCPSite, HeaderTimeout
from deepaas.api.metrics import Metrics, label
from deepaas.server import SERVER
from tests.support import eventually, plugin_spec, start_client

TIMEOUT = 1.0  # --client-timeout of these servers, in seconds
SLACK = 3.0  # how late past its deadline a close may come on a busy machine
PACE = 0.1  # seconds between two bytes of a trickling client
ENTERED = web.AppKey("entered", asyncio.Event)

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


# -- the server ---------------------------------------------------------------


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _slow_chunks() -> AsyncIterator[bytes]:
    for _ in range(12):  # 2.4 s in all, a chunk every 0.2 s
        await asyncio.sleep(0.2)
        yield b"x" * 10


async def stream_after(request: web.Request) -> web.Response:
    """The body is written after the handler (and every middleware) returned,
    as large result files are."""
    return web.Response(body=_slow_chunks())


async def stream_in_handler(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    async for chunk in _slow_chunks():
        await response.write(chunk)
    await response.write_eof()
    return response


async def hang(request: web.Request) -> web.Response:
    request.app[ENTERED].set()
    await asyncio.Event().wait()  # until cancelled: the client hangs up
    raise AssertionError("not reached")


@dataclass
class Served:
    port: int
    guard: HeaderTimeout
    metrics: Metrics
    app: web.Application

    def timeouts(self) -> float:
        return self.metrics.client_timeouts.value("headers")


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    metrics = Metrics({})
    guard = HeaderTimeout(TIMEOUT, on_timeout=metrics.client_timed_out)
    app = web.Application()
    app[ENTERED] = asyncio.Event()
    app.router.add_get("/ok", ok)
    app.router.add_get("/stream/after", stream_after)
    app.router.add_get("/stream/handler", stream_in_handler)
    app.router.add_get("/hang", label(hang, "m", "hang"))
    # As deepaas-run runs it: a client that hangs up cancels its handler.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    front.install(runner, metrics)  # counts requests, as deepaas-run's does
    try:
        site = GuardedTCPSite(runner, "127.0.0.1", 0, guard=guard)
        await site.start()
        yield Served(site.port, guard, metrics, app)
    finally:
        await runner.cleanup()
    assert not guard.connections, "a connection outlived the server"


# -- clients --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[Stream]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes the connection within ``seconds``
    (bytes it sends meanwhile are read and dropped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while (left := deadline - loop.time()) > 0:
            if not await asyncio.wait_for(reader.read(4096), left):
                return True
    except ConnectionResetError:
        return True  # closed with a reset (the guard aborts)
    except asyncio.TimeoutError:
        pass
    return False


async def trickle(
    writer: asyncio.StreamWriter, reader: asyncio.StreamReader, data: bytes, pace: float
) -> bool:
    """Send ``data`` a byte every ``pace`` seconds; False if the server closed
    the connection before the last byte (the answer to it is left unread)."""
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        if i < len(data) - 1 and await closed_within(reader, pace):
            return False
    return True


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response: its status and body (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if not size:
                return status, body
            body += chunk[:-2]
    return status, await reader.readexactly(int(headers.get("content-length", 0)))


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


OK = request("/ok")
QUICK = 0.6 * TIMEOUT / len(OK)  # a pace that sends OK in 60% of the timeout


# -- (a) slowloris ------------------------------------------------------------


async def test_trickling_headers_are_cut_while_others_are_served(
    served: Served,
) -> None:
    loop = asyncio.get_running_loop()
    endless = b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000

    async def slowloris() -> float:
        async with connect(served.port) as (reader, writer):
            started = loop.time()
            finished = await trickle(writer, reader, endless, PACE)
            assert not finished, "the server never closed a trickling connection"
            return loop.time() - started

    statuses: list[int] = []
    done = asyncio.Event()

    async def normal_client() -> None:
        async with aiohttp.ClientSession() as session:
            while not done.is_set():
                async with session.get(f"http://127.0.0.1:{served.port}/ok") as r:
                    statuses.append(r.status)
                    await r.read()

    normal = asyncio.ensure_future(normal_client())
    try:
        lasted = await asyncio.wait_for(
            asyncio.gather(*(slowloris() for _ in range(50))), TIMEOUT + SLACK + 5
        )
    finally:
        done.set()
        await normal
    assert all(TIMEOUT - 0.05 <= seconds <= TIMEOUT + SLACK for seconds in lasted), (
        lasted
    )
    assert served.timeouts() == 50
    assert served.guard.timed_out == 50
    assert len(statuses) >= 5 and set(statuses) == {200}, statuses
    text = generate_latest(served.metrics.registry).decode()
    assert 'deepaas_client_timeouts_total{phase="headers"} 50.0' in text


# -- (b) a connection that says nothing --------------------------------------


async def test_a_silent_connection_is_closed(served: Served) -> None:
    loop = asyncio.get_running_loop()
    async with connect(served.port) as (reader, _):
        started = loop.time()
        assert await closed_within(reader, TIMEOUT + SLACK)
        assert loop.time() - started >= TIMEOUT - 0.05
    assert served.timeouts() == 1


async def test_the_first_byte_starts_the_clock(served: Served) -> None:
    """A client silent for most of the timeout, then quick, is served."""
    async with connect(served.port) as (reader, writer):
        assert not await closed_within(reader, 0.7 * TIMEOUT)
        assert await trickle(writer, reader, OK, QUICK)
        assert await read_response(reader) == (200, b"ok")
    assert served.timeouts() == 0


# -- (c) slow responses are not cut ---------------------------------------------


@pytest.mark.parametrize("path", ["/stream/after", "/stream/handler"])
async def test_a_slow_response_longer_than_the_timeout_is_not_cut(
    served: Served, path: str
) -> None:
    loop = asyncio.get_running_loop()
    async with connect(served.port) as (reader, writer):
        started = loop.time()
        writer.write(request(path))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        # The client pipelines its next request while the response streams:
        # its head is complete, so no clock runs on it.
        writer.write(OK)
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10)
        assert rest.count(b"x" * 10) == 12
        assert loop.time() - started > 2 * TIMEOUT
        assert await read_response(reader) == (200, b"ok")
    assert served.timeouts() == 0


async def test_a_partial_head_pipelined_during_a_slow_response_is_cut(
    served: Served,
) -> None:
    """The first bytes of the next request start its clock, response or not."""
    loop = asyncio.get_running_loop()
    async with connect(served.port) as (reader, writer):
        writer.write(request("/stream/handler"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        started = loop.time()
        writer.write(OK[:10])  # and never the rest
        assert await closed_within(reader, TIMEOUT + SLACK)
        assert loop.time() - started >= TIMEOUT - 0.05
    assert served.timeouts() == 1


# -- (d) keep-alive -------------------------------------------------------------------


async def test_keep_alive_requests_each_get_a_full_timeout(served: Served) -> None:
    async with connect(served.port) as (reader, writer):
        for _ in range(3):  # pauses shorter than the timeout
            writer.write(OK)
            assert await read_response(reader) == (200, b"ok")
            assert not await closed_within(reader, 0.5 * TIMEOUT)
        # Idle for longer than the timeout: not a timeout, not closed.
        assert not await closed_within(reader, 1.5 * TIMEOUT)
        # The next request gets its own full timeout from its first byte...
        assert await trickle(writer, reader, OK, QUICK)
        assert await read_response(reader) == (200, b"ok")
        assert served.timeouts() == 0
        # ...and no more: one trickled past it is cut.
        assert not await trickle(writer, reader, OK, 3 * QUICK)
    assert served.timeouts() == 1


# -- (e) a client that hangs up ------------------------------------------------------


async def test_a_client_that_hangs_up_is_counted_499(served: Served) -> None:
    requests = served.metrics.requests
    async with connect(served.port) as (_, writer):
        writer.write(request("/hang"))
        await asyncio.wait_for(served.app[ENTERED].wait(), 5)
    assert await eventually(lambda: requests.value("m", "hang", "499") == 1)
    assert requests.value("m", "hang", "500") == 0
    counts, _ = served.metrics.request_duration.series[("m", "hang")]
    assert sum(counts) == 1  # its duration is observed too
    assert served.timeouts() == 0


async def test_a_hang_up_during_a_prediction_is_counted_499(tmp_path: Path) -> None:
    """The whole deepaas app (error middleware, runtime, worker): the client
    leaves while its prediction runs."""
    started, release = tmp_path / "started", tmp_path / "release"
    client = await start_client([plugin_spec("faults")], {})
    try:
        metrics = client.app[SERVER].metrics
        query = f"mode=slow&seconds=30&started={started}&release={release}"
        assert client.server.port is not None
        async with connect(client.server.port) as (_, writer):
            writer.write(
                f"POST /v2/models/faults/predict/?{query} HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode()
            )
            assert await eventually(started.exists, 30)
        requests = metrics.requests
        assert await eventually(lambda: requests.value("faults", "predict", "499") == 1)
        assert requests.value("faults", "predict", "500") == 0
    finally:
        release.touch()
        await client.close()


# -- the guard on its own ------------------------------------------------------


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="more than 0"):
        HeaderTimeout(0)


async def test_a_low_level_server_is_guarded_too() -> None:
    """No middleware needed: a handler longer than the timeout is not cut."""
    guard = HeaderTimeout(TIMEOUT)

    async def handler(request: web.BaseRequest) -> web.Response:
        await asyncio.sleep(1.5 * TIMEOUT)  # longer than the timeout: not cut
        return web.Response(text="ok")

    runner = web.ServerRunner(web.Server(handler))
    await runner.setup()
    try:
        site = GuardedTCPSite(runner, "127.0.0.1", 0, guard=guard)
        await site.start()
        assert site.port != 0
        assert site.name == f"http://127.0.0.1:{site.port}"
        assert runner.addresses == [("127.0.0.1", site.port)]
        async with connect(site.port) as (reader, writer):
            writer.write(request("/"))
            assert await read_response(reader) == (200, b"ok")
        assert guard.timed_out == 0
    finally:
        await runner.cleanup()
