"""Issue 7's failing scenarios with a real ``deepaas-run``, as a platform runs it.

- a model that leaks memory, the whole server under a small ``RLIMIT_AS``
  (as in a container with a memory limit): the ``MemoryError`` answers one
  clear 500, the worker is replaced, later requests succeed, the server
  stays ready;
- SIGTERM with more queued work than ``--shutdown-timeout``: every client
  is answered (200 or 503 JSON), an upload still arriving at the deadline
  included; the process exits within the timeout + 5 s and leaves no
  process, in its own group or its workers', and no scratch file.

Each server runs in a session of its own; whatever a test starts is stopped
when it ends (SIGTERM, then SIGKILL by process group). Order comes from
events and polled state with deadlines, never from sleeps.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deepaas_run import (
    HANG_S,
    DeepaasRun,
    alive,
    closed_at_end,
    group,
    register_plugins,
    until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MODEL = "faults"
PREDICT = f"/v2/models/{MODEL}/predict/"
STOP_BUDGET_S = 5.0  # exit within --shutdown-timeout + this (the documented bound)


class Server(DeepaasRun):
    """``deepaas-run`` serving the faults plugin, its scratch directory in
    ``scratch_parent`` (its ``TMPDIR``)."""

    def __init__(self, tmp_path: Path, *args: str, rlimit_as: int = 0) -> None:
        self.scratch_parent = tmp_path / "tmp"
        self.scratch_parent.mkdir()
        plugin_root = tmp_path / "plugin"
        register_plugins(
            plugin_root, "deepaas_test_faults", {MODEL: "tests.plugins.faults"}
        )
        super().__init__(
            tmp_path,
            "--model-name",
            MODEL,
            *args,
            path=[plugin_root],
            env={"TMPDIR": str(self.scratch_parent)},
            rlimit_as=rlimit_as,
        )

    def metric(self, name: str, **labels: str) -> float:
        status, text = self.request("GET", "/metrics")
        assert status == 200
        for line in text.decode().splitlines():
            match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
            if match:
                found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
                if all(found.get(k) == v for k, v in labels.items()):
                    return float(match.group(2))
        return 0.0

    def close(self) -> None:
        """SIGTERM first (the server removes its scratch directory)."""
        self.stop()
        super().close()


@pytest.fixture
def deepaas(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    with closed_at_end(functools.partial(Server, tmp_path)) as start:
        yield start


# -- a leaking model under RLIMIT_AS ---------------------------------------------

RLIMIT_AS = 1 << 30  # 1 GiB of address space for the server and each worker


# 1 MiB at a time: as much as the worker's own read buffer; its read must not
# be what fails (that was a crash, and no warm replacement).
@pytest.mark.parametrize("leak_mb", [32, 1])
def test_leaking_model_under_rlimit_as_is_replaced_after_memory_error(deepaas, leak_mb):
    srv = deepaas(rlimit_as=RLIMIT_AS)
    srv.wait_ready()
    leak = f"{PREDICT}?mode=leak&mb={leak_mb}"
    answers: list[tuple[int, Any]] = []
    for _ in range(RLIMIT_AS // (leak_mb << 20) + 1):  # at most a GiB's worth
        answers.append(srv.request("POST", leak))
        assert srv.request("GET", "/readyz")[0] == 200
        if answers[-1][0] != 200:
            break
    *served, (status, body) = answers
    assert status == 500, answers[-3:]
    assert body == {
        "message": f"model {MODEL!r} ran out of memory while handling this "
        "request; its worker is being replaced"
    }
    assert served and {s for s, _ in served} == {200}
    leaker = served[-1][1]["predictions"]["pid"]
    # Replaced for that reason, warm before the old one retires.
    until(
        lambda: srv.metric("deepaas_worker_restarts_total", reason="out_of_memory"),
        "the out-of-memory restart is counted",
    )
    assert srv.request("GET", "/readyz")[0] == 200
    # Later requests succeed, in the new worker, leaks included.
    status, body = srv.request("POST", f"{PREDICT}?mode=ok")
    assert status == 200
    assert body["predictions"]["pid"] != leaker
    for _ in range(3):
        status, body = srv.request("POST", leak)
        assert status == 200
    assert body["predictions"]["pid"] != leaker
    until(lambda: not alive(leaker), "the leaking worker exits")
    assert srv.request("GET", "/readyz")[0] == 200
    assert srv.metric("deepaas_worker_restarts_total", reason="out_of_memory") == 1
    assert srv.metric("deepaas_worker_restarts_total", reason="crashed") == 0


# -- SIGTERM with more queued work than --shutdown-timeout -----------------------

SHUTDOWN_TIMEOUT_S = 2.0
QUEUED = 16  # 1 s calls on one worker: 16 s of work for a 2 s drain


def _start_upload(port: int, path: str) -> socket.socket:
    """Begin a multipart upload of 1 MiB, send 256 KiB of it, and stop there."""
    boundary = "faultsboundary"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="data"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = len(head) + (1 << 20) + len(tail)
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_S)
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {size}\r\n\r\n"
        ).encode()
        + head
        + b"u" * (256 << 10)
    )
    return sock


def _read_response(sock: socket.socket) -> tuple[int, Any]:
    """The status and JSON body of the response on ``sock`` (read to EOF)."""
    data = b""
    with sock:
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def test_sigterm_with_more_queued_work_than_the_timeout_answers_everyone(deepaas):
    srv = deepaas("--shutdown-timeout", f"{SHUTDOWN_TIMEOUT_S:g}")
    srv.wait_ready()
    workers = srv.note_workers()
    assert len(workers) == 1

    answers: dict[int, tuple[int, Any] | BaseException] = {}

    def call(i: int) -> None:
        try:
            answers[i] = srv.request("POST", f"{PREDICT}?mode=sleep&seconds=1")
        except BaseException as exc:  # a dropped connection is what we test
            answers[i] = exc

    clients = [threading.Thread(target=call, args=(i,)) for i in range(QUEUED)]
    for client in clients:
        client.start()

    def all_arrived() -> bool:
        _, doc = srv.request("GET", "/v2/system/")
        held = sum(w["in_flight"] for w in doc["workers"])
        return held + doc["queues"][MODEL]["depth"] == QUEUED

    until(all_arrived, f"{QUEUED} calls are queued or running")
    upload = _start_upload(srv.port, f"{PREDICT}?mode=ok")
    scratch = srv.scratch_parent

    def uploading() -> bool:
        return any(
            name.startswith("upload-")
            for _, _, files in os.walk(scratch)
            for name in files
        )

    until(uploading, "the upload is being received")

    sent = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)

    def draining() -> bool:
        status, body = srv.request("GET", "/readyz")
        return status == 503 and body["status"] == "draining"

    until(draining, "readiness says draining")
    status, body = srv.request("POST", f"{PREDICT}?mode=ok")
    assert (status, body) == (503, {"message": "the server is shutting down"})

    srv.proc.wait(timeout=SHUTDOWN_TIMEOUT_S + STOP_BUDGET_S + HANG_S)
    exited_after = time.monotonic() - sent
    assert srv.proc.returncode == 0, srv.output()
    assert exited_after <= SHUTDOWN_TIMEOUT_S + STOP_BUDGET_S, srv.output()

    for client in clients:
        client.join(timeout=HANG_S)
    assert len(answers) == QUEUED
    dropped = [a for a in answers.values() if isinstance(a, BaseException)]
    assert dropped == []
    answered = [a for a in answers.values() if not isinstance(a, BaseException)]
    statuses = [status for status, _ in answered]
    assert set(statuses) <= {200, 503}
    assert statuses.count(503) >= 1  # 16 s of work did not fit in 2 s
    for status, body in answered:
        if status == 200:
            assert body["predictions"]["pid"] == workers[0]
        else:
            assert body == {"message": "the server is shutting down"}
    # The upload still arriving at the deadline was in flight: 503 too.
    assert _read_response(upload) == (503, {"message": "the server is shutting down"})

    # Nothing left: no process in the server's group or its worker's, no
    # scratch directory.
    assert group(srv.proc.pid) == []
    assert [pid for pid in srv.workers_seen if group(pid) or alive(pid)] == []
    assert list(scratch.iterdir()) == []
