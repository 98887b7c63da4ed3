"""One real ``deepaas-run`` for the client tests, and servers that misbehave.

The server is a subprocess (as a user runs it) serving the example plugin
and test plugins on a free port; the sync client talks to it from the test's
thread, the async one from the test's event loop. The misbehaving "servers"
are plain sockets, so nothing about them is mocked either.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deepaas_run import DeepaasRun, free_port, register_plugins

MODELS = {
    "trainer": "tests.plugins.trainer",
    "binary": "tests.plugins.binary",
    "outcomes": "tests.plugins.outcomes",
    "file_list": "tests.plugins.file_list",
}


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeepaasRun]:
    root = tmp_path_factory.mktemp("client")
    register_plugins(root / "plugins", "deepaas_client_tests", MODELS)
    srv = DeepaasRun(
        root,
        "--model-name",
        ",".join(["demo", *MODELS]),
        "--devices",
        "cpu",
        "--state-dir",
        str(root / "state"),
        "--max-trainings",
        "8",
        name="client",
        path=[root / "plugins"],
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.close()


@pytest.fixture
def url(server: DeepaasRun) -> str:
    return server.url


@pytest.fixture
def nobody_url() -> str:
    """A URL where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A server that takes connections (the kernel's backlog) and never
    answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def hangup_url() -> Iterator[str]:
    """A server that reads the request head, then closes the connection
    without answering (a crashed proxy)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:  # closed: the test is over
                return
            with conn, contextlib.suppress(OSError):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(10)


@pytest.fixture
def readme() -> Path:
    return Path(__file__).resolve().parents[2] / "README.md"
