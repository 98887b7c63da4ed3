"""Every read of a body is bounded as it reads; numbers and empty bodies.

A multipart body is read line by line up to its first boundary and through
each part's headers; every such line is read with a maximum, so a body with
no line break (a gzip bomb of zeros, sent with a boundary it never has) is
refused with a 413 within a second, after a few hundred KiB were decoded,
not after 1 GB was held in memory. An empty body marked compressed is no
compressed data (400); a JSON number Python would answer for in its own
words (too many digits) or take as infinity is a clean 400; the arguments of
a big body are loaded off the event loop. Against a real (test) server.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
import tracemalloc

import pytest
import pytest_asyncio

from deepaas.api import args as args_module
from deepaas.api import body as body_module
from deepaas.api import limits
from tests.api.test_body_decoding import bomb
from tests.api.test_input_limits import (
    BOUNDARY,
    JSON,
    MULTIPART,
    PREDICT,
    TRAIN,
    raw_post,
    read_answer,
    serves,
)
from tests.support import DEMO, Client, MakeClient, plugin_spec

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

#: A bomb is refused this soon (it took 75 to 90 s, then a false 408).
BOMB_DEADLINE = 1.0
#: Most the traced memory may grow while a bomb is refused (it grew by 1 GB).
MEMORY_BOUND = 32 << 20


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    """Default limits: the default 16 MiB --client-max-decoded-size."""
    return await make_client([DEMO, plugin_spec("trainer")])


def multipart_gzip() -> dict[str, str]:
    return {**MULTIPART, "Content-Encoding": "gzip"}


LINELESS = {
    # 1 GiB of "a" where the first boundary should be
    "preamble": (b"", limits.preamble_too_large().message),
    # a boundary, then 1 GiB of "a" where the part's headers should be
    "part headers": (
        f"--{BOUNDARY}\r\n".encode(),
        limits.part_headers_too_large().message,
    ),
}


@pytest.mark.parametrize("where", sorted(LINELESS))
async def test_lineless_bomb_is_413_at_once_in_little_memory(client, where):
    head, message = LINELESS[where]
    body = bomb("gzip", head, 1024, b"")
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        start = time.monotonic()
        answer = await raw_post(client, PREDICT, body, multipart_gzip())
        elapsed = time.monotonic() - start
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert answer.status == 413, answer.body
    assert answer.message() == message
    assert answer.headers.get("connection", "").lower() == "close"
    assert elapsed < BOMB_DEADLINE, elapsed
    assert grown < MEMORY_BOUND, grown
    await serves(client)


@pytest.mark.parametrize("mebibytes", [128, 256])
async def test_decoded_size_caps_every_read(client, mebibytes):
    """Sizes around the default cap (refused late, once): a line is capped
    long before the decoded size is."""
    body = bomb("gzip", b"", mebibytes, b"")
    start = time.monotonic()
    answer = await raw_post(client, PREDICT, body, multipart_gzip())
    assert answer.status == 413, answer.body
    assert "before its first boundary" in answer.message()
    assert time.monotonic() - start < BOMB_DEADLINE
    await serves(client)


async def test_raw_lineless_preamble_is_413(client):
    """The same without compression: a 4 MiB line before the boundary."""
    answer = await raw_post(client, PREDICT, b"a" * (4 << 20), MULTIPART)
    assert answer.status == 413, answer.body
    assert answer.message() == limits.preamble_too_large().message
    await serves(client)


# -- empty bodies marked compressed ----------------------------------------------


EMPTY_CASES = {
    "json": JSON,
    "multipart": MULTIPART,
    "no content type": {},
}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("kind", sorted(EMPTY_CASES))
@pytest.mark.parametrize("path", [PREDICT, TRAIN])
async def test_empty_compressed_body_is_400(client, encoding, kind, path):
    headers = {**EMPTY_CASES[kind], "Content-Encoding": encoding}
    answer = await raw_post(client, path, b"", headers)
    assert answer.status == 400, answer.body
    assert answer.message() == (
        f"the request body is marked Content-Encoding: {encoding} but is empty, "
        f"which is not valid {encoding} data: send the compressed body, or no "
        "Content-Encoding header"
    )
    await serves(client)


async def test_empty_chunked_compressed_body_is_400(client):
    """No bytes in chunked transfer: the stream exists, its data does not."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            (
                f"POST {PREDICT} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
                "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ).encode()
        )
        answer = await asyncio.wait_for(read_answer(reader), 15)
    finally:
        writer.close()
    assert answer.status == 400, answer.body
    assert "but is empty" in answer.message()


async def test_empty_uncompressed_body_is_accepted(client):
    answer = await raw_post(client, PREDICT, b"", {"Content-Encoding": "identity"})
    assert answer.status == 200, answer.body


# -- JSON numbers ---------------------------------------------------------------


NUMBERS = {
    "5000 digits": (
        "9" * 5000,
        "the JSON body has an integer of 5000 digits, more than the 4300 "
        "allowed: send such a number as a string",
    ),
    "negative, 5000 digits": (
        "-" + "9" * 5000,
        "the JSON body has an integer of 5000 digits, more than the 4300 "
        "allowed: send such a number as a string",
    ),
    "1e400": (
        "1e400",
        "the JSON body has a number out of the range of a float (1e400): send "
        "one between -1.7e308 and 1.7e308, or send it as a string",
    ),
    "-1e999999999": (
        "-1e999999999",
        "the JSON body has a number out of the range of a float (-1e999999999): "
        "send one between -1.7e308 and 1.7e308, or send it as a string",
    ),
    "400 digits of float": (
        "9" * 400 + ".5",
        "the JSON body has a number out of the range of a float (99999999999999"
        "9999999999...): send one between -1.7e308 and 1.7e308, or send it as "
        "a string",
    ),
    "5000 decimals": (
        "0." + "1" * 5000,
        "the JSON body has a number of 5002 characters, more than the 4300 "
        "allowed: send such a number as a string",
    ),
}


@pytest.mark.parametrize("big", [False, True], ids=["small", "big"])
@pytest.mark.parametrize("case", sorted(NUMBERS))
async def test_json_number_out_of_range_is_clean_400(client, case, big):
    """Small bodies are parsed on the loop, big ones in a worker: the same
    answer, with nothing of Python's own messages in it."""
    number, message = NUMBERS[case]
    padding = "y" * (body_module.OFFLOAD_PARSE_SIZE if big else 1)
    body = f'{{"text": "{padding}", "ratio": {number}}}'.encode()
    answer = await raw_post(client, PREDICT, body, JSON)
    assert answer.status == 400, answer.body
    assert answer.message() == message
    assert "sys." not in message and "int_max_str_digits" not in message


async def test_json_numbers_at_the_limit_are_parsed(client):
    """Parsed, then validated by the model's own fields (out of its ranges)."""
    body = json.dumps({"number": int("9" * 4300), "ratio": 1.7e308}).encode()
    answer = await raw_post(client, PREDICT, body, JSON)
    assert answer.status == 422, answer.body
    assert set(json.loads(answer.body)) == {"number", "ratio"}


# -- arguments of big bodies, off the loop ------------------------------------------


async def test_big_body_arguments_are_loaded_off_the_loop(client, monkeypatch):
    threads: list[bool] = []
    real = args_module.load_args

    def recorded(*args):
        threads.append(threading.current_thread() is threading.main_thread())
        return real(*args)

    monkeypatch.setattr(args_module, "load_args", recorded)
    small = json.dumps({"numbers": [1, 2, 3]}).encode()
    answer = await raw_post(client, PREDICT, small, JSON)
    assert answer.status == 200, answer.body
    assert threads == [True]  # small: on the loop (a thread hop costs more)
    numbers = list(range(body_module.OFFLOAD_PARSE_SIZE // 4))
    big = json.dumps({"numbers": numbers}).encode()
    answer = await raw_post(client, PREDICT, big, JSON)
    assert answer.status == 200, answer.body
    assert threads == [True, False]
    bad = json.dumps({"numbers": ["x", *numbers]}).encode()
    answer = await raw_post(client, PREDICT, bad, JSON)
    assert answer.status == 422, answer.body
    assert threads == [True, False, False]
    await serves(client)


CUT_MULTIPART = {
    # a part's data, with no boundary after it
    "in-data": f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
    'filename="a"\r\n\r\n'.encode()
    + b"x" * 100_000,
    "in-a-field": f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="text"'
    "\r\n\r\nhello".encode(),
    "in-headers": f"--{BOUNDARY}\r\nContent-Disposition: form-da".encode(),
    "after-the-first-boundary": f"--{BOUNDARY}".encode(),
}


@pytest.mark.parametrize("encoding", ["", "gzip"])
@pytest.mark.parametrize("where", list(CUT_MULTIPART))
async def test_a_multipart_body_cut_short_says_so(client, where, encoding):
    """A multipart body that ends inside a part is a 400 that says it was
    cut short (aiohttp's own words were "Reading after EOF"), sent plain or
    compressed (a whole gzip stream of a cut body); nothing stays on disk."""
    body = CUT_MULTIPART[where]
    headers = dict(MULTIPART)
    if encoding:
        body = gzip.compress(body)
        headers["Content-Encoding"] = encoding
    answer = await raw_post(client, PREDICT, body, headers)
    assert answer.status == 400, answer.body[:300]
    assert "ends before its closing boundary line" in answer.message()
    assert "cut short" in answer.message()
    await serves(client)


async def test_a_multipart_body_without_its_boundary_names_it(client):
    """No starting boundary at all is not "cut short": aiohttp's message,
    which names the boundary it looked for, is kept."""
    answer = await raw_post(client, PREDICT, b"hello", MULTIPART)
    assert answer.status == 400, answer.body[:300]
    assert "Could not find starting boundary" in answer.message()
