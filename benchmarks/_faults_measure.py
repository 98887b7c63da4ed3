"""What a fault benchmark sends to a server and reads from it (standard
library only).

Requests on fresh connections (:func:`http_call`; :func:`call` and
:func:`concurrent_calls` time them, from threads that send together); what
the server says about itself (``/metrics``: :func:`restarts`;
``/v2/system/``: :func:`held_and_queued`) and waits until it says something
(:func:`wait_settled`); and wrk runs with ``faults.lua``, which sends every
N-th request with a suffix such as ``&crash=true`` and counts the answers by
status (:func:`run_faults_wrk`). The frame of a run is in :mod:`_faults`.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    BenchError,
    Server,
)
from _wrk import (
    WrkResult,
    parse_wrk,
)

MODEL = "bench_faults"
PREDICT_PATH = f"/v2/models/{MODEL}/predict/"
LUA_SCRIPT = Path(__file__).resolve().parent / "faults.lua"
SETTLE_TIMEOUT_S = 60.0
UNLABELLED = "unlabelled"  # restarts counted by a deepaas without reasons


# -- reading the server ----------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def http_call(
    port: int,
    method: str,
    path: str,
    timeout: float = 30.0,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    """One request on a fresh connection; (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def metrics(server: Server) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of ``/metrics``: (name, labels, value)."""
    status, raw = http_call(server.port, "GET", "/metrics")
    if status != 200:
        raise BenchError(f"{server.label}: /metrics answered HTTP {status}")
    samples = []
    for line in raw.decode().splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def restarts(server: Server) -> dict[str, int]:
    """``deepaas_worker_restarts_total`` of the model, by reason."""
    found: dict[str, int] = {}
    for name, labels, value in metrics(server):
        if name == "deepaas_worker_restarts_total" and labels.get("model") == MODEL:
            reason = labels.get("reason", UNLABELLED)
            found[reason] = found.get(reason, 0) + int(value)
    return found


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    keys = sorted(set(after) | set(before))
    return {
        k: after.get(k, 0) - before.get(k, 0)
        for k in keys
        if after.get(k, 0) - before.get(k, 0)
    }


def system(server: Server) -> dict[str, Any]:
    status, raw = http_call(server.port, "GET", "/v2/system/")
    if status != 200:
        raise BenchError(f"{server.label}: /v2/system/ answered HTTP {status}")
    return json.loads(raw)


def held_and_queued(server: Server) -> tuple[int, int]:
    """(calls held by workers, calls waiting in the queue) of the model."""
    doc = system(server)
    held = sum(w["in_flight"] for w in doc["workers"] if w["model"] == MODEL)
    return held, doc["queues"][MODEL]["depth"]


def wait_until(
    predicate: Callable[[], Any], what: str, timeout: float = SETTLE_TIMEOUT_S
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting until {what}")
        time.sleep(0.02)


def wait_settled(server: Server, workers: int) -> None:
    """Wait until ``workers`` workers are ready and nothing is held or queued."""

    def settled() -> bool:
        doc = system(server)
        mine = [w for w in doc["workers"] if w["model"] == MODEL]
        ready = [w for w in mine if w["state"] == "ready"]
        busy = sum(w["in_flight"] for w in mine) + doc["queues"][MODEL]["depth"]
        return len(ready) == workers and len(mine) == workers and not busy

    wait_until(settled, f"{server.label} has {workers} idle ready worker(s)")


# -- load ----------------------------------------------------------------------


@dataclass
class FaultRun:
    """One wrk run with ``faults.lua``."""

    wrk: WrkResult
    special: int  # requests sent with the suffix (e.g. crash=true)
    died_503: int  # 503 answers saying a worker was killed
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def failed(self) -> int:
        """Non-2xx answers and socket errors (a request with no answer)."""
        return self.answered - self.ok + self.wrk.errors


_FAULTS_LINE = re.compile(r"^FAULTS_RESULT (.*)$", re.MULTILINE)


def run_faults_wrk(
    wrk: str,
    url: str,
    duration: float,
    connections: int,
    every: int = 0,
    suffix: str = "",
    timeout: float = 10.0,
) -> FaultRun:
    """wrk -t1 (so "every N-th request" is exact) with ``faults.lua``."""
    cmd = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        f"--timeout={timeout:g}s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(every),
        suffix,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + timeout + 60
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{output}")
    match = _FAULTS_LINE.search(output)
    if match is None:
        raise BenchError(f"no FAULTS_RESULT line in wrk's output:\n{output}")
    values = dict(item.split("=", 1) for item in match.group(1).split())
    statuses = {
        int(key[len("status_") :]): int(value)
        for key, value in values.items()
        if key.startswith("status_")
    }
    return FaultRun(
        wrk=parse_wrk(output),
        special=int(values["special"]),
        died_503=int(values["died_503"]),
        statuses=statuses,
    )


@dataclass
class Answer:
    """One request made by :func:`concurrent_calls`."""

    status: int | None  # None: no answer (connection dropped, timeout)
    body: Any  # parsed JSON, else the raw bytes, else the error text
    sent: float  # time.monotonic() when sent
    seconds: float  # until the answer (or the error)

    @property
    def json(self) -> bool:
        return isinstance(self.body, dict)


def call(port: int, path: str, timeout: float = 60.0) -> Answer:
    sent = time.monotonic()
    try:
        status, raw = http_call(port, "POST", path, timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:
        return Answer(
            None, f"{type(exc).__name__}: {exc}", sent, time.monotonic() - sent
        )
    seconds = time.monotonic() - sent
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw
    return Answer(status, body, sent, seconds)


def concurrent_calls(
    port: int, paths: list[str], timeout: float = 60.0
) -> tuple[list[threading.Thread], list[Answer | None]]:
    """Start one thread per path; they send together (a barrier) and put
    their :class:`Answer` at their index. Join the threads to read them."""
    answers: list[Answer | None] = [None] * len(paths)
    barrier = threading.Barrier(len(paths))

    def run(i: int, path: str) -> None:
        barrier.wait()
        answers[i] = call(port, path, timeout)

    threads = [
        threading.Thread(target=run, args=(i, path), daemon=True)
        for i, path in enumerate(paths)
    ]
    for thread in threads:
        thread.start()
    return threads, answers
