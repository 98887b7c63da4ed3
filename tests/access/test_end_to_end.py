"""``deepaas-run`` as deployed: one request followed by its id through the API
log, the worker's log, the access log, the answer and the training record;
the start-up warning and errors of access control."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deepaas_run import DEEPAAS_RUN, DeepaasRun, until

pytestmark = pytest.mark.timeout(120)

CHATTY = ("--plugin", "chatty=tests.plugins.chatty")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DeepaasRun]:
    srv = DeepaasRun(
        tmp_path,
        *CHATTY,
        "--state-dir",
        str(tmp_path / "state"),
        "--access-log",
        "json",
        "--log-file",
        str(tmp_path / "server.log"),
    )
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()
        srv.close()


def access_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_one_request_followed_through_every_log(
    server: DeepaasRun, tmp_path: Path
) -> None:
    status, body, headers = server.call(
        "POST",
        "/v2/models/chatty/predict/?word=traced&fail=true",
        headers={"X-Request-ID": "e2e-1"},
    )
    assert status == 500 and headers["X-Request-ID"] == "e2e-1"

    def logged() -> str | None:
        output = server.output()
        return output if "ValueError: chatty fails on traced" in output else None

    output = until(logged, "the worker's traceback is logged")
    # the API process's own line about the request
    assert "WARNING deepaas.api.errors: [e2e-1] POST /v2/models/chatty/predict/" in (
        output
    )
    # the worker's lines while it ran the call: print, stderr (INFO), and
    # logging with no handler of the plugin's own (its level, its logger)
    for text in ("chatty prints traced", "chatty writes traced"):
        assert f"INFO deepaas.worker: [e2e-1] [chatty/0] {text}" in output
    assert "WARNING deepaas.worker: [e2e-1] [chatty/0] chatty logs traced" in output
    # one JSON access line, alone on its line, on stderr and in --log-file
    entry = until(
        lambda: [
            e for e in access_lines(server.output()) if e["request_id"] == "e2e-1"
        ],
        "the access line is written",
    )[0]
    assert entry["status"] == 500 and entry["model"] == "chatty"
    assert entry["method"] == "POST" and entry["path"] == "/v2/models/chatty/predict/"
    assert entry["client"] == "127.0.0.1"
    assert len(body) < entry["bytes"] < len(body) + 400  # sent: headers too
    assert isinstance(entry["duration_ms"], float) and "T" in str(entry["time"])
    in_file = access_lines((tmp_path / "server.log").read_text())
    assert any(e["request_id"] == "e2e-1" for e in in_file)

    # the training record a request starts
    status, body, _ = server.call(
        "POST", "/v2/models/chatty/train/", headers={"X-Request-ID": "e2e-train"}
    )
    record = json.loads(body)
    assert status == 200 and record["request_id"] == "e2e-train"
    _, body, _ = server.call("GET", f"/v2/models/chatty/train/{record['uuid']}")
    assert json.loads(body)["request_id"] == "e2e-train"
    assert f"[e2e-train] training {record['uuid']} of model chatty queued" in (
        server.output()
    )


def test_a_request_the_parser_refuses_has_an_id_too(server: DeepaasRun) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /v2/\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = sock.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.0 400"), head  # unparsed: aiohttp says 1.0
    line = next(h for h in head.splitlines() if h.startswith("X-Request-ID: "))
    request_id = line.split(": ", 1)[1]
    assert len(request_id) == 32
    entry = until(
        lambda: [e for e in access_lines(server.output()) if e["status"] == 400],
        "the access line is written",
    )[0]
    assert entry["request_id"] == request_id


def test_text_lines_with_debug_and_none_by_default(tmp_path: Path) -> None:
    for args, expected in (
        ((), False),
        (("--access-log", "text"), True),
        (("--debug",), True),  # as aiohttp's access lines were
    ):
        srv = DeepaasRun(tmp_path, *CHATTY, *args, name=f"text-{len(args)}")
        try:
            srv.wait_ready()
            srv.call("GET", "/v2/models/", headers={"X-Request-ID": "e2e-text"})
            srv.call("GET", "/healthz", headers={"X-Request-ID": "e2e-last"})
            if expected:
                until(lambda s=srv: "[e2e-last]" in s.output(), "the access lines")
        finally:
            srv.stop()
            srv.close()
        line = "INFO deepaas.access: [e2e-text] GET /v2/models/ 200 "
        assert (line in srv.output()) is expected, srv.output()
        if expected:
            assert "model=- client=127.0.0.1" in srv.output()


def test_listening_beyond_loopback_without_tokens_warns(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret predict\n")
    for args, warned in (
        (("--listen-ip", "0.0.0.0"), True),
        (("--listen-ip", "0.0.0.0", "--auth-token-file", str(tokens)), False),
        ((), False),  # 127.0.0.1
    ):
        srv = DeepaasRun(tmp_path, *CHATTY, *args, name=f"warn-{len(args)}")
        try:
            srv.wait_ready()
        finally:
            srv.stop()
            srv.close()
        lines = [line for line in srv.output().splitlines() if "without tokens" in line]
        assert len(lines) == (1 if warned else 0), srv.output()
        if warned:
            assert (
                "WARNING deepaas.api.auth: listening on 0.0.0.0 without tokens"
                in (lines[0])
            )


def test_a_bad_token_file_stops_start_up_in_one_line(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("fine predict\nbad predict,everything\n")
    done = subprocess.run(
        [DEEPAAS_RUN, *CHATTY, "--auth-token-file", str(tokens), "--listen-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"deepaas-run: error: {tokens}:2: word 3 is not a scope (scopes: "
        "predict, train, admin; one token per line, then its scopes)\n"
    )
