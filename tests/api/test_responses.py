"""Predict responses and errors (contract section 3)."""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
import socket
import tempfile
import urllib.parse

import pytest
import pytest_asyncio
from webargs import fields

from deepaas.api.v2.responses import content_disposition, safe_filename, send_result
from deepaas.model.loading import PluginSpec
from deepaas.model.v2.results import PredictResult
from deepaas.model.v2.wrapper import ReturnedFile
from tests.support import (
    Client,
    MakeClient,
    listdir,
    plugin_spec,
    predict,
    server_tmp_dir,
    tmp_dir_empties,
    wait_for,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client([plugin_spec("outcomes"), plugin_spec("schema_check")])


async def outcome(client: Client, mode: str, expect: int) -> dict:
    response = await client.post("/v2/models/outcomes/predict/", params={"mode": mode})
    assert response.status == expect, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def test_wrapped_without_schema(client):
    body = await outcome(client, "ok", 200)
    assert body == {"status": "OK", "predictions": {"ok": True}}


async def test_schema_valid_output_is_sent_raw(client):
    body = await predict(client, "schema_check")
    assert body == {"value": 3, "label": "three"}


async def test_schema_invalid_output_is_500(client):
    body = await predict(client, "schema_check", expect=500, params={"valid": "no"})
    assert set(body) == {"message"}
    assert "did not match its schema" in body["message"]
    assert "value" in body["message"]


async def test_demo_schema_output_is_raw(demo_client):
    body = await predict(demo_client)
    assert set(body) == {"model", "warmed", "score", "received", "args"}
    assert body["warmed"] is True


async def test_model_exception_is_500_json(client):
    assert await outcome(client, "boom", 500) == {"message": "ValueError: boom"}


async def test_unexpected_exception_type(client):
    assert await outcome(client, "nonsense", 500) == {"message": "KeyError: 'nonsense'"}


async def test_http_exception_keeps_status_and_reason(client):
    assert await outcome(client, "http400", 400) == {"message": "nope"}


async def test_not_implemented_is_501(client):
    body = await outcome(client, "notimpl", 501)
    assert set(body) == {"message"}
    assert "not yet" in body["message"]


async def test_numpy_output_encoded(client):
    body = await outcome(client, "numpy", 200)
    assert body == {
        "status": "OK",
        "predictions": {"array": [0, 1, 2], "scalar": 1.5, "int": 7},
    }


async def test_model_keeps_working_after_errors(client):
    for mode, status in [("boom", 500), ("http400", 400), ("notimpl", 501)]:
        await outcome(client, mode, status)
        assert (await outcome(client, "ok", 200))["predictions"] == {"ok": True}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("DELETE", "/v2/models/", 405),
        ("GET", "/v2/models/nope/", 404),
        ("GET", "/v2/models/outcomes/predict/", 405),
    ],
)
async def test_errors_are_json_messages(client, method, path, status):
    response = await client.request(method, path)
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"message"} and isinstance(body["message"], str)


# -- returned files with names no header can carry as they are ------------------

UNDECODABLE = os.fsdecode(b"b\xfe.txt")  # "b\udcfe.txt": a lone surrogate


class OddNames:
    """A plugin (served from this module) whose files have odd names."""

    def get_predict_args(self):
        return {
            "kind": fields.Str(required=True),
            "accept": fields.Str(load_default="application/octet-stream"),
        }

    def predict(self, kind, accept=None):
        names = {
            "surrogate": "a\udcff.txt",
            "bytes": b"r\xc3\xa9sum\xff.txt",
            "bytearray": bytearray(b"plain.txt"),
            "path": pathlib.Path("sub") / "p.txt",
            "number": 42,
        }
        if kind in names:
            return ReturnedFile(filename=__file__, original_filename=names[kind])
        if kind == "bytes_path":  # its name is taken from the path: bytes too
            return ReturnedFile(filename=os.fsencode(__file__))
        if kind == "bad_type":
            return ReturnedFile(filename=__file__, content_type=["text/plain"])
        # An open file with a name that is not UTF-8: deepaas copies it to a
        # temporary result file, which must go whatever the name does.
        folder = tempfile.mkdtemp()
        path = os.path.join(folder, UNDECODABLE)
        with open(path, "wb") as out:
            out.write(b"x" * 100)
        stream = open(path, "rb")  # noqa: SIM115 - deepaas closes it
        os.unlink(path)
        os.rmdir(folder)
        return stream


ODD = PluginSpec("odd_names", f"{__name__}:OddNames")


@pytest_asyncio.fixture(loop_scope="module")
async def files_client(make_client: MakeClient) -> Client:
    return await make_client([ODD, plugin_spec("binary")])


def _disposition_name(header: str) -> str:
    """The file name a client reads from ``filename*`` (RFC 6266/8187)."""
    assert header.isascii()
    value = header.split("filename*=UTF-8''", 1)[1]
    return urllib.parse.unquote(value, errors="strict")


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("surrogate", "a_.txt"),
        ("bytes", "résum\ufffd.txt"),
        ("bytearray", "plain.txt"),
        ("path", "sub/p.txt"),
        ("number", "42"),
        ("bytes_path", "test_responses.py"),
        ("open_file", "b_.txt"),
    ],
)
async def test_any_returned_name_is_sent_sanitized(files_client, kind, name):
    response = await files_client.post(
        "/v2/models/odd_names/predict/", params={"kind": kind}
    )
    assert response.status == 200, await response.text()
    header = response.headers["Content-Disposition"]
    assert header.startswith('attachment; filename="')
    assert _disposition_name(header) == name
    assert len(await response.read()) > 0
    assert await tmp_dir_empties(files_client) == []


async def test_a_content_type_that_is_not_text_is_octet_stream(files_client):
    response = await files_client.post(
        "/v2/models/odd_names/predict/", params={"kind": "bad_type"}
    )
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a\udcff.txt", "a_.txt"),
        ("\ud800\udfff", "__"),
        (b"caf\xc3\xa9\xff", "café\ufffd"),
        (memoryview(b"m.bin"), "m.bin"),
        (pathlib.PurePosixPath("d/e.txt"), "d/e.txt"),
        ("x\r\ny\u202e.txt", "x__y_.txt"),
        ("\udcff" * 300 + ".txt", "_" * 251 + ".txt"),
    ],
)
async def test_safe_filename_takes_any_value(name, expected):
    assert safe_filename(name) == expected
    header = content_disposition(name)
    assert header.isascii() and "\r" not in header and "\n" not in header
    assert _disposition_name(header) == expected


async def test_a_result_file_is_removed_when_the_client_hangs_up(files_client):
    """The client stops reading a 3 MiB result, then goes: the send fails
    and the temporary result file is removed all the same."""
    scratch = server_tmp_dir(files_client)
    port = files_client.server.port
    assert port is not None
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(
            sock,
            b"POST /v2/models/binary/predict/?kind=big&accept=application/pdf "
            b"HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        head = await asyncio.wait_for(loop.sock_recv(sock, 1024), 30)
        assert head.startswith(b"HTTP/1.1 200")

        async def sending() -> bool:
            return any(name.startswith("result-") for name in listdir(scratch))

        assert await wait_for(sending)  # stuck: the client does not read
    finally:
        sock.close()
    assert await tmp_dir_empties(files_client, timeout=30) == []


async def test_a_result_never_sent_is_removed_when_dropped(tmp_path):
    """An answer that aiohttp never prepares (the handler's task was
    cancelled on its way out) closes and removes its file when dropped."""
    path = tmp_path / "result-x"
    path.write_bytes(b"result")
    result = PredictResult("application/pdf", path=str(path), delete=True)
    response = await send_result(None, result)  # type: ignore[arg-type]
    assert path.exists()
    del response
    gc.collect()
    assert not path.exists()
