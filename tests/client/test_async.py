"""deepaas.client.AsyncClient against a real deepaas-run."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import aiohttp
import pytest

from deepaas.client import (
    APIError,
    AsyncClient,
    ClientError,
    ConnectionFailed,
    InvalidArguments,
    NotFound,
    RawResult,
    Timeout,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture
async def client(url: str):
    async with AsyncClient(url, timeout=30) as c:
        yield c


async def test_models_and_metadata(client):
    models = await client.models()
    assert [m["name"] for m in models] == [
        "demo",
        "trainer",
        "binary",
        "outcomes",
        "file_list",
    ]
    assert (await client.metadata("outcomes"))["extra"] == {"nested": [1, 2]}


async def test_predict_arguments_and_files(client, readme: Path):
    fileobj = io.BytesIO(b"abc")
    answer = await client.predict(
        "demo",
        {"number": 5, "numbers": (1, 2), "flag": False, "class": "owl"},
        files={"image": str(readme), "file": fileobj},
        query={"text": "from the query"},
        headers={"x-demo-header": "h"},
    )
    args = answer["args"]
    assert (args["number"], args["numbers"], args["flag"]) == (5, [1, 2], False)
    assert (args["class_"], args["text"], args["x-demo-header"]) == (
        "owl",
        "from the query",
        "h",
    )
    assert args["image"]["sha256"] == hashlib.sha256(readme.read_bytes()).hexdigest()
    assert args["file"]["original_filename"] == "file"  # no name: the argument's
    assert args["file"]["content_type"] == "application/octet-stream"
    assert args["file"]["size"] == 3
    assert not fileobj.closed


async def test_predict_json_body(client):
    answer = await client.predict("demo", json={"options": {"x": None}, "ratio": 1})
    assert answer["args"]["options"] == {"x": None}
    assert answer["score"] == 1.0


async def test_accept(client):
    png = await client.predict("demo", accept="image/png")
    assert isinstance(png, RawResult)
    assert png.content_type == "image/png"
    assert png.content[:4] == b"\x89PNG"
    data = await client.predict("binary", {"kind": "big"}, accept="application/pdf")
    assert len(data.content) == 3 * 1024 * 1024 + 7


async def test_errors(client):
    with pytest.raises(NotFound) as not_found:
        await client.predict("nope")
    assert not_found.value.status == 404
    with pytest.raises(InvalidArguments) as invalid:
        await client.predict("demo", {"ratio": 2})
    assert list(invalid.value.errors) == ["ratio"]
    with pytest.raises(APIError) as failed:
        await client.predict("outcomes", {"mode": "http400"})
    assert (failed.value.status, failed.value.message) == (400, "nope")
    with pytest.raises(NotFound):
        await client.cancel("trainer", "f" * 32)


async def test_training(client):
    job = await client.train("trainer", {"mode": "print", "lines": 2})
    uuid = job["uuid"]
    pieces = [piece async for piece in client.follow_logs("trainer", uuid)]
    assert "".join(pieces) == "line 0\nline 1\nto stderr\n"
    record = await client.wait("trainer", uuid, interval=0.05, timeout=30)
    assert record["status"] == "done"
    assert record["result"]["output"] == {"lines": 2}
    chunk = await client.logs("trainer", uuid, offset=7)
    assert chunk.text == "line 1\nto stderr\n"
    assert chunk.offset == len("line 0\nline 1\nto stderr\n")
    assert uuid in [r["uuid"] for r in await client.trainings("trainer")]


async def test_cancel_while_following(client):
    job = await client.train("trainer", {"mode": "print", "lines": 1000, "seconds": 1})
    uuid = job["uuid"]
    stream = client.follow_logs("trainer", uuid)
    assert (await stream.__anext__()).startswith("line 0\n")
    record = await client.cancel("trainer", uuid)
    assert record["status"] == "cancelled"
    rest = [piece async for piece in stream]  # the stream ends with the job
    assert "line 999" not in "".join(rest)


async def test_server_down(nobody_url: str):
    async with AsyncClient(nobody_url) as c:
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            await c.models()


async def test_no_answer_times_out(silent_url: str):
    async with AsyncClient(silent_url, timeout=0.3) as c:
        with pytest.raises(Timeout, match=r"0\.3 s"):
            await c.metadata("demo")
        with pytest.raises(Timeout):
            await c.train("demo", timeout=0.1)


async def test_connection_dropped(hangup_url: str):
    async with AsyncClient(hangup_url) as c:
        with pytest.raises(ConnectionFailed, match="broke"):
            await c.predict("demo", {"number": 1})


async def test_own_session_is_left_open(url: str):
    async with aiohttp.ClientSession() as session:
        async with AsyncClient(url, session=session) as c:
            assert len(await c.models()) == 5
        assert not session.closed
        with pytest.raises(ClientError, match="closed"):
            await c.models()


async def test_concurrent_predictions(client):
    answers = await asyncio.gather(
        *(client.predict("demo", {"number": n}) for n in range(10))
    )
    assert [a["args"]["number"] for a in answers] == list(range(10))
