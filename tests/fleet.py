"""Replicas of ``deepaas-run`` behind a real HAProxy, under steady load.

What a platform runs, on one machine: N servers on loopback, HAProxy in
front with an HTTP health check on ``/readyz`` (as Kubernetes' readiness
probe and a Service), and a closed-loop client that keeps a number of
connections busy and records every request's outcome with its times. The
end-to-end test (``tests/e2e/test_fleet.py``) asserts the guarantees with
it; ``benchmarks/fleet.py`` prints the figures.

Order comes from polled state with deadlines (HAProxy's own view of its
servers, read on its runtime socket; the replicas' readiness), never from
sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import math
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.deepaas_run import HANG_S, DeepaasRun, free_port, until


def find_haproxy() -> str | None:
    """HAProxy's path (Debian puts it in /usr/sbin, often not on PATH)."""
    found = shutil.which("haproxy")
    if found:
        return found
    return "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").is_file() else None


# -- the balancer -------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    """HAProxy's check of each server: ``GET /readyz`` every ``inter_s``;
    ``fall`` failures in a row take a server out, ``rise`` successes put it
    back."""

    inter_s: float = 0.5
    fall: int = 2
    rise: int = 2

    @property
    def out_within_s(self) -> float:
        """How long a server that turned unready may still get traffic (not
        counting a check's own time): ``--drain-delay`` must be longer."""
        return self.inter_s * self.fall


class HAProxy:
    """HAProxy on 127.0.0.1 and a free port, balancing ``backends`` (ports
    of servers on loopback, named ``r0``, ``r1``, ...).

    ``maxconn``: connections HAProxy opens to one server at most (0: no
    limit); more requests wait in HAProxy's queue. Connection failures, and
    requests a server closed without a byte of answer (it died holding
    them), are retried on another server (``retries``, ``option
    redispatch``, ``retry-on conn-failure empty-response``): a SIGKILLed
    replica then costs only the answers it had begun to send.
    """

    def __init__(
        self,
        workdir: Path,
        backends: Sequence[int],
        check: HealthCheck = HealthCheck(),
        maxconn: int = 0,
    ) -> None:
        haproxy = find_haproxy()
        if haproxy is None:
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        self.port = free_port()
        self.names = [f"r{i}" for i in range(len(backends))]
        # A socket's path must fit in 108 bytes: not under a deep tmp_path.
        self._sockdir = tempfile.mkdtemp(prefix="haproxy-")
        self.socket = f"{self._sockdir}/admin.sock"
        self.config = workdir / "haproxy.cfg"
        self.log = workdir / "haproxy.log"
        per_server = f" maxconn {maxconn}" if maxconn else ""
        servers = "".join(
            f"    server {name} 127.0.0.1:{port} check\n"
            for name, port in zip(self.names, backends, strict=True)
        )
        inter_ms = round(check.inter_s * 1000)
        self.config.write_text(
            f"""\
global
    maxconn 4096
    stats socket {self.socket} mode 600 level admin
    log stdout format raw local0 notice

defaults
    mode http
    log global
    option dontlognull
    timeout connect 2s
    timeout client {HANG_S:g}s
    timeout server {HANG_S:g}s
    timeout queue {HANG_S:g}s
    timeout check 2s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend fleet
    bind 127.0.0.1:{self.port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {inter_ms}ms fall {check.fall} rise {check.rise}{per_server}
{servers}"""
        )
        checked = subprocess.run(
            [haproxy, "-c", "-q", "-f", str(self.config)],
            capture_output=True,
            text=True,
            timeout=HANG_S,
        )
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy -c: {checked.stdout}{checked.stderr}")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [haproxy, "-db", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        until(lambda: Path(self.socket).exists() or self._exited(), "haproxy starts")
        assert self.proc.poll() is None, f"haproxy exited:\n{self.output()}"

    def _exited(self) -> bool:
        return self.proc.poll() is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def command(self, line: str) -> str:
        """One command on the runtime API (``show stat``, ...): its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(HANG_S)
            sock.connect(self.socket)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers, by name (``status``:
        ``UP``, ``DOWN``, ``UP 1/2`` going down, ``DOWN 1/2`` coming up;
        ``scur``: sessions now; ``stot``: sessions in all)."""
        lines = self.command("show stat").lstrip("# ").splitlines()
        return {
            row["svname"]: row
            for row in csv.DictReader(line for line in lines if line)
            if row["pxname"] == "replicas" and row["svname"] in self.names
        }

    def status(self, name: str) -> str:
        return self.stats()[name]["status"]

    def wait_status(self, name: str, status: str, timeout: float = HANG_S) -> float:
        """Wait until HAProxy says server ``name`` is ``status`` (exactly):
        the time (``time.monotonic()``) it was first seen so."""
        until(lambda: self.status(name) == status, f"{name} is {status}", timeout)
        return time.monotonic()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=HANG_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=HANG_S)
        shutil.rmtree(self._sockdir, ignore_errors=True)


# -- the replicas -------------------------------------------------------------


class Fleet:
    """``replicas`` ``deepaas-run`` processes (``args`` each) behind
    :class:`HAProxy`; ready when every server is ready and HAProxy has
    them all ``UP``."""

    def __init__(
        self,
        workdir: Path,
        replicas: int,
        args: Sequence[str],
        *,
        path: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        check: HealthCheck = HealthCheck(),
        maxconn: int = 0,
        ready_timeout: float = HANG_S,
    ) -> None:
        self.workdir = workdir
        self.args = list(args)
        self.path = list(path)
        self.env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.generation = [0] * replicas
        self.replicas: list[DeepaasRun] = []
        self.haproxy: HAProxy | None = None
        try:
            for i in range(replicas):
                self.replicas.append(self._start(i))
            for replica in self.replicas:
                self._wait_ready(replica)
            self.haproxy = HAProxy(
                workdir, [r.port for r in self.replicas], check, maxconn
            )
            for name in self.haproxy.names:
                self.haproxy.wait_status(name, "UP")
        except BaseException:
            self.close()
            raise

    @property
    def balancer(self) -> HAProxy:
        assert self.haproxy is not None
        return self.haproxy

    @property
    def url(self) -> str:
        return self.balancer.url

    def _start(self, i: int, port: int = 0) -> DeepaasRun:
        replica = DeepaasRun(
            self.workdir,
            *self.args,
            name=f"replica{i}-{self.generation[i]}",
            path=self.path,
            env=self.env,
            port=port,
        )
        replica.ready_timeout = self.ready_timeout
        return replica

    def _wait_ready(self, replica: DeepaasRun) -> None:
        replica.wait_ready()

    def restart(self, i: int, exit_within: float) -> float:
        """SIGTERM replica ``i``, wait until it exits (within ``exit_within``
        s), start it again on its port and wait until HAProxy has it ``UP``
        again. Returns the seconds the old process took to exit."""
        old = self.replicas[i]
        sent = time.monotonic()
        code = old.stop(signal.SIGTERM, timeout=exit_within + HANG_S)
        exited_after = time.monotonic() - sent
        assert code == 0, f"replica {i} exited {code}:\n{old.output()}"
        old.close()  # its workers' groups, should any be left
        self.generation[i] += 1
        new = self._start(i, port=old.port)
        self.replicas[i] = new
        self._wait_ready(new)
        self.balancer.wait_status(self.balancer.names[i], "UP")
        return exited_after

    def kill(self, i: int) -> None:
        """SIGKILL replica ``i`` (its process; its workers follow it)."""
        replica = self.replicas[i]
        replica.note_workers()
        replica.proc.send_signal(signal.SIGKILL)
        replica.proc.wait(timeout=HANG_S)

    def close(self) -> None:
        if self.haproxy is not None:
            self.haproxy.close()
        for replica in self.replicas:
            replica.close()


# -- the load -----------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One request: when it was sent and answered (``time.monotonic()``),
    its status (0: no HTTP answer) and, for no answer, why."""

    started: float
    ended: float
    status: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Load:
    """``connections`` clients, each sending ``method url`` one request
    after the other on its own keep-alive connection (a closed loop: steady
    load), from a thread with its own event loop. Every outcome is kept in
    :attr:`outcomes`, in the order they ended."""

    def __init__(
        self,
        url: str,
        connections: int = 32,
        method: str = "POST",
        timeout: float = HANG_S,
    ) -> None:
        self.url = url
        self.connections = connections
        self.method = method
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._failure: BaseException | None = None

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the clients; return once each has had an answer."""
        self._thread.start()
        until(
            lambda: len(self.outcomes) >= self.connections or self._failure,
            "the load is running",
        )
        assert self._failure is None, f"the load failed: {self._failure!r}"

    def stop(self) -> list[Outcome]:
        """Stop sending; wait for the requests in flight; every outcome."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # already closed
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=self.timeout + HANG_S)
        assert not self._thread.is_alive(), "the load did not stop"
        assert self._failure is None, f"the load failed: {self._failure!r}"
        return self.outcomes

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() and stop()
            self._failure = exc

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=self.connections)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
            await asyncio.gather(*(self._client(s) for _ in range(self.connections)))

    async def _client(self, session: aiohttp.ClientSession) -> None:
        assert self._stop is not None
        record = self.outcomes.append
        clock = time.monotonic
        while not self._stop.is_set():
            started = clock()
            try:
                async with session.request(self.method, self.url) as resp:
                    await resp.read()
                    record(Outcome(started, clock(), resp.status))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                record(Outcome(started, clock(), 0, f"{type(exc).__name__}: {exc}"))

    # -- reading the outcomes ---------------------------------------------------

    def failures(self) -> list[Outcome]:
        return [o for o in list(self.outcomes) if not o.ok]

    def answered_since(self, when: float) -> int:
        """Requests answered (any status) after ``when``."""
        return sum(1 for o in list(self.outcomes) if o.ended > when)

    def wait_answered(self, count: int, what: str, timeout: float = HANG_S) -> None:
        """Wait until ``count`` more requests have been answered from now."""
        now = time.monotonic()
        until(lambda: self.answered_since(now) >= count, what, timeout)


def rate(outcomes: Sequence[Outcome]) -> float:
    """Successful requests per second over the span of ``outcomes``."""
    ok = [o for o in outcomes if o.ok]
    if len(ok) < 2:
        return 0.0
    span = max(o.ended for o in ok) - min(o.started for o in ok)
    return len(ok) / span if span > 0 else math.inf


def summary(failures: Sequence[Outcome]) -> dict[str, int]:
    """Failures by what they were (``503``, ``502``, ``no answer``, ...)."""
    counts: dict[str, int] = {}
    for outcome in failures:
        key = str(outcome.status) if outcome.status else "no answer"
        counts[key] = counts.get(key, 0) + 1
    return counts
