"""Predict-overhead benchmark: ``deepaas-run`` against a bare aiohttp handler.

Starts ``deepaas-run`` serving the trivial ``bench_trivial`` plugin (default
settings, one worker) and ``benchmarks/bare_aiohttp.py``, which computes the
same answer inline, then measures both with ``wrk`` in the same run,
alternating baseline/deepaas for a few rounds. Prints the per-round figures,
the median requests per second of each side and the ratio deepaas/bare.

Only the ratio means anything: absolute figures depend on the machine.

Usage::

    .venv/bin/python benchmarks/predict_overhead.py [--rounds 3] [--duration 10]

Exit status: 0 measured (PASS or FAIL is printed; ``--strict`` turns FAIL into
3), 1 the run is invalid (wrong answers, non-2xx responses, socket errors or a
process left behind), 2 the benchmark could not run (no wrk, no deepaas-run,
a server did not come up).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
LUA_SCRIPT = HERE / "post.lua"
BARE_SERVER = HERE / "bare_aiohttp.py"
PLUGIN_DIR = HERE / "trivial_plugin"
PLUGIN_MODULE = "deepaas_bench_trivial"
PLUGIN_DIST = "deepaas-bench-plugins"
MODEL_NAME = "bench_trivial"
ENTRY_POINT_GROUP = "deepaas.v2.model"
PREDICT_PATH = f"/v2/models/{MODEL_NAME}/predict/"
BENCH_QUERY = "?x=1"
TARGET_RATIO = 0.50
STARTUP_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0

WRK_INSTALL_HINT = """\
wrk is not on PATH; it is needed to generate the load. Install it with:
  Debian/Ubuntu:  sudo apt-get install wrk
  macOS:          brew install wrk
  from source:    https://github.com/wg/wrk (make; copy ./wrk onto PATH)"""


class BenchError(Exception):
    """The benchmark cannot go on (setup problem); the message says why."""


@dataclass
class WrkResult:
    """What one wrk run measured."""

    rps: float
    requests: int
    duration_s: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Total socket errors (connect, read, write, timeout)."""
        return sum(self.socket_errors.values())


@dataclass
class Server:
    """A server process started in its own process group."""

    label: str
    argv: list[str]
    env: dict[str, str]
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The server's predict URL, without query string."""
        return f"http://127.0.0.1:{self.port}{PREDICT_PATH}"

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout and stderr."""
        return self.workdir / f"{self.label}.log"

    def start(self) -> None:
        """Start the process in a new session (hence its own process group)."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
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
        strays = [pid for pid in descendants if _alive(pid)]
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


def _alive(pid: int) -> bool:
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


def _live_children() -> list[int]:
    """Return our live (non-zombie) child processes, where /proc tells."""
    stats = _proc_stats() or []
    me = os.getpid()
    return [pid for pid, state, ppid, _ in stats if ppid == me and state not in "ZX"]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    print(message, file=sys.stderr)
    sys.exit(code)


def find_wrk() -> str:
    """Return the path of wrk, or exit 2 telling how to install it."""
    wrk = shutil.which("wrk")
    if wrk is None:
        fail(WRK_INSTALL_HINT)
    return wrk


def wrk_version(wrk: str) -> str:
    """Return wrk's version line (wrk prints it with its usage)."""
    proc = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _plugin_installed() -> bool:
    """True if the trivial plugin and its entry point are importable here."""
    importlib.invalidate_caches()
    try:
        importlib.import_module(PLUGIN_MODULE)
    except ImportError:
        return False
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return any(ep.name == MODEL_NAME for ep in eps)


def ensure_plugin() -> bool:
    """Install ``benchmarks/trivial_plugin`` here if missing; True if installed."""
    if _plugin_installed():
        return False
    print(f"installing the trivial plugin from {PLUGIN_DIR} ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="deepaas-bench-plugin-") as tmp:
        # Build from a copy so that no build/ or *.egg-info lands in the tree.
        source = Path(tmp) / PLUGIN_DIR.name
        shutil.copytree(
            PLUGIN_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info")
        )
        cmd = [sys.executable, "-m", "pip", "install", "-q", str(source)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not _plugin_installed():
        raise BenchError(
            f"could not install the trivial plugin ({' '.join(cmd)}):\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return True


def remove_plugin() -> None:
    """Uninstall the trivial plugin, leaving the environment as it was found."""
    cmd = [sys.executable, "-m", "pip", "uninstall", "-q", "-y", PLUGIN_DIST]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        print(f"uninstalled {PLUGIN_DIST} (installed by this run)")
    else:
        print(
            f"WARNING: could not uninstall {PLUGIN_DIST}: {proc.stderr.strip()}",
            file=sys.stderr,
        )


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


def post(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """POST an empty body to ``url``; return (status, body)."""
    req = urllib.request.Request(
        url, data=b"", method="POST", headers={"Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(server: Server, timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Poll the predict URL until it answers 200, or raise BenchError."""
    assert server.proc is not None
    url = server.base_url + BENCH_QUERY
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
            status, body = post(url, timeout=2.0)
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


def check_answers(servers: list[Server]) -> list[str]:
    """Check that all servers give the same, expected JSON; return problems."""
    problems = []
    for x in (1, 41):
        expected = {"status": "OK", "predictions": {"echo": x + 1}}
        bodies: dict[str, Any] = {}
        for server in servers:
            try:
                status, raw = post(f"{server.base_url}?x={x}")
            except OSError as exc:
                raise BenchError(
                    f"{server.label} stopped answering: {exc}\n"
                    f"--- output ---\n{server.output()}"
                ) from exc
            try:
                bodies[server.label] = json.loads(raw)
            except ValueError:
                bodies[server.label] = raw.decode(errors="replace")
            if status != 200:
                problems.append(f"{server.label}: ?x={x} answered HTTP {status}")
        if any(body != expected for body in bodies.values()):
            shown = "; ".join(f"{k}: {json.dumps(v)}" for k, v in bodies.items())
            problems.append(
                f"?x={x}: bodies differ from {json.dumps(expected)} ({shown})"
            )
    return problems


_BENCH_LINE = re.compile(r"^BENCH_RESULT (.*)$", re.MULTILINE)
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk's output (with the BENCH_RESULT line from post.lua)."""
    match = _BENCH_LINE.search(output)
    if match is None:
        raise BenchError(f"no BENCH_RESULT line in wrk's output:\n{output}")
    values = {
        key: float(value)
        for key, value in (item.split("=", 1) for item in match.group(1).split())
    }
    requests = int(values["requests"])
    duration_s = values["duration_us"] / 1e6
    rps_match = _RPS.search(output)
    rps = float(rps_match.group(1)) if rps_match else requests / duration_s
    non_2xx_match = _NON_2XX.search(output)
    non_2xx = max(
        int(non_2xx_match.group(1)) if non_2xx_match else 0,
        int(values["status_errors"]),
    )
    socket_errors = {
        kind: int(values[f"{kind}_errors"])
        for kind in ("connect", "read", "write", "timeout")
    }
    sock_match = _SOCKET_ERRORS.search(output)
    if sock_match:
        for kind, count in zip(socket_errors, sock_match.groups(), strict=True):
            socket_errors[kind] = max(socket_errors[kind], int(count))
    return WrkResult(
        rps=rps,
        requests=requests,
        duration_s=duration_s,
        mean_ms=values["mean_us"] / 1e3,
        p50_ms=values["p50_us"] / 1e3,
        p90_ms=values["p90_us"] / 1e3,
        p99_ms=values["p99_us"] / 1e3,
        max_ms=values["max_us"] / 1e3,
        non_2xx=non_2xx,
        socket_errors=socket_errors,
    )


def run_wrk(
    wrk: str, url: str, duration: float, connections: int, threads: int
) -> WrkResult:
    """Run wrk against ``url`` and return its parsed result."""
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise BenchError(
            f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return parse_wrk(proc.stdout + proc.stderr)


def machine_info(wrk: str) -> dict[str, Any]:
    """Describe the machine the figures come from."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "wrk": wrk_version(wrk),
    }


def make_servers(workdir: Path, loop: str, self_test: bool) -> tuple[Server, Server]:
    """Build (baseline, candidate) server descriptions on free ports."""
    base_port, cand_port = free_ports(2)
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def bare(label: str, port: int) -> Server:
        argv = [sys.executable, str(BARE_SERVER), "--port", str(port)]
        return Server(label, [*argv, "--loop", loop], env, port, workdir)

    baseline = bare("bare", base_port)
    if self_test:
        return baseline, bare("bare-2", cand_port)
    # Default settings: ignore any setting inherited from the caller's
    # environment, except the event loop, which must match the baseline's.
    deepaas_env = {
        k: v for k, v in env.items() if not k.startswith(("DEEPAAS_", "OS_DEFAULT__"))
    }
    deepaas_env["DEEPAAS_LOOP"] = loop
    argv = [
        str(deepaas_run_path()),
        "--listen-ip",
        "127.0.0.1",
        "--listen-port",
        str(cand_port),
        "--model-name",
        MODEL_NAME,
    ]
    return baseline, Server("deepaas", argv, deepaas_env, cand_port, workdir)


def print_table(rounds: list[dict[str, Any]], baseline: str, candidate: str) -> None:
    """Print the per-round figures."""
    header = (
        f"{'round':>5}  {'server':<8} {'req/s':>10} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'non-2xx':>8} {'sock.err':>8}"
    )
    print(header)
    print("-" * len(header))
    for entry in rounds:
        for label in (baseline, candidate):
            res: WrkResult = entry[label]
            print(
                f"{entry['round']:>5}  {label:<8} {res.rps:>10.1f} "
                f"{res.p50_ms:>8.2f} {res.p99_ms:>8.2f} {res.non_2xx:>8} "
                f"{res.errors:>8}"
            )
        print(f"{'':>5}  {'ratio':<8} {entry['ratio']:>10.3f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Predict throughput of deepaas-run vs a bare aiohttp handler."
    )
    parser.add_argument("--rounds", type=int, default=3, help="default: %(default)s")
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds per wrk run (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of warm-up per server (default: %(default)s)",
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="default: %(default)s"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (default: %(default)s)"
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop for both servers; auto (deepaas's default): uvloop "
        "when installed, else asyncio (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results")
    parser.add_argument(
        "--keep-plugin",
        action="store_true",
        help=f"keep {PLUGIN_DIST} installed if this run installs it "
        "(default: uninstall it at the end)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 3 when the target is missed"
    )
    # Hidden: baseline against a second bare server; the ratio should be ~1.0.
    parser.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loop == "auto":
        args.loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rounds must be >= 1, --duration > 0, --warmup >= 0")
    if args.connections < args.threads:
        parser.error("--connections must be >= --threads")
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit so that the servers get stopped."""
    raise SystemExit(128 + signum)


def benchmark(
    args: argparse.Namespace, wrk: str, workdir: Path, report: dict[str, Any]
) -> int:
    """Start the servers, measure them and print the results; return the status."""
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise BenchError("--loop uvloop given but uvloop is not installed")
    baseline, candidate = make_servers(workdir, args.loop, args.self_test)
    servers = [baseline, candidate]
    report["servers"] = {s.label: " ".join(s.argv) for s in servers}
    try:
        for server in servers:
            server.start()
        for server in servers:
            wait_ready(server)

        problems = check_answers(servers)
        report["problems"] = problems
        if problems:
            print("INVALID: the servers do not give the expected answers:")
            for problem in problems:
                print(f"  - {problem}")
            return 1

        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
            f"POST {PREDICT_PATH}{BENCH_QUERY}, loop={args.loop}, "
            f"{args.rounds} rounds (baseline first)"
        )
        if args.warmup > 0:
            for server in servers:
                res = run_wrk(
                    wrk,
                    server.base_url + BENCH_QUERY,
                    args.warmup,
                    args.connections,
                    args.threads,
                )
                if res.non_2xx or res.errors:
                    problems.append(
                        f"warm-up {server.label}: {res.non_2xx} non-2xx, "
                        f"{res.errors} socket errors"
                    )

        rounds: list[dict[str, Any]] = []
        for number in range(1, args.rounds + 1):
            entry: dict[str, Any] = {"round": number}
            for server in servers:  # A/B/A/B: baseline first in every round
                res = run_wrk(
                    wrk,
                    server.base_url + BENCH_QUERY,
                    args.duration,
                    args.connections,
                    args.threads,
                )
                entry[server.label] = res
                if res.non_2xx or res.errors:
                    problems.append(
                        f"round {number} {server.label}: {res.non_2xx} non-2xx, "
                        f"{res.errors} socket errors {res.socket_errors}"
                    )
            base_rps = entry[baseline.label].rps
            entry["ratio"] = entry[candidate.label].rps / base_rps if base_rps else 0
            rounds.append(entry)
            print(
                f"  round {number}: {baseline.label} {base_rps:.1f} req/s, "
                f"{candidate.label} {entry[candidate.label].rps:.1f} req/s",
                flush=True,
            )
    finally:
        left: list[int] = []
        for server in servers:
            left += server.stop()
        left += [pid for pid in _live_children() if pid not in left]
        report["left_behind"] = left
        if left:
            print(f"ERROR: processes left behind: {left}", file=sys.stderr)

    base_median = statistics.median(e[baseline.label].rps for e in rounds)
    cand_median = statistics.median(e[candidate.label].rps for e in rounds)
    ratio = cand_median / base_median if base_median else 0.0
    valid = not problems and not left
    verdict = "INVALID" if not valid else "PASS" if ratio >= TARGET_RATIO else "FAIL"

    print()
    print_table(rounds, baseline.label, candidate.label)
    print()
    print(f"median {baseline.label:<8} {base_median:>10.1f} req/s")
    print(f"median {candidate.label:<8} {cand_median:>10.1f} req/s")
    print(f"ratio {candidate.label}/{baseline.label}: {ratio:.3f}")
    if args.self_test:
        print("self-test: both sides are the bare server; expect a ratio of ~1.0")
    print(f"target: >= {TARGET_RATIO:.2f}  ->  {verdict}")
    if problems:
        print("INVALID run (figures not to be trusted):")
        for problem in problems:
            print(f"  - {problem}")

    report.update(
        rounds=[
            {
                "round": e["round"],
                baseline.label: asdict(e[baseline.label]),
                candidate.label: asdict(e[candidate.label]),
                "ratio": e["ratio"],
            }
            for e in rounds
        ],
        median_rps={baseline.label: base_median, candidate.label: cand_median},
        ratio=ratio,
        valid=valid,
        verdict=verdict,
    )
    if not valid:
        return 1
    return 3 if args.strict and verdict == "FAIL" else 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    wrk = find_wrk()
    signal.signal(signal.SIGTERM, _on_sigterm)
    report: dict[str, Any] = {
        "benchmark": "predict_overhead",
        "self_test": args.self_test,
        "config": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "loop": args.loop,
            "url": PREDICT_PATH + BENCH_QUERY,
        },
        "machine": machine_info(wrk),
        "target_ratio": TARGET_RATIO,
        "verdict": "INVALID",
        "valid": False,
    }
    status = 2
    installed_plugin = False
    try:
        if not args.self_test:
            installed_plugin = ensure_plugin()
        with tempfile.TemporaryDirectory(prefix="deepaas-bench-") as tmp:
            status = benchmark(args, wrk, Path(tmp), report)
    except BenchError as exc:
        report["error"] = str(exc)
        print(f"ERROR: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        report["error"] = "interrupted"
        print("interrupted", file=sys.stderr)
        status = 130
    finally:
        if installed_plugin and not args.keep_plugin:
            remove_plugin()
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
            print(f"results written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
