"""A client that hangs up while its prediction runs: its uploads stay until
the worker is done with them, and the other clients are unaffected.

Real server, real worker processes (:mod:`tests.plugins.hangup`): the
model signals when it starts and reads its uploads only when the test opens
a gate, so every step is ordered by an event (a file appearing, a counter)
with a deadline. The client that hangs up is a raw socket, closed while its
request is in the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deepaas.server import SERVER
from tests.support import (
    Client,
    eventually,
    listdir,
    plugin_spec,
    server_tmp_dir,
    start_client,
    tmp_dir_empties,
)

pytestmark = pytest.mark.timeout(90)

MODEL = "hangup"
ROUTE = f"/v2/models/{MODEL}/predict/"
BOUNDARY = "hangupboundary"


@contextlib.asynccontextmanager
async def served(settings: dict[str, object]) -> AsyncIterator[Client]:
    client = await start_client([plugin_spec(MODEL)], settings)
    try:
        yield client
    finally:
        await client.close()


def raw_request(gate: Path, size: int) -> bytes:
    """A complete multipart predict request, as bytes on the wire."""
    body = (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="gate"\r\n\r\n'
            f"{gate}\r\n"
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="gone.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"g" * size
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        f"POST {ROUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def stays(client: Client, gate: Path) -> tuple[int, Any]:
    """A client that waits for its answer."""
    form = aiohttp.FormData()
    form.add_field("gate", str(gate))
    form.add_field("file", b"y" * 1000, filename="stays.bin")
    response = await client.post(ROUTE, data=form)
    return response.status, await response.json()


def hung_up(client: Client) -> Callable[[], bool]:
    requests = client.app[SERVER].metrics.requests
    return lambda: requests.value(MODEL, "predict", "499") == 1


async def hang_up_once_started(client: Client, gate: Path, started: Path) -> None:
    """Send a request on a raw socket, and close it once the model runs it."""
    assert client.server.port is not None
    _, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(raw_request(gate, 500))
        await writer.drain()
        assert await eventually(started.exists, 30), "the model never started"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert await eventually(hung_up(client), 30), "the hang-up was never seen"


async def test_a_hang_up_in_a_batch_leaves_the_others_served(tmp_path: Path) -> None:
    """The QA case: a batch of four is running when one client leaves; the
    model still reads all four uploads, the three others get 200, and no
    upload is left once the batch is answered."""
    gate = tmp_path / "gate"
    started = Path(f"{gate}.started")
    async with served({"max_batch_size": 4, "max_batch_delay": 60_000}) as client:
        try:
            staying = [asyncio.create_task(stays(client, gate)) for _ in range(3)]
            await hang_up_once_started(client, gate, started)
            assert started.read_text() == "4"  # all four in one batch
            scratch = server_tmp_dir(client)
            assert len(listdir(scratch)) == 4  # the one that left is still there
            gate.touch()
            answers = await asyncio.wait_for(asyncio.gather(*staying), 30)
            assert [(status, body["predictions"]) for status, body in answers] == [
                (200, {"size": 1000})
            ] * 3
            assert sorted(Path(f"{gate}.read").read_text().split()) == [
                "1000",
                "1000",
                "1000",
                "500",
            ]
            assert await tmp_dir_empties(client, 10) == []
        finally:
            gate.touch()


async def test_a_hang_up_during_a_prediction_keeps_its_upload_until_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without batching: the prediction already running finishes and reads
    its upload (nothing fails in the worker), then the upload is removed."""
    caplog.set_level(logging.DEBUG)
    gate = tmp_path / "gate"
    started = Path(f"{gate}.started")
    read = Path(f"{gate}.read")
    async with served({"max_batch_size": 1}) as client:
        try:
            await hang_up_once_started(client, gate, started)
            scratch = server_tmp_dir(client)
            assert len(listdir(scratch)) == 1  # kept while the worker runs
            gate.touch()
            assert await eventually(read.exists, 30), "the model could not read it"
            assert read.read_text() == "500"
            assert await tmp_dir_empties(client, 10) == []
        finally:
            gate.touch()
    assert "FileNotFoundError" not in caplog.text
    assert "Traceback" not in caplog.text
