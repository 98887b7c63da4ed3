"""Helpers shared by the fault benchmarks (standard library only).

``fault_isolation.py``, ``worker_recycling.py``, ``head_of_line.py`` and
``bounded_shutdown.py`` serve the ``bench_faults`` plugin
(``benchmarks/fault_plugin``) from ``deepaas-run`` and measure how it behaves
when the model crashes, leaks, stalls, or the server is told to stop. This
module holds what they share on top of :mod:`_harness`: the plugin's
installation, a server that can run under ``RLIMIT_AS`` (or from another
source tree), ``/metrics`` and ``/v2/system/`` readers, wrk runs with
``faults.lua``, and concurrent HTTP calls from threads.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import http.client
import importlib.metadata
import json
import os
import platform
import re
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    BenchError,
    Server,
    WrkResult,
    deepaas_env,
    deepaas_run_path,
    free_ports,
    install_plugin,
    parse_wrk,
    uninstall_dist,
    wrk_version,
)

HERE = Path(__file__).resolve().parent
PLUGIN_DIR = HERE / "fault_plugin"
PLUGIN_MODULE = "deepaas_bench_faults"
PLUGIN_DIST = "deepaas-bench-faults"
MODEL = "bench_faults"
PREDICT_PATH = f"/v2/models/{MODEL}/predict/"
LUA_SCRIPT = HERE / "faults.lua"
SETTLE_TIMEOUT_S = 60.0
UNLABELLED = "unlabelled"  # restarts counted by a deepaas without reasons


def ensure_plugin() -> bool:
    """Install ``benchmarks/fault_plugin`` here if missing; True if installed."""
    return install_plugin(PLUGIN_DIR, PLUGIN_MODULE, MODEL, "the fault plugin")


def remove_plugin() -> None:
    """Uninstall the fault plugin (it must not be served by default later)."""
    uninstall_dist(PLUGIN_DIST)


@contextlib.contextmanager
def fault_plugin(keep: bool) -> Iterator[None]:
    """The plugin is installed inside; uninstalled after if this installed it."""
    installed = ensure_plugin()
    try:
        yield
    finally:
        if installed and not keep:
            remove_plugin()


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every fault benchmark takes."""
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="deepaas-run's event loop (default: %(default)s)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="run deepaas from this source tree (put first on PYTHONPATH), "
        "e.g. an older commit unpacked with `git archive REV | tar -x -C DIR`, "
        "to measure the 'before' figures",
    )
    parser.add_argument(
        "--keep-plugin",
        action="store_true",
        help=f"keep {PLUGIN_DIST} installed if this run installs it",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 3 when a target is missed"
    )


def print_header(title: str, args: argparse.Namespace, wrk: str | None) -> None:
    """Say what was measured, when, on what, with which deepaas."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    try:
        version = importlib.metadata.version("deepaas")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(HERE), "status", "--porcelain", "--", "../deepaas"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    source = f", source {args.source}" if args.source else ""
    wrk_line = wrk_version(wrk).split(" Copyright")[0].split(" [")[0] if wrk else ""
    print(f"{title}")
    print(
        f"  {now}; {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}" + (f", {wrk_line}" if wrk_line else "")
    )
    print(
        f"  deepaas {version} (commit {commit or '?'}"
        f"{' + uncommitted changes' if dirty else ''}{source}), "
        f"loop {resolve_loop(args.loop)}"
    )


def to_json(value: Any) -> Any:
    """``json.dumps``'s ``default``: dataclasses as dicts, paths as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def resolve_loop(loop: str) -> str:
    if loop != "auto":
        return loop
    import importlib.util

    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


@dataclass
class FaultServer(Server):
    """A :class:`_harness.Server` that may run under ``RLIMIT_AS`` (bytes;
    set in the child before exec, so its workers inherit it)."""

    rlimit_as: int = 0

    def start(self) -> None:
        limit = self.rlimit_as

        def preexec() -> None:
            if limit:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def deepaas_server(
    label: str,
    workdir: Path,
    args: argparse.Namespace,
    *flags: str,
    rlimit_as: int = 0,
) -> FaultServer:
    """``deepaas-run`` serving ``bench_faults`` on a free port, not started."""
    (port,) = free_ports(1)
    env = deepaas_env(resolve_loop(args.loop))
    if args.source is not None:
        source = str(Path(args.source).resolve())
        env["PYTHONPATH"] = os.pathsep.join(
            [source, *filter(None, [env.get("PYTHONPATH")])]
        )
    argv = [
        str(deepaas_run_path()),
        "--listen-ip",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--model-name",
        MODEL,
        *flags,
    ]
    return FaultServer(
        label, argv, env, port, workdir, PREDICT_PATH, rlimit_as=rlimit_as
    )


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
