"""Bad request bodies answer a clear 4xx JSON at once (issue 7, point 9).

Form parts and part headers (413), JSON depth and undecodable bodies (400),
slow bodies (408, connection closed), uploads written off the event loop,
and plugin- or client-chosen values made safe in response headers. Each
case checks the answer, that the server still serves, and that no upload is
left in the scratch directory. Bodies that a client library would not send
go through raw sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import importlib.util
import json
import logging
import socket
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import ClientResponse

from deepaas.api import body as body_module
from deepaas.api import limits
from deepaas.api import multipart as multipart_module
from tests.plugins import header_values
from tests.support import (
    DEMO,
    Client,
    MakeClient,
    plugin_spec,
    predict,
    tmp_dir_empties,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

PREDICT = "/v2/models/demo/predict/"
TRAIN = "/v2/models/trainer/train/"
BOUNDARY = "limitsb0undary"
MAX_PARTS = 4  # --max-form-parts of the `tight` client
CLIENT_TIMEOUT = 1.0  # --client-timeout of the `tight` client
ANSWER_DEADLINE = 15.0  # seconds any raw answer may take at most


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    """Default limits (1000 form parts, 60 s client timeout)."""
    return await make_client(
        [DEMO, plugin_spec("trainer"), plugin_spec("headers", "header_values")]
    )


@pytest_asyncio.fixture(loop_scope="module")
async def tight(make_client: MakeClient) -> Client:
    return await make_client(
        [DEMO, plugin_spec("trainer"), plugin_spec("files", "file_list")],
        max_form_parts=MAX_PARTS,
        client_timeout=CLIENT_TIMEOUT,
    )


# -- helpers ----------------------------------------------------------------


class Answer:
    """A response read off a raw socket."""

    def __init__(self, head: bytes, body: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                self.headers[key.strip().lower()] = value.strip()
        self.body = body

    def message(self) -> str:
        assert self.headers.get("content-type", "").startswith("application/json")
        document = json.loads(self.body)
        assert set(document) == {"message"}, document
        return str(document["message"])


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    answer = Answer(head, b"")
    answer.body = await reader.readexactly(int(answer.headers["content-length"]))
    return answer


async def raw_post(
    client: Client,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> Answer:
    """POST ``body`` as given, with a Content-Length; read the answer.

    The exchange runs on threads with a blocking socket: the test's event
    loop, which the server under test runs on, does none of the client's
    work (a 50 MB body written from the loop would stall it by itself).
    """
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request_head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    address = (str(client.host), int(client.port))  # type: ignore[arg-type]
    return await asyncio.to_thread(_exchange, address, request_head, body)


def _exchange(address: tuple[str, int], head: bytes, body: bytes) -> Answer:
    with socket.create_connection(address, timeout=ANSWER_DEADLINE) as sock:

        def send() -> None:
            try:
                sock.sendall(head)
                sock.sendall(memoryview(body))  # no copy of a big body
            except OSError:
                pass  # the server answered early and closed: that is allowed

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = bytearray()
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before an answer: {received!r}")
            received += chunk
        end = received.index(b"\r\n\r\n") + 4
        answer = Answer(bytes(received[:end]), b"")
        length = int(answer.headers["content-length"])
        while len(received) - end < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the middle of the answer")
            received += chunk
        answer.body = bytes(received[end : end + length])
        with contextlib.suppress(OSError):  # the server may have closed it
            sock.shutdown(socket.SHUT_RDWR)  # ends a send still blocked
        sender.join(ANSWER_DEADLINE)
        return answer


async def post_form(
    client: Client, parts: Iterable[tuple[str, bytes]], path: str = PREDICT
) -> Answer:
    """:func:`raw_post` of a multipart form of ``parts`` (see :func:`form_body`)."""
    return await raw_post(client, path, form_body(parts), MULTIPART)


def form_body(parts: Iterable[tuple[str, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A multipart body from (header lines, content) pairs."""
    out = []
    for head, content in parts:
        out.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + content + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def field(name: str, filename: str | None = None, extra: str = "") -> str:
    head = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        head += f'; filename="{filename}"'
    return head + extra


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
JSON = {"Content-Type": "application/json"}
URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}


async def serves(client: Client) -> None:
    """The server still answers, and every upload was removed."""
    body = await predict(client, params={"text": "after"})
    assert body["args"]["text"] == "after"
    assert await tmp_dir_empties(client) == []


async def trainings(client: Client) -> int:
    response = await client.get(TRAIN)
    assert response.status == 200
    return len(await response.json())


# -- 1. form parts --------------------------------------------------------------


async def test_ten_thousand_file_parts_are_413(client):
    parts = [(field("file", str(i)), b"x") for i in range(10_000)]
    answer = await post_form(client, parts)
    assert answer.status == 413
    message = answer.message()
    assert "1000 parts" in message and "--max-form-parts" in message
    await serves(client)


@pytest.mark.parametrize(
    "make_part",
    [
        pytest.param(lambda i: (field(f"unknown{i}"), b"v"), id="unknown-fields"),
        pytest.param(lambda i: (field("text"), b"v"), id="text-fields"),
        pytest.param(lambda i: (field("file", f"{i}.bin"), b"v"), id="one-file-field"),
        pytest.param(
            lambda i: (field(("file", "image", "zzz")[i % 3], f"{i}"), b"v"),
            id="mixed",
        ),
    ],
)
async def test_every_part_counts(tight, make_part):
    allowed = [make_part(i) for i in range(MAX_PARTS)]
    answer = await post_form(tight, allowed)
    assert answer.status == 200, answer.body
    over = [make_part(i) for i in range(MAX_PARTS + 1)]
    answer = await post_form(tight, over)
    assert answer.status == 413
    assert f"more than {MAX_PARTS} parts" in answer.message()
    await serves(tight)


async def test_too_many_parts_refused_before_the_rest_arrives(tight):
    """The 413 comes while the body is still being sent (part MAX_PARTS+1)."""
    reader, writer = await asyncio.open_connection(tight.host, tight.port)
    parts = [(field("text"), b"v") for _ in range(MAX_PARTS)]
    # The first bytes of part MAX_PARTS + 1, of a body announced much longer
    # (aiohttp reads up to 16 KiB past a part's start before it hands over
    # the part's end).
    start = form_body([*parts, (field("file", "f"), b"x" * 20_000)])[:-100]
    writer.write(
        f"POST {PREDICT} HTTP/1.1\r\nHost: test\r\nContent-Type: "
        f"multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: "
        f"{len(start) + 10_000_000}\r\n\r\n".encode()
        + start
    )
    try:
        answer = await asyncio.wait_for(read_answer(reader), ANSWER_DEADLINE)
    finally:
        writer.close()
    assert answer.status == 413
    assert "--max-form-parts" in answer.message()
    await serves(tight)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("a=1&b=2&c=3&d=4", 200),
        ("a=1&&&&&&&&b=2&", 200),  # empty pairs are not fields
        ("a=1&b=2&c=3&d=4&e=5", 413),
        ("&".join(["text=x"] * 50), 413),
    ],
)
async def test_urlencoded_fields(tight, body, status):
    answer = await raw_post(tight, PREDICT, body.encode(), URLENCODED)
    assert answer.status == status, answer.body
    if status == 413:
        assert f"more than {MAX_PARTS} fields" in answer.message()
    await serves(tight)


async def test_urlencoded_default_limit(client):
    ok = "&".join(f"f{i}=x" for i in range(1000))
    assert (await raw_post(client, PREDICT, ok.encode(), URLENCODED)).status == 200
    over = ok + "&text=x"
    answer = await raw_post(client, PREDICT, over.encode(), URLENCODED)
    assert answer.status == 413
    assert "1000 fields" in answer.message()
    await serves(client)


@pytest.mark.parametrize(
    "body",
    [b"text=%ff%fe", b"text=ok&number=4%C3", b"text=caf%E9"],  # latin-1 e-acute
)
async def test_urlencoded_bytes_that_are_no_utf8_are_400(client, body):
    """Refused as in a multipart field or JSON, not handed to the model
    with U+FFFD in their place (what aiohttp's request.post() does)."""
    answer = await raw_post(client, PREDICT, body, URLENCODED)
    assert answer.status == 400, answer.body
    assert "is not utf-8 text once percent-decoded" in answer.message()
    await serves(client)


async def test_urlencoded_utf8_is_read(client):
    answer = await raw_post(client, PREDICT, b"text=caf%C3%A9+au+lait", URLENCODED)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["args"]["text"] == "café au lait"


# -- 2. part headers --------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("\r\nX-Pad: " + "a" * 9000, id="one-long-line"),
        pytest.param(
            "".join(f"\r\nX-Pad-{i}: {'a' * 500}" for i in range(20)), id="sum"
        ),
        pytest.param("".join(f"\r\nX-{i}: a" for i in range(200)), id="many-lines"),
        pytest.param("; filename=" + "n" * 9000, id="long-filename"),
    ],
)
async def test_part_headers_too_large(client, extra):
    parts = [(field("text"), b"short"), (field("file") + extra, b"data")]
    answer = await post_form(client, parts)
    assert answer.status == 413
    message = answer.message()
    assert f"larger than {limits.MAX_PART_HEADER_SIZE} bytes" in message
    await serves(client)


async def test_first_part_headers_too_large(client):
    extra = "".join(f"\r\nX-Pad-{i}: {'a' * 500}" for i in range(40))  # ~20 KiB
    parts = [(field("file", "a.txt") + extra, b"data")]
    answer = await post_form(client, parts)
    assert answer.status == 413
    assert "headers" in answer.message()
    await serves(client)


@pytest.mark.parametrize(
    ("preamble", "status"),
    [
        (b"This is a multi-part message in MIME format.\r\n", 200),
        (b"\r\n" * 5000, 413),  # 10,000 bytes of empty lines
        (b"x" * 7000 + b"\r\n" + b"y" * 7000 + b"\r\n", 413),
    ],
)
async def test_multipart_preamble(client, preamble, status):
    body = preamble + form_body([(field("text"), b"after a preamble")])
    answer = await raw_post(client, PREDICT, body, MULTIPART)
    assert answer.status == status, answer.body
    if status == 413:
        assert f"more than {limits.MAX_PREAMBLE_SIZE} bytes" in answer.message()
    else:
        assert json.loads(answer.body)["args"]["text"] == "after a preamble"
    await serves(client)


async def test_part_headers_under_the_cap(client):
    extra = "".join(f"\r\nX-Pad-{i}: {'a' * 500}" for i in range(10))  # ~5 KiB
    parts = [(field("file", "a.txt") + extra, b"data")]
    answer = await post_form(client, parts)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["args"]["file"]["size"] == 4
    await serves(client)


# -- 3. JSON --------------------------------------------------------------------


def nested(depth: int) -> dict:
    """``{"options": {...}}``: ``depth`` objects in all."""
    value: dict = {}
    for _ in range(depth - 2):
        value = {"a": value}
    return {"options": value}


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(
            b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="100000-arrays"
        ),
        pytest.param(b'{"options": ' + b"[" * 5000, id="unclosed"),
        pytest.param(json.dumps(nested(101)).encode(), id="101-objects"),
        pytest.param(
            json.dumps({"text": "x" * 100_000, "options": nested(200)}).encode(),
            id="big-and-deep",
        ),
    ],
)
async def test_json_too_deep_is_400(client, document):
    answer = await raw_post(client, PREDICT, document, JSON)
    assert answer.status == 400
    assert "nested deeper than 100 levels" in answer.message()
    await serves(client)


async def test_json_at_the_depth_limit(client):
    document = nested(100)
    body = await predict(client, json=document)
    assert body["args"]["options"] == document["options"]


async def test_json_brackets_in_strings_do_not_count(client):
    text = '[{"\\"' * 500 + "\\\\"
    body = await predict(client, json={"text": text})
    assert body["args"]["text"] == text


async def test_json_train_body_too_deep(client):
    before = await trainings(client)
    answer = await raw_post(client, TRAIN, b'{"a": ' + b"[" * 100_000, JSON)
    assert answer.status == 400
    assert "nested deeper" in answer.message()
    assert await trainings(client) == before


# -- 4. Content-Encoding ----------------------------------------------------------

BODIES = {
    "json": (JSON, b'{"text": "plain"}'),
    "urlencoded": (URLENCODED, b"text=plain"),
    "multipart": (MULTIPART, form_body([(field("text"), b"plain")])),
}


@pytest.mark.parametrize("kind", list(BODIES))
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "GZIP"])
async def test_undecodable_body_is_400(client, kind, encoding):
    headers, body = BODIES[kind]
    answer = await raw_post(
        client, PREDICT, body, {**headers, "Content-Encoding": encoding}
    )
    assert answer.status == 400
    message = answer.message()
    assert f"Content-Encoding: {encoding.lower()}" in message
    assert "uncompressed" in message
    await serves(client)


@pytest.mark.parametrize("kind", list(BODIES))
@pytest.mark.parametrize("encoding", ["foo", "gzip, gzip", "x-gzip", "compress"])
async def test_unknown_encoding_is_400(client, kind, encoding):
    headers, body = BODIES[kind]
    answer = await raw_post(
        client, PREDICT, body, {**headers, "Content-Encoding": encoding}
    )
    assert answer.status == 400
    message = answer.message()
    assert f"Content-Encoding {encoding!r} is not supported" in message
    # It names every encoding this server decodes (br and zstd are installed
    # with the tests' extras), not only gzip and deflate.
    assert message.endswith("compressed with gzip, deflate, br or zstd"), message
    await serves(client)


@pytest.mark.parametrize("kind", list(BODIES))
@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("identity", bytes)],
)
async def test_encoded_body_is_decoded(client, kind, encoding, compress):
    headers, body = BODIES[kind]
    answer = await raw_post(
        client, PREDICT, compress(body), {**headers, "Content-Encoding": encoding}
    )
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["args"]["text"] == "plain"


async def test_undecodable_train_body_is_400(client):
    before = await trainings(client)
    body = form_body([(field("mode"), b"sleep"), (field("data", "d.bin"), b"x" * 100)])
    answer = await raw_post(
        client, TRAIN, body, {**MULTIPART, "Content-Encoding": "gzip"}
    )
    assert answer.status == 400
    assert "Content-Encoding: gzip" in answer.message()
    assert await trainings(client) == before


def _has_module(*names: str) -> bool:
    for name in names:
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except ModuleNotFoundError:  # its parent package is missing
            pass
    return False


@pytest.mark.parametrize(
    ("encoding", "modules"),
    [
        ("br", ("brotli", "brotlicffi")),
        ("zstd", ("backports.zstd", "compression.zstd")),
    ],
)
async def test_undecodable_optional_encodings(client, caplog, encoding, modules):
    """br and zstd: a 400 JSON when aiohttp can decode them; without their
    libraries aiohttp answers 400 itself, before any handler runs (and logs
    it): still a 400, never a 500."""
    headers, body = BODIES["json"]
    answer = await raw_post(
        client, PREDICT, body, {**headers, "Content-Encoding": encoding}
    )
    assert answer.status == 400
    if _has_module(*modules):
        assert f"Content-Encoding: {encoding}" in answer.message()
    else:
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert all(
            "content-encoding" in str(r.exc_info[1]) for r in errors if r.exc_info
        )
        caplog.clear()  # aiohttp's own log line for this expected 400
    await serves(client)


# -- 5. slow bodies ---------------------------------------------------------------


async def stalled(
    client: Client, path: str, headers: dict[str, str], start: bytes
) -> Answer:
    """Send the first ``start`` bytes of a larger body, then nothing."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: test\r\n{head}Content-Length: "
        f"{len(start) + 1000}\r\n\r\n".encode()
        + start
    )
    try:
        answer = await asyncio.wait_for(read_answer(reader), ANSWER_DEADLINE)
        # The server closes the connection after the answer (no lingering).
        assert await asyncio.wait_for(reader.read(), ANSWER_DEADLINE) == b""
    finally:
        writer.close()
    assert answer.headers.get("connection", "").lower() == "close"
    return answer


@pytest.mark.parametrize(
    ("headers", "start"),
    [
        pytest.param(JSON, b'{"text": "abc', id="json"),
        pytest.param(URLENCODED, b"text=abc&number=", id="urlencoded"),
        pytest.param(
            MULTIPART,
            form_body([(field("text"), b"t"), (field("file", "f.bin"), b"a" * 70_000)])[
                :-40
            ],
            id="multipart-mid-upload",
        ),
        pytest.param(
            MULTIPART, f"--{BOUNDARY}\r\nContent-Dis".encode(), id="part-headers"
        ),
    ],
)
async def test_stalled_body_is_408(tight, headers, start):
    answer = await stalled(tight, PREDICT, headers, start)
    assert answer.status == 408
    message = answer.message()
    assert f"{CLIENT_TIMEOUT:g} s" in message and "--client-timeout" in message
    await serves(tight)


async def test_stalled_train_body_is_408(tight):
    before = await trainings(tight)
    start = form_body([(field("data", "d.bin"), b"a" * 50_000)])[:-40]
    answer = await stalled(tight, TRAIN, MULTIPART, start)
    assert answer.status == 408
    assert await trainings(tight) == before


async def body_timeouts(client: Client) -> float:
    """``deepaas_client_timeouts_total{phase="body"}``, scraped."""
    response = await client.get("/metrics")
    assert response.status == 200
    series = 'deepaas_client_timeouts_total{phase="body"} '
    for line in (await response.text()).splitlines():
        if line.startswith(series):
            return float(line[len(series) :])
    raise AssertionError(f"no {series.strip()} in /metrics")


@pytest.mark.parametrize(
    ("path", "headers", "start"),
    [
        pytest.param(PREDICT, JSON, b'{"text": "abc', id="predict-json"),
        pytest.param(
            TRAIN,
            MULTIPART,
            form_body([(field("data", "d.bin"), b"a" * 50_000)])[:-40],
            id="train-multipart",
        ),
    ],
)
async def test_stalled_body_is_counted_in_metrics(tight, path, headers, start):
    """Each 408 (raised as a ClosingError, not returned) counts once."""
    before = await body_timeouts(tight)
    answer = await stalled(tight, path, headers, start)
    assert answer.status == 408
    assert await body_timeouts(tight) == before + 1


async def test_steady_slow_body_is_not_cut(tight):
    """Pieces that keep coming, each well within the timeout, are read whole
    even when the whole body takes longer than the timeout."""
    reader, writer = await asyncio.open_connection(tight.host, tight.port)
    body = b"text=" + b"s" * 9 + b"&number=7"
    writer.write(
        f"POST {PREDICT} HTTP/1.1\r\nHost: test\r\nContent-Type: "
        "application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    try:
        for i in range(0, len(body), 2):  # ~1.6 s in all: more than the timeout
            writer.write(body[i : i + 2])
            await writer.drain()
            await asyncio.sleep(CLIENT_TIMEOUT / 6)  # the client's pace, not ordering
        answer = await asyncio.wait_for(read_answer(reader), ANSWER_DEADLINE)
    finally:
        writer.close()
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["args"]["number"] == 7


# -- 6. uploads off the event loop ----------------------------------------------


async def test_uploads_and_big_bodies_are_handled_off_the_loop(client, monkeypatch):
    """Files are created and written, and big JSON parsed, in worker threads."""
    calls: list[tuple[str, bool]] = []

    def recorded(name: str, fn):
        def wrapper(*args):
            calls.append((name, threading.current_thread() is threading.main_thread()))
            return fn(*args)

        return wrapper

    for module, name in (
        (multipart_module, "_write_new"),
        (multipart_module, "_append"),
        (body_module, "parse_json"),
    ):
        monkeypatch.setattr(module, name, recorded(name, getattr(module, name)))
    data = bytes(range(256)) * 8192  # 2 MiB: several pieces
    parts = [(field("file", "big.bin") + "\r\nContent-Type: application/x-test", data)]
    answer = await post_form(client, parts)
    assert answer.status == 200, answer.body
    received = json.loads(answer.body)["args"]["file"]
    assert received["sha256"] == hashlib.sha256(data).hexdigest()
    assert received["content_type"] == "application/x-test"
    big = json.dumps({"text": "y" * (body_module.OFFLOAD_PARSE_SIZE + 1)}).encode()
    assert (await raw_post(client, PREDICT, big, JSON)).status == 200
    names = {name for name, _ in calls}
    assert names == {"_write_new", "_append", "parse_json"}
    assert not [name for name, on_main in calls if on_main]
    await serves(client)


async def test_list_of_files_up_to_the_limit(tight):
    """Every part of a list-of-files argument is an upload: all are on disk,
    whole, when the model runs; one part more and none is left."""
    contents = [f"content {i}" * (i * 3000 + 1) for i in range(MAX_PARTS)]
    parts = [(field("files", f"{i}.txt"), c.encode()) for i, c in enumerate(contents)]
    answer = await post_form(tight, parts, "/v2/models/files/predict/")
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["predictions"]["contents"] == contents
    await serves(tight)
    parts.append((field("files", "one-more.txt"), b"x"))
    answer = await post_form(tight, parts, "/v2/models/files/predict/")
    assert answer.status == 413
    await serves(tight)


async def test_many_uploads_then_an_error_leave_nothing(tight):
    """Uploads written before a refusal are removed."""
    big = [
        (field("file", "a.bin"), b"a" * 300_000),
        (field("image", "b.bin"), b"b" * 10),
    ]
    parts = [*big, *[(field(f"u{i}"), b"") for i in range(MAX_PARTS)]]
    answer = await post_form(tight, parts)
    assert answer.status == 413
    await serves(tight)


# -- 7. response headers from plugin and client values ----------------------------


async def headers_plugin_answer(client: Client, **params: str) -> ClientResponse:
    """The 200 answer of the ``header_values`` plugin, which returns a file
    or a text with the name, type or Accept given in ``params``."""
    response = await client.post("/v2/models/headers/predict/", params=params)
    assert response.status == 200
    return response


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("evil\r\nSet-Cookie: a=b.txt", "evil__Set-Cookie: a=b.txt"),
        ("nul\x00.txt", "nul_.txt"),
        ("tab\tand del\x7f.txt", "tab_and del_.txt"),
        ("c1\x85\x9b.txt", "c1__.txt"),
        ("line\u2028sep.txt", "line_sep.txt"),
        ("rtl\u202etxt.exe", "rtl_txt.exe"),
        ('quote"back\\slash.txt', "quoteback" + "slash.txt"),
    ],
)
async def test_returned_file_name_is_cleaned(client, name, expected):
    response = await headers_plugin_answer(client, kind="file", name=name)
    disposition = response.headers["Content-Disposition"]
    assert f'filename="{expected}"' in disposition
    assert not any(ord(c) < 32 or ord(c) == 127 for c in disposition)
    assert "Set-Cookie" not in response.headers
    assert await response.read() == Path(header_values.__file__).read_bytes()
    await serves(client)


async def test_returned_file_name_unicode_and_long(client):
    name = "résumé-" + "x" * 400 + ".pdf"
    response = await headers_plugin_answer(client, kind="file", name=name)
    disposition = response.headers["Content-Disposition"]
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9-" in disposition
    assert disposition.endswith(".pdf")
    assert len(disposition) < 1000


@pytest.mark.parametrize(
    ("ctype", "expected"),
    [
        ("application/pdf", "application/pdf"),
        (
            'text/csv; charset=utf-8; header="present"',
            'text/csv; charset=utf-8; header="present"',
        ),
        ("text/plain\r\nX-Evil: 1", "application/octet-stream"),
        ("not a type", "application/octet-stream"),
        ("text/plain; charset=\x00", "application/octet-stream"),
        ("tëxt/plain", "application/octet-stream"),
    ],
)
async def test_returned_file_content_type_is_checked(client, ctype, expected):
    response = await headers_plugin_answer(client, kind="file", ctype=ctype)
    assert response.headers["Content-Type"] == expected
    assert "X-Evil" not in response.headers


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/csv", "text/csv; charset=utf-8"),
        ("text/csv\r\nX-Evil: 1", "application/octet-stream"),
        ("text/html, */*;q=0.8", "application/octet-stream"),
        ("\x7f/\x7f", "application/octet-stream"),
    ],
)
async def test_client_accept_content_type_is_checked(client, accept, expected):
    response = await headers_plugin_answer(client, kind="text", accept=accept)
    assert response.headers["Content-Type"] == expected
    assert await response.text() == "some text"
    assert "X-Evil" not in response.headers


@pytest.mark.parametrize("body", ['{"number": 7}', "  [1, 2]", '{"text": "a=b&c=d"}'])
async def test_json_sent_as_a_form_is_400_with_the_fix(client, body):
    """``curl -d '{...}'`` sends JSON as an urlencoded form: told so, not
    run on the model's defaults."""
    answer = await raw_post(client, PREDICT, body.encode(), URLENCODED)
    assert answer.status == 400, answer.body
    assert "Content-Type: application/json" in answer.message()
    await serves(client)


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({}, "with no Content-Type"),  # requests.post(url, data=json.dumps(...))
        ({"Content-Type": "text/plain"}, "as text/plain"),
        ({"Content-Type": "text/plain; charset=utf-8"}, "as text/plain"),
        ({"Content-Type": "application/octet-stream"}, "as application/octet-stream"),
        ({"Content-Type": "text/json"}, "as text/json"),  # not read as JSON
        ({"Content-Type": "application/x-json"}, "as application/x-json"),
    ],
)
@pytest.mark.parametrize("pad", [0, 200_000])  # small, and past 64 KiB
async def test_json_sent_without_its_type_is_400_with_the_fix(
    client, headers, named, pad
):
    body = b'{"number": 200, "pad": "' + b"x" * pad + b'"}'
    answer = await raw_post(client, PREDICT, body, headers)
    assert answer.status == 400, answer.body
    assert answer.message() == (
        f"the body is JSON but was sent {named}: send it with "
        "'Content-Type: application/json'"
    )
    await serves(client)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"just some text", {"Content-Type": "text/plain"}),
        (b"\x00\x01binary", {}),
        (b"{not json", {"Content-Type": "text/plain"}),
        (b'{"number": 200}', {"Content-Type": "image/png"}),
    ],
)
async def test_other_untyped_bodies_are_ignored_as_before(client, body, headers):
    answer = await raw_post(client, PREDICT, body, headers)
    assert answer.status == 200, answer.body


@pytest.mark.parametrize("body", ["{not json", "{a=1&number=3", "[x]=1&number=3"])
async def test_a_form_that_only_starts_like_json_is_a_form(client, body):
    answer = await raw_post(client, PREDICT, body.encode(), URLENCODED)
    assert answer.status == 200, answer.body
