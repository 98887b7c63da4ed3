"""What a real ``deepaas-run`` answers before any route sees the request:
a head aiohttp's parser refuses, and a head that does not arrive within
``--client-timeout``. Each gets a JSON answer, ``{"error": ...}`` on an Open
Inference Protocol path (tritonclient reads that key) and ``{"message":
...}`` elsewhere; a connection that never asked anything is closed without
one. The guard sits in front of the app (``deepaas.api.connections``), so
only the real server has it, not the test client.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import pytest

from tests.deepaas_run import HANG_S, DeepaasRun

pytestmark = pytest.mark.timeout(120)

TIMEOUT_S = 1  # --client-timeout of these servers


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def answer(raw: bytes) -> tuple[int, dict[str, str]]:
    """The status and the JSON body of one HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), raw[:200]
    return int(head.split()[1]), json.loads(body)


@pytest.fixture
def served(server: Callable[..., DeepaasRun]) -> DeepaasRun:
    return server(
        "--model-name", "demo", "--client-timeout", str(TIMEOUT_S)
    ).wait_ready()


OIP = b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\n"
DEEPAAS = b"POST /v2/models/demo/predict/ HTTP/1.1\r\nHost: x\r\n"
#: Its complete request is an OIP 404 ({"error"}): its 408 is an OIP error too.
EMPTY_SEGMENT = b"POST /v2/models//infer HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    ("head", "key"), [(OIP, "error"), (DEEPAAS, "message")], ids=["oip", "deepaas"]
)
@pytest.mark.parametrize(
    ("header", "says"),
    [
        (b"Authorization: Bearer abc\x00\r\n", "Invalid header value char"),
        (b"X-Long: " + b"a" * 10240 + b"\r\n", "longer than 8190 bytes"),
    ],
    ids=["nul", "long"],
)
def test_a_head_the_parser_refuses(
    served: DeepaasRun, head: bytes, key: str, header: bytes, says: str
) -> None:
    status, body = answer(exchange(served.port, head + header + b"\r\n"))
    assert status == 400
    assert set(body) == {key} and says in body[key]


@pytest.mark.parametrize(
    ("head", "key"),
    [(OIP, "error"), (EMPTY_SEGMENT, "error"), (DEEPAAS, "message")],
    ids=["oip", "oip-empty-segment", "deepaas"],
)
def test_a_head_that_stalls_is_answered_408(
    served: DeepaasRun, head: bytes, key: str
) -> None:
    """It was closed with no answer (a client saw a dropped connection)."""
    started = time.monotonic()
    status, body = answer(exchange(served.port, head))  # no blank line: it stalls
    assert status == 408
    assert set(body) == {key} and "--client-timeout" in body[key]
    assert TIMEOUT_S - 0.05 <= time.monotonic() - started < TIMEOUT_S + 5


def test_a_connection_that_asked_nothing_is_closed_without_an_answer(
    served: DeepaasRun,
) -> None:
    started = time.monotonic()
    assert exchange(served.port, b"") == b""
    assert TIMEOUT_S - 0.05 <= time.monotonic() - started < TIMEOUT_S + 5
