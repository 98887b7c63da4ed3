"""Shared helpers of the benchmark runners (standard library only).

Servers started in their own process group and stopped without leaving a
process behind, plugin installation, free ports, readiness waits. wrk runs
and their parsing are in ``_wrk.py``. The runners sit next to this file (a
script's own directory is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent
ENTRY_POINT_GROUP = "deepaas.v2.model"
STARTUP_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0


class BenchError(Exception):
    """The benchmark cannot go on (setup problem); the message says why."""


@dataclass
class Server:
    """A server process started in its own process group; with ``rlimit_as``
    (bytes), under that address-space limit, set in the child before exec so
    that its workers inherit it (as in a container with a memory limit)."""

    label: str
    argv: list[str]
    env: dict[str, str]
    port: int
    workdir: Path
    path: str = "/"  # the URL path measured (the predict route)
    proc: subprocess.Popen[bytes] | None = None
    rlimit_as: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # sent with each request

    @property
    def base_url(self) -> str:
        """The server's measured URL (``path``), without query string."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout and stderr."""
        return self.workdir / f"{self.label}.log"

    def start(self) -> None:
        """Start the process in a new session (hence its own process group)."""
        limit = self.rlimit_as

        def preexec() -> None:
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
                preexec_fn=preexec if limit else None,
            )

    def output(self, limit: int = 4000) -> str:
        """Return the tail of the server's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        text = text[-limit:]
        return text if text.strip() else "(no output)"

    def stop(self) -> list[int]:
        """SIGTERM the process group, SIGKILL it after a grace period.

        Returns the pids of the group still alive afterwards (normally none).
        """
        if self.proc is None:
            return []
        pgid = self.proc.pid  # start_new_session: the group id is the pid
        # Workers that moved to a group of their own are found by ancestry.
        descendants = _descendants(self.proc.pid)
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_group_gone(self.proc, pgid, STOP_GRACE_S):
            _signal_group(pgid, signal.SIGKILL)
            _wait_group_gone(self.proc, pgid, 2.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1.0)
        strays = [pid for pid in descendants if alive(pid)]
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return sorted(set(_group_members(pgid)) | set(strays))


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group, ignoring a group already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group_gone(proc: subprocess.Popen[bytes], pgid: int, timeout: float) -> bool:
    """Wait until no live process is left in the group; True if none is."""
    deadline = time.monotonic() + timeout
    while True:
        proc.poll()  # reap our direct child so it does not linger as a zombie
        if not _group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _proc_stats() -> list[tuple[int, str, int, int]] | None:
    """Return (pid, state, ppid, pgrp) of every process, or None without /proc."""
    proc_dir = Path("/proc")
    if not (proc_dir / "self" / "stat").exists():
        return None
    stats = []
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        stats.append((int(entry.name), fields[0], int(fields[1]), int(fields[2])))
    return stats


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by ``pid`` alone (a server's
    API process, without its workers), from /proc; None without it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by ``pid`` and its live
    descendants, from /proc; None without /proc or once ``pid`` is gone.

    A figure less swayed than throughput by how a small machine's scheduler
    shares its cores between the load generator and the server's processes.
    """
    proc_dir = Path("/proc")
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    if not (proc_dir / "self" / "stat").exists():
        return None
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    if pid not in used:
        return None
    total, frontier = used[pid], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        total += sum(used[child] for child in children)
        frontier += children
    return total


def _group_members(pgid: int) -> list[int]:
    """Return the live (non-zombie) processes of a process group."""
    stats = _proc_stats()
    if stats is None:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    return [pid for pid, state, _, pgrp in stats if pgrp == pgid and state not in "ZX"]


def _descendants(pid: int) -> list[int]:
    """Return the live descendants of ``pid``, where /proc tells."""
    children: dict[int, list[int]] = {}
    for child, state, ppid, _ in _proc_stats() or []:
        if state not in "ZX":
            children.setdefault(ppid, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process."""
    stats = _proc_stats()
    if stats is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return any(p == pid and state not in "ZX" for p, state, _, _ in stats)


def live_children() -> list[int]:
    """Return our live (non-zombie) child processes, where /proc tells."""
    stats = _proc_stats() or []
    me = os.getpid()
    return [pid for pid, state, ppid, _ in stats if ppid == me and state not in "ZX"]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    print(message, file=sys.stderr)
    sys.exit(code)


def plugin_installed(module: str, entry_point: str) -> bool:
    """True if ``module`` imports and ``entry_point`` is registered here."""
    importlib.invalidate_caches()
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return any(ep.name == entry_point for ep in eps)


def install_plugin(plugin_dir: Path, module: str, entry_point: str, what: str) -> bool:
    """``pip install`` ``plugin_dir`` here if missing; True if this installed it.

    ``what`` names the plugin in messages ("the trivial plugin").
    """
    if plugin_installed(module, entry_point):
        return False
    print(f"installing {what} from {plugin_dir} ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="deepaas-bench-plugin-") as tmp:
        # Build from a copy so that no build/ or *.egg-info lands in the tree.
        source = Path(tmp) / plugin_dir.name
        shutil.copytree(
            plugin_dir, source, ignore=shutil.ignore_patterns("build", "*.egg-info")
        )
        cmd = [sys.executable, "-m", "pip", "install", "-q", str(source)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not plugin_installed(module, entry_point):
        raise BenchError(
            f"could not install {what} ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}"
        )
    return True


@contextlib.contextmanager
def plugin_for_run(
    plugin_dir: Path, module: str, entry_point: str, dist: str, what: str, keep: bool
) -> Iterator[None]:
    """The plugin is installed inside (:func:`install_plugin`); after, it is
    uninstalled if this run installed it and ``keep`` is false, so that a
    benchmark plugin is not served by default later."""
    installed = install_plugin(plugin_dir, module, entry_point, what)
    try:
        yield
    finally:
        if installed and not keep:
            uninstall_dist(dist)


def uninstall_dist(dist: str) -> None:
    """Uninstall ``dist``, leaving the environment as it was found."""
    cmd = [sys.executable, "-m", "pip", "uninstall", "-q", "-y", dist]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        print(f"uninstalled {dist} (installed by this run)")
    else:
        print(
            f"WARNING: could not uninstall {dist}: {proc.stderr.strip()}",
            file=sys.stderr,
        )


def deepaas_env(loop: str) -> dict[str, str]:
    """Our environment without DEEPAAS_*/OS_DEFAULT__* settings, loop set.

    deepaas then runs with its defaults, whatever the caller's environment
    holds, on the same event loop as the baseline.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DEEPAAS_", "OS_DEFAULT__"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["DEEPAAS_LOOP"] = loop
    return env


def deepaas_run_path() -> Path:
    """Return the ``deepaas-run`` console script next to this interpreter."""
    bindir = Path(sys.executable).parent
    for name in ("deepaas-run", "deepaas-run.exe"):
        candidate = bindir / name
        if candidate.exists():
            return candidate
    raise BenchError(
        f"deepaas-run not found in {bindir}; install deepaas into this "
        f"environment (e.g. .venv/bin/pip install -e .) and run the benchmark "
        f"with that environment's python (.venv/bin/python {sys.argv[0]})"
    )


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def post(
    url: str,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
    data: bytes = b"",
) -> tuple[int, bytes]:
    """POST ``data`` (empty by default) to ``url`` (with ``headers``);
    (status, body)."""
    req = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Accept": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url``; return (status, body)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_answers(server: Server, path: str, timeout: float = 30.0) -> None:
    """GET ``path`` (``/readyz``, ``/v2/models/<m>/ready``...) of ``server``
    until it answers 200; BenchError if the server exits or time runs out."""
    assert server.proc is not None
    url = f"http://127.0.0.1:{server.port}{path}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.label} exited:\n{server.output()}")
        try:
            if get(url, timeout=2.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{path} not 200 within {timeout:.0f} s:\n{server.output()}")


def wait_ready(server: Server, query: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
    """POST to ``server.base_url + query`` until it answers 200, or raise."""
    assert server.proc is not None
    url = server.base_url + query
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.label} exited with status {server.proc.returncode} "
                f"before answering.\ncommand: {' '.join(server.argv)}\n"
                f"--- output ---\n{server.output()}"
            )
        try:
            status, body = post(url, timeout=2.0, headers=server.headers)
        except (OSError, urllib.error.URLError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return
            last = f"HTTP {status}: {body[:200]!r}"
        time.sleep(0.1)
    raise BenchError(
        f"{server.label} did not answer 200 on POST {url} within {timeout:.0f} s "
        f"(last: {last}).\ncommand: {' '.join(server.argv)}\n"
        f"--- output ---\n{server.output()}"
    )


def int_list(text: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]`` (an argparse type)."""
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None


def add_run_options(
    parser: argparse.ArgumentParser,
    *,
    connections: int | list[int],
    plugins: str,
    connections_help: str = "wrk connections",
    warmup_help: str = "seconds of warm-up per server",
    loop_help: str = "event loop for both servers",
) -> None:
    """The options every wrk benchmark here takes: ``--rounds``,
    ``--duration``, ``--warmup``, ``--connections``, ``--loop``, ``--json``,
    ``--keep-plugin`` (``plugins``: what it keeps) and ``--strict``;
    :func:`checked_run_options` checks them once parsed. ``connections`` as
    a list: ``--connections`` takes a comma-separated list."""
    parser.add_argument("--rounds", type=int, default=3, help="default: %(default)s")
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds per wrk run (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help=f"{warmup_help} (default: 2.0)"
    )
    many = isinstance(connections, list)
    parser.add_argument(
        "--connections",
        type=int_list if many else int,
        default=connections,
        help=f"{connections_help} (default: "
        f"{','.join(map(str, connections)) if many else '%(default)s'})",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help=f"{loop_help}; auto (deepaas's default): uvloop when installed, "
        "else asyncio (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results")
    parser.add_argument(
        "--keep-plugin",
        action="store_true",
        help=f"keep {plugins} installed if this run installs it "
        "(default: uninstall it at the end)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 3 when a target is missed"
    )


def checked_run_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.Namespace:
    """``args`` with ``--loop auto`` resolved; a usage error (exit 2) for
    rounds, durations or connections that cannot be measured."""
    if args.loop == "auto":
        args.loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rounds must be >= 1, --duration > 0, --warmup >= 0")
    if args.duration % 1 or args.warmup % 1:
        parser.error("--duration and --warmup are whole seconds (as wrk takes them)")
    connections = args.connections
    lowest = min(connections or [0]) if isinstance(connections, list) else connections
    if lowest < max(1, getattr(args, "threads", 1)):
        parser.error("--connections must be >= 1 and >= --threads")
    return args
