"""Compressed request bodies: bombs, streams cut short, corrupt data.

A body sent with ``Content-Encoding`` is decoded as it is read, a step at
a time: a decompression bomb is refused (413) once its decoded size passes
``--client-max-decoded-size``, while the rest of it is still on its way,
without holding the event loop; a gzip or deflate stream that ends before
its end marker (cut short, or with its trailer missing) or that is corrupt
answers 400. Every answer is JSON and the server goes on serving, with no
upload left behind. Raw sockets send what client libraries would not.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import importlib
import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import pytest_asyncio

from deepaas.api import limits
from tests.api.test_input_limits import (
    ANSWER_DEADLINE,
    BOUNDARY,
    JSON,
    MULTIPART,
    PREDICT,
    URLENCODED,
    Answer,
    field,
    form_body,
    raw_post,
    read_answer,
    serves,
)
from tests.loop_probe import LoopStallProbe
from tests.needs import needs
from tests.support import DEMO, Client, MakeClient, plugin_spec

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

DECODED_CAP = 1 << 20  # --client-max-decoded-size of the `tight` client
#: Longest the event loop may be held while a bomb is refused (a whole
#: 2 GB bomb inflated on the loop held it for seconds).
STALL_BOUND = 0.25
WBITS = {"gzip": 31, "deflate": 15, "raw-deflate": -15}


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    """Default limits: no --client-max-size, the default decoded cap."""
    return await make_client([DEMO, plugin_spec("trainer")])


@pytest_asyncio.fixture(loop_scope="module")
async def tight(make_client: MakeClient) -> Client:
    return await make_client(
        [DEMO, plugin_spec("trainer")], client_max_decoded_size=DECODED_CAP
    )


def compress(data: bytes, kind: str) -> bytes:
    """``data`` as one gzip member, zlib stream or raw deflate stream."""
    packer = zlib.compressobj(6, zlib.DEFLATED, WBITS[kind])
    return packer.compress(data) + packer.flush()


@functools.cache
def bomb(kind: str, head: bytes, mebibytes: int, tail: bytes) -> bytes:
    """``head``, ``mebibytes`` MiB of ``a`` and ``tail``, compressed about
    1000:1. Built of members (16 MiB each): one member of 512 MiB takes
    seconds to compress."""
    member = compress(b"a" * (16 << 20), kind)
    return b"".join(
        [compress(head, kind)] + [member] * (mebibytes // 16) + [compress(tail, kind)]
    )


def encoding_of(kind: str) -> str:
    return "gzip" if kind == "gzip" else "deflate"


BOMB_BODIES = {
    "json": (JSON, b'{"text": "', b'"}'),
    "urlencoded": (URLENCODED, b"text=", b"&number=3"),
    "multipart": (
        MULTIPART,
        f"--{BOUNDARY}\r\n{field('file', 'bomb.bin')}\r\n\r\n".encode(),
        f"\r\n--{BOUNDARY}--\r\n".encode(),
    ),
}


async def post_start(
    client: Client, headers: dict[str, str], body: bytes, sent: int
) -> Answer:
    """Announce all of ``body`` (Content-Length) but send only its first
    ``sent`` bytes, then wait for the answer: a server that wanted the rest
    before answering would not answer within the deadline."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST {PREDICT} HTTP/1.1\r\nHost: test\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:sent]
    )
    try:
        return await asyncio.wait_for(read_answer(reader), ANSWER_DEADLINE)
    finally:
        writer.close()


# -- bombs --------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(WBITS))
async def test_bomb_refused_at_the_default_cap_while_it_arrives(client, kind):
    """512 MiB of JSON in 0.5 MB: 413 once the default cap (16 MiB) is
    decoded, before the client sent the rest, with the loop never held for
    long."""
    body = bomb(kind, b'{"text": "', 512, b'"}')
    headers = {**JSON, "Content-Encoding": encoding_of(kind)}
    async with LoopStallProbe() as probe:
        answer = await post_start(client, headers, body, len(body) * 2 // 3)
    assert answer.status == 413
    message = answer.message()
    assert f"{limits.MAX_DECODED_SIZE} bytes once decompressed" in message
    assert "--client-max-decoded-size" in message
    assert probe.longest < STALL_BOUND, probe
    await serves(client)


@pytest.mark.parametrize("kind", list(WBITS))
@pytest.mark.parametrize("body_kind", list(BOMB_BODIES))
async def test_bomb_refused_at_a_configured_cap(tight, kind, body_kind):
    headers, head, tail = BOMB_BODIES[body_kind]
    body = bomb(kind, head, 64, tail)
    headers = {**headers, "Content-Encoding": encoding_of(kind)}
    answer = await post_start(tight, headers, body, len(body) // 2)
    assert answer.status == 413
    assert f"{DECODED_CAP} bytes once decompressed" in answer.message()
    await serves(tight)


async def test_under_the_cap_is_decoded(tight):
    text = "b" * (DECODED_CAP - 100)
    body = gzip.compress(json.dumps({"text": text}).encode())
    answer = await raw_post(tight, PREDICT, body, {**JSON, "Content-Encoding": "gzip"})
    assert answer.status == 200, answer.body[:300]
    assert json.loads(answer.body)["args"]["text"] == text


async def test_json_held_in_memory_is_capped_uncompressed_too(tight):
    body = json.dumps({"text": "c" * (DECODED_CAP + 10)}).encode()
    answer = await raw_post(tight, PREDICT, body, JSON)
    assert answer.status == 413
    assert "--client-max-decoded-size" in answer.message()
    await serves(tight)


async def test_uncompressed_upload_is_not_capped(tight):
    """A plain multipart upload goes to disk as it comes: only
    --client-max-size (unlimited here) caps it."""
    data = b"u" * (3 * DECODED_CAP)
    body = form_body([(field("file", "big.bin"), data)])
    answer = await raw_post(tight, PREDICT, body, MULTIPART)
    assert answer.status == 200, answer.body[:300]
    assert json.loads(answer.body)["args"]["file"]["size"] == len(data)
    await serves(tight)


# -- streams cut short, corrupt data ----------------------------------------------

PLAIN = {
    "json": (JSON, b'{"text": "' + b"abcdefgh" * 2000 + b'", "number": 7}'),
    "urlencoded": (URLENCODED, b"text=" + b"abcdefgh" * 2000 + b"&number=7"),
    "multipart": (
        MULTIPART,
        form_body([(field("text"), b"abcdefgh" * 2000), (field("number"), b"7")]),
    ),
}


@pytest.mark.parametrize("kind", list(WBITS))
@pytest.mark.parametrize("body_kind", list(PLAIN))
@pytest.mark.parametrize("cut", [1, 4, 8, 0.5])
async def test_truncated_stream_is_400(client, kind, body_kind, cut):
    """Cut anywhere, in the data or in the end marker (gzip's 8-byte CRC
    and size trailer, zlib's 4-byte Adler-32): 400, never the part that
    arrived taken as the whole body."""
    headers, plain = PLAIN[body_kind]
    whole = compress(plain, kind)
    dropped = int(len(whole) * cut) if isinstance(cut, float) else cut
    encoding = encoding_of(kind)
    answer = await raw_post(
        client, PREDICT, whole[:-dropped], {**headers, "Content-Encoding": encoding}
    )
    assert answer.status == 400, answer.body[:300]
    message = answer.message()
    assert f"Content-Encoding: {encoding}" in message
    if kind != "raw-deflate" or cut != 0.5:  # a cut raw stream may read as bad data
        assert "truncated" in message or "not valid" in message
    await serves(client)


@pytest.mark.parametrize("body_kind", list(PLAIN))
@pytest.mark.parametrize("cut", [1, 3, 0.5])
async def test_truncated_brotli_stream_is_400(client, body_kind, cut):
    """brotli marks its last block as gzip does its end: a stream cut
    short is refused, not the part that arrived taken as the body (it
    was, through aiohttp's decoder, which does not look)."""
    brotli = pytest.importorskip("brotli")
    headers, plain = PLAIN[body_kind]
    whole = brotli.compress(plain)
    dropped = int(len(whole) * cut) if isinstance(cut, float) else cut
    answer = await raw_post(
        client, PREDICT, whole[:-dropped], {**headers, "Content-Encoding": "br"}
    )
    assert answer.status == 400, answer.body[:300]
    message = answer.message()
    assert "Content-Encoding: br" in message
    assert "truncated" in message or "not valid" in message
    await serves(client)


@pytest.mark.parametrize("data", [b"xx", b"\x00", b"{}"])
async def test_bytes_that_are_no_brotli_stream_are_400(client, data):
    pytest.importorskip("brotli")
    answer = await raw_post(client, PREDICT, data, {**JSON, "Content-Encoding": "br"})
    assert answer.status == 400, answer.body[:300]
    assert "Content-Encoding: br" in answer.message()


@pytest.mark.parametrize("body_kind", list(PLAIN))
async def test_a_whole_brotli_stream_is_read(client, body_kind):
    brotli = pytest.importorskip("brotli")
    headers, plain = PLAIN[body_kind]
    answer = await raw_post(
        client, PREDICT, brotli.compress(plain), {**headers, "Content-Encoding": "br"}
    )
    assert answer.status == 200, answer.body[:300]
    args = json.loads(answer.body)["args"]
    assert (args["text"], args["number"]) == ("abcdefgh" * 2000, 7)


@pytest.mark.parametrize("body_kind", list(PLAIN))
async def test_gzip_trailer_cut_says_truncated(client, body_kind):
    headers, plain = PLAIN[body_kind]
    answer = await raw_post(
        client,
        PREDICT,
        gzip.compress(plain)[:-4],
        {**headers, "Content-Encoding": "gzip"},
    )
    assert answer.status == 400
    assert "gzip stream is truncated" in answer.message()


async def test_gzip_with_a_wrong_crc_is_400(client):
    headers, plain = PLAIN["urlencoded"]
    whole = bytearray(gzip.compress(plain))
    whole[-8] ^= 0xFF  # the CRC-32 of the trailer
    answer = await raw_post(
        client, PREDICT, bytes(whole), {**headers, "Content-Encoding": "gzip"}
    )
    assert answer.status == 400
    assert "not valid gzip data" in answer.message()
    await serves(client)


@pytest.mark.parametrize("kind", list(WBITS))
async def test_concatenated_members_are_all_read(client, kind):
    """Several gzip members (or deflate streams) one after the other are
    one body, as aiohttp reads them."""
    parts = [b"text=first", b"-second", b"&number=", b"12"]
    body = b"".join(compress(part, kind) for part in parts)
    answer = await raw_post(
        client, PREDICT, body, {**URLENCODED, "Content-Encoding": encoding_of(kind)}
    )
    assert answer.status == 200, answer.body[:300]
    args = json.loads(answer.body)["args"]
    assert (args["text"], args["number"]) == ("first-second", 12)


async def test_empty_compressed_body_is_400(client):
    """Zero bytes are no gzip data (see test_body_guards for every kind)."""
    answer = await raw_post(client, PREDICT, b"", {**JSON, "Content-Encoding": "gzip"})
    assert answer.status == 400, answer.body[:300]
    assert "but is empty" in answer.message()


# -- zstd -------------------------------------------------------------------------


def zstd() -> Any:
    """The zstd library aiohttp decodes with (Python 3.14's own, or the
    backport); the test skips, saying what to install, without it."""
    try:
        return importlib.import_module("compression.zstd")
    except ImportError:
        return needs("backports.zstd")


@pytest.mark.parametrize("body_kind", list(PLAIN))
@pytest.mark.parametrize("cut", [1, 3, 0.5])
@pytest.mark.parametrize("frames", [1, 2])
async def test_truncated_zstd_stream_is_400(client, body_kind, cut, frames):
    """A zstd frame cut short, the only frame or the last of two: 400
    saying so. It was taken as a shorter body (aiohttp's decoder starts a
    new decompressor at each frame's end, so it never saw a frame left
    unfinished) and the model ran on the part that arrived."""
    headers, plain = PLAIN[body_kind]
    half = len(plain) // 2
    pieces = [plain] if frames == 1 else [plain[:half], plain[half:]]
    whole = b"".join(zstd().compress(piece) for piece in pieces)
    last = len(zstd().compress(pieces[-1]))
    dropped = int(last * cut) if isinstance(cut, float) else cut
    answer = await raw_post(
        client, PREDICT, whole[:-dropped], {**headers, "Content-Encoding": "zstd"}
    )
    assert answer.status == 400, answer.body[:300]
    assert "zstd stream is truncated" in answer.message()
    await serves(client)


@pytest.mark.parametrize("body_kind", list(PLAIN))
async def test_a_whole_zstd_stream_of_frames_is_read(client, body_kind):
    headers, plain = PLAIN[body_kind]
    half = len(plain) // 2
    body = zstd().compress(plain[:half]) + zstd().compress(plain[half:])
    answer = await raw_post(
        client, PREDICT, body, {**headers, "Content-Encoding": "zstd"}
    )
    assert answer.status == 200, answer.body[:300]
    args = json.loads(answer.body)["args"]
    assert (args["text"], args["number"]) == ("abcdefgh" * 2000, 7)


@pytest.mark.parametrize("data", [b"xx", b"\x28\xb5\x2f\xfd\x00\x00\xff", b"{}"])
async def test_bytes_that_are_no_zstd_stream_are_400(client, data):
    zstd()
    answer = await raw_post(client, PREDICT, data, {**JSON, "Content-Encoding": "zstd"})
    assert answer.status == 400, answer.body[:300]
    assert "Content-Encoding: zstd" in answer.message()
    await serves(client)


async def test_a_zstd_bomb_is_refused_at_the_cap(tight):
    """Decoded a step at a time, frames or not: 413 at the cap."""
    body = zstd().compress(b'{"text": "' + b"a" * (64 << 20) + b'"}')
    answer = await raw_post(tight, PREDICT, body, {**JSON, "Content-Encoding": "zstd"})
    assert answer.status == 413, answer.body[:300]
    await serves(tight)


# -- OIP infer: the same reader -----------------------------------------------------

INFER = "/v2/models/demo/infer"
TEXT = "abcdefgh" * 2000


def oip_bodies() -> dict[str, tuple[dict[str, str], bytes]]:
    """One infer request as JSON, and with both tensors binary."""
    number = {"name": "number", "datatype": "INT64", "shape": [1]}
    text = {"name": "text", "datatype": "BYTES", "shape": [1]}
    as_json = json.dumps(
        {"inputs": [{**text, "data": [TEXT]}, {**number, "data": [7]}]}
    ).encode()
    binary = [struct.pack("<I", len(TEXT)) + TEXT.encode(), struct.pack("<q", 7)]
    head = json.dumps(
        {
            "inputs": [
                {**tensor, "parameters": {"binary_data_size": len(data)}}
                for tensor, data in zip((text, number), binary, strict=True)
            ]
        }
    ).encode()
    length = {"Inference-Header-Content-Length": str(len(head))}
    octets = {**length, "Content-Type": "application/octet-stream"}
    return {"json": (JSON, as_json), "binary": (octets, head + b"".join(binary))}


def encoder(encoding: str) -> Callable[[bytes], bytes]:
    if encoding == "br":
        return needs("brotli").compress  # type: ignore[no-any-return]
    if encoding == "zstd":
        return zstd().compress  # type: ignore[no-any-return]
    return functools.partial(compress, kind=encoding)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("body_kind", ["json", "binary"])
async def test_oip_infer_reads_every_encoding_and_refuses_it_cut(
    client, encoding, body_kind
):
    """/v2/models/<m>/infer reads its body as predict does: whole, it is
    decoded; cut short, 400 in the OIP error shape saying so."""
    headers, plain = oip_bodies()[body_kind]
    whole = encoder(encoding)(plain)
    headers = {**headers, "Content-Encoding": encoding}
    answer = await raw_post(client, INFER, whole, headers)
    assert answer.status == 200, answer.body[:300]
    outputs = {o["name"]: o["data"] for o in json.loads(answer.body)["outputs"]}
    assert "text" in outputs["received"] and "number" in outputs["received"]
    answer = await raw_post(client, INFER, whole[: len(whole) // 2], headers)
    assert answer.status == 400, answer.body[:300]
    error = json.loads(answer.body)["error"]
    assert f"{encoding} stream is truncated" in error
    await serves(client)
