"""``deepaas-run`` as a subprocess, started and stopped as a platform does.

The end-to-end tests (``tests/e2e``) and the training tests where servers
share a state directory, crash and start again (``tests/training``) run the
real command. Each server is a process in a session of its own, on a free
port, with its output in a file; it is ready when it prints its banner; and
whatever a test did, :meth:`DeepaasRun.close` leaves nothing running: the
server's process group and each of its workers' (workers run in sessions of
their own). Order comes from polled state with deadlines (:func:`until`),
never from sleeps.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
DEEPAAS_RUN = str(Path(sys.executable).with_name("deepaas-run"))
HANG_S = 30.0  # the "does not hang" bound of a wait or a request

S = TypeVar("S", bound="DeepaasRun")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def until(predicate: Callable[[], Any], what: str, timeout: float = HANG_S) -> Any:
    """Poll ``predicate`` until it answers something true (returned); fail
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


# -- processes, from /proc ------------------------------------------------------


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """A zombie is dead here: only its parent has not reaped it yet."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in "ZX"


def _live_where(field: int, value: int) -> list[int]:
    """Live processes whose stat field ``field`` (1: parent, 2: group) is
    ``value``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields and fields[0] not in "ZX" and int(fields[field]) == value:
                found.append(int(entry))
    return found


def children(pid: int) -> list[int]:
    """Live children of ``pid`` (a server's: its workers)."""
    return _live_where(1, pid)


def group(pgid: int) -> list[int]:
    """Live members of a process group."""
    return _live_where(2, pgid)


# -- plugins ------------------------------------------------------------------


def register_plugins(root: Path, dist: str, points: Mapping[str, str]) -> None:
    """Register ``points`` (entry point name -> module or ``module:Class``)
    as ``deepaas.v2.model`` plugins of a distribution ``dist`` "installed" in
    ``root``: a dist-info folder that a server finds with ``root`` on its
    ``PYTHONPATH``."""
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in points.items())
    (info / "entry_points.txt").write_text(f"[deepaas.v2.model]\n{lines}")


# -- the server -----------------------------------------------------------------


class DeepaasRun:
    """One ``deepaas-run`` on 127.0.0.1 and a free port, in a session of its
    own, its output in ``log_dir/NAME-PORT.log``.

    ``path`` goes on ``PYTHONPATH`` before the repository root (so that
    ``tests.plugins`` imports); ``env`` is added to this environment less
    its deepaas settings (``DEEPAAS_*``, ``OS_DEFAULT__*``), so a server runs
    with the settings its test gives and no other. ``prefix`` runs the
    command through another (``unshare``); ``rlimit_as`` (bytes) limits the
    address space of the server and of its workers, which inherit it.
    ``port``: listen there rather than on a free port (a replica started
    again where a load balancer expects it).
    """

    #: Seconds the server may take to be ready, and a request to be answered,
    #: before the test fails (bounds of the test, not limits of the server).
    ready_timeout = HANG_S
    request_timeout = HANG_S

    def __init__(
        self,
        log_dir: Path,
        *args: str,
        name: str = "server",
        path: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
        rlimit_as: int = 0,
        port: int = 0,
    ) -> None:
        self.port = port or free_port()
        self.log = log_dir / f"{name}-{self.port}.log"
        self.workers_seen: set[int] = set()
        environ = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DEEPAAS_", "OS_DEFAULT__"))
        }
        environ.update(
            PYTHONPATH=os.pathsep.join(str(p) for p in [*path, REPO_ROOT]),
            PYTHONUNBUFFERED="1",
        )
        environ.update(env or {})

        def limit() -> None:  # in the child, before exec
            resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))

        command = [
            *prefix,
            DEEPAAS_RUN,
            "--listen-ip",
            "127.0.0.1",
            "--listen-port",
            str(self.port),
            *args,
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environ,
                start_new_session=True,
                preexec_fn=limit if rlimit_as else None,
            )

    @property
    def url(self) -> str:
        """The server's root URL (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text(errors="replace")

    def wait_ready(self: S) -> S:
        """Wait for the banner (every model has a warm worker); note the
        workers."""

        def ready() -> bool:
            assert self.proc.poll() is None, f"deepaas-run exited:\n{self.output()}"
            return "ready in" in self.output()

        until(ready, "deepaas-run is ready", self.ready_timeout)
        self.note_workers()
        return self

    def note_workers(self) -> list[int]:
        """The server's live workers now (remembered: :meth:`close` stops
        their process groups)."""
        workers = children(self.proc.pid)
        self.workers_seen.update(workers)
        return workers

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, http.client.HTTPMessage]:
        """One request on a fresh connection: (status, body, headers)."""
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=self.request_timeout
        )
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            return resp.status, resp.read(), resp.headers
        finally:
            conn.close()

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, the answer's JSON: None if empty, the raw bytes if not
        JSON). ``body``: bytes are sent as they are, anything else as JSON."""
        if body is None or isinstance(body, bytes):
            status, raw, _ = self.call(method, path, body)
        else:
            json_type = {"Content-Type": "application/json"}
            status, raw, _ = self.call(
                method, path, json.dumps(body).encode(), json_type
            )
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def stop(self, sig: int = signal.SIGTERM, timeout: float = HANG_S) -> int | None:
        """Send ``sig`` to the server process (not its group) if it runs;
        its exit status, or None if it has not exited within ``timeout``."""
        if self.proc.poll() is None:
            self.note_workers()
            self.proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def close(self) -> None:
        """Whatever happened, leave nothing running: SIGKILL to the server's
        process group and to every worker's."""
        if self.proc.poll() is None:
            self.note_workers()
        for pgid in (self.proc.pid, *self.workers_seen):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def closed_at_end(make: Callable[..., S]) -> Iterator[Callable[..., S]]:
    """``make`` as it is, but every server it made is closed when the block
    ends (a fixture's teardown)."""
    servers: list[S] = []

    def start(*args: Any, **kwargs: Any) -> S:
        server = make(*args, **kwargs)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


def run_to_exit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``deepaas-run *args`` that is expected to exit at once (a usage error,
    ``--help``): its output and exit status, within 60 s."""
    return subprocess.run(
        [DEEPAAS_RUN, "--listen-port", "0", "--devices", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
    )
