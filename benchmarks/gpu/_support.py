"""Plumbing of the GPU check (``run.py``): steps and their checks, servers,
HTTP, ``/metrics``, ``nvidia-smi`` and the load generator.

Standard library only at import time: ``run.py`` imports this before it has
put the wheels it installed on ``sys.path``. Every process started here is
stopped by its owner (a ``with`` block), in its process group, with the
processes it started; every wait polls a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
BENCHMARKS = HERE.parent
REPO = BENCHMARKS.parent
RUN_PY = HERE / "run.py"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from _harness import Server, alive  # noqa: E402

T = TypeVar("T")

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"
MIB = 1 << 20
# Kept back from a step's deadline for stopping its servers.
CLEANUP_RESERVE_S = 8.0
LOG_TAIL = 2500


class StepTimeout(BaseException):
    """A step ran past its deadline (raised from SIGALRM).

    A BaseException, so that no ``except Exception`` inside a step swallows it.
    """


class Skip(Exception):
    """The whole step cannot run here; the message says why."""


class Failure(Exception):
    """A step cannot go on; the message says why (no traceback needed)."""


# -- steps and checks -----------------------------------------------------------


@dataclasses.dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIPPED
    detail: str = ""


@dataclasses.dataclass
class Step:
    """One step of the check: its checks, figures and notes, and its time."""

    key: str  # "a" ... "f"
    name: str  # "telemetry", ... (its folder is KEY-NAME)
    title: str
    out: Path  # the folder of the whole run
    deadline_s: float
    checks: list[Check] = dataclasses.field(default_factory=list)
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    summary: str = ""  # the figures column of the report's table
    error: str | None = None
    seconds: float = 0.0
    started: float = 0.0
    selected: bool = True

    @property
    def dir(self) -> Path:
        path = self.out / f"{self.key}-{self.name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, PASS if ok else FAIL, detail))
        return ok

    def skip(self, name: str, reason: str) -> None:
        self.checks.append(Check(name, SKIPPED, reason))

    @property
    def status(self) -> str:
        if self.error is not None or any(c.status == FAIL for c in self.checks):
            return FAIL
        if self.checks and all(c.status == PASS for c in self.checks):
            return PASS
        return SKIPPED

    @property
    def reason(self) -> str:
        """Why the step failed or was skipped; empty when it passed."""
        status = self.status
        if status == FAIL:
            failed = [c.name for c in self.checks if c.status == FAIL]
            parts = ([self.error] if self.error else []) + (
                [f"failed: {', '.join(failed)}"] if failed else []
            )
            return "; ".join(parts)
        if status == SKIPPED:
            reasons = [c.detail for c in self.checks if c.status == SKIPPED]
            return "; ".join(dict.fromkeys(reasons)) or "nothing was checked"
        return ""

    def remaining(self) -> float:
        return self.deadline_s - (time.monotonic() - self.started)

    def budget(self, wanted: float) -> float:
        """``wanted`` seconds, or what the deadline leaves for a wait."""
        return max(0.5, min(wanted, self.remaining() - CLEANUP_RESERVE_S))

    def until(
        self,
        predicate: Callable[[], T | None],
        what: str,
        timeout: float,
        interval: float = 0.05,
    ) -> T:
        """Poll ``predicate`` until it answers something true (returned);
        :class:`Failure` after ``timeout`` seconds (less if the step's
        deadline is nearer)."""
        limit = self.budget(timeout)
        deadline = time.monotonic() + limit
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise Failure(f"timed out after {limit:.1f}s waiting until {what}")
            time.sleep(interval)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 1),
            "summary": self.summary,
            "figures": self.figures,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "notes": self.notes,
            "error": self.error,
            "folder": f"{self.key}-{self.name}",
        }


# -- HTTP -------------------------------------------------------------------------


def http(
    method: str, url: str, body: Any = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """One request; (status, the answer as JSON, or as text if it is not)."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif method in ("POST", "PUT"):
        data = b""
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    """True when nothing accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            return True
    return False


# -- /metrics ---------------------------------------------------------------------

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
GPU_FIELDS = (
    "utilization_ratio",
    "memory_used_bytes",
    "memory_total_bytes",
    "temperature_celsius",
    "power_watts",
)


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format -> (name, labels, value) for each sample."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        found = {
            key: raw.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            for key, raw in _LABEL.findall(labels or "")
        }
        samples.append((name, found, number))
    return samples


def metric_sum(
    samples: Sequence[tuple[str, dict[str, str], float]], name: str, **labels: str
) -> float | None:
    """The sum of ``name``'s samples whose labels include ``labels``; None if
    there is none."""
    values = [
        value
        for sample, found, value in samples
        if sample == name and all(found.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


def gpu_gauges(
    samples: Sequence[tuple[str, dict[str, str], float]],
) -> dict[str, dict[str, float]]:
    """``deepaas_gpu_<field>`` gauges: field -> GPU index (or uuid) -> value."""
    gauges: dict[str, dict[str, float]] = {}
    for name, labels, value in samples:
        if name.startswith("deepaas_gpu_"):
            field = name.removeprefix("deepaas_gpu_")
            gpu = labels.get("gpu") or labels.get("uuid", "?")
            gauges.setdefault(field, {})[gpu] = value
    return gauges


# -- nvidia-smi ------------------------------------------------------------------

SMI_FIELDS = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "temperature.gpu",
    "power.draw",
)
_NOT_A_VALUE = ("[N/A]", "[Not Supported]", "N/A", "[Unknown Error]", "")


def parse_smi_csv(text: str, fields: Sequence[str]) -> list[dict[str, str | None]]:
    """``--format=csv,noheader,nounits`` -> one dict per line; N/A is None.

    A GPU name could hold a comma: the parts a line has beyond ``fields`` are
    joined back into ``name``.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.lower().startswith("no running"):
            continue
        parts = [part.strip() for part in line.split(",")]
        if len(parts) > len(fields) and "name" in fields:
            at = fields.index("name")
            extra = len(parts) - len(fields)
            parts[at : at + extra + 1] = [", ".join(parts[at : at + extra + 1])]
        if len(parts) != len(fields):
            raise Failure(f"nvidia-smi: cannot read {line!r} as {', '.join(fields)}")
        rows.append(
            {
                field: None if value in _NOT_A_VALUE else value
                for field, value in zip(fields, parts, strict=True)
            }
        )
    return rows


def parse_compute_apps(text: str) -> dict[int, int | None]:
    """``--query-compute-apps=pid,used_memory`` -> pid -> MiB (None: N/A)."""
    apps: dict[int, int | None] = {}
    for row in parse_smi_csv(text, ("pid", "used_memory")):
        if row["pid"] is None:
            continue
        memory = row["used_memory"]
        apps[int(row["pid"])] = None if memory is None else int(float(memory))
    return apps


class Smi:
    """``nvidia-smi`` queries; canned answers in the self-test."""

    def __init__(self, canned: Mapping[str, str] | None = None) -> None:
        self.canned = canned

    def run(self, *args: str, timeout: float = 15.0) -> str:
        if self.canned is not None:
            key = next((a for a in args if a.startswith("--query")), "")
            return self.canned.get(key.split("=", 1)[0], "")
        try:
            proc = subprocess.run(
                ["nvidia-smi", *args], capture_output=True, text=True, timeout=timeout
            )
        except FileNotFoundError:
            raise Failure("nvidia-smi is not on PATH") from None
        except subprocess.TimeoutExpired:
            raise Failure(f"nvidia-smi did not answer within {timeout:.0f}s") from None
        if proc.returncode != 0:
            raise Failure(
                f"nvidia-smi {' '.join(args)} exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()[:300]}"
            )
        return proc.stdout

    def gpus(self) -> list[dict[str, str | None]]:
        text = self.run(
            f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"
        )
        return parse_smi_csv(text, SMI_FIELDS)

    def field(self, name: str) -> list[str | None]:
        """One ``--query-gpu`` field of every GPU (``memory.reserved``, ...)."""
        text = self.run(f"--query-gpu={name}", "--format=csv,noheader,nounits")
        return [row[name] for row in parse_smi_csv(text, (name,))]

    def compute_apps(self) -> dict[int, int | None]:
        text = self.run(
            "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"
        )
        return parse_compute_apps(text)


@contextlib.contextmanager
def deadline_paused() -> Iterator[None]:
    """Hold back the step's deadline (SIGALRM) while servers are stopped, so
    that it cannot cut a stop short; what the stop took still counts, and a
    deadline that passed meanwhile strikes right after."""
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    signal.setitimer(signal.ITIMER_REAL, 0)
    paused = time.monotonic()
    try:
        yield
    finally:
        if left:
            spent = time.monotonic() - paused
            signal.setitimer(signal.ITIMER_REAL, max(0.01, left - spent))


# -- the run's context ---------------------------------------------------------


@dataclasses.dataclass
class Context:
    """What every step uses: mode, commands, environment, host facts."""

    selftest: bool
    out: Path
    python: str  # the interpreter of every Python process started
    deepaas_run: list[str]  # the command that starts deepaas-run
    env: dict[str, str]  # base environment of every process started
    smi: Smi
    info: dict[str, Any]  # from the probe: torch, CUDA, entry points, ...
    tmp: Path  # scratch (servers' state directories), removed at the end
    left_behind: list[int] = dataclasses.field(default_factory=list)

    @property
    def gpu_ready(self) -> str | None:
        """None when GPU work can run here; else why not."""
        if self.selftest:
            return None
        torch = self.info.get("torch")
        if not torch:
            return f"torch is not importable ({self.info.get('torch_error', '?')})"
        if not torch.get("cuda_available"):
            return (
                f"no CUDA: torch {torch.get('version')} (CUDA "
                f"{torch.get('cuda')}) sees no GPU"
            )
        return None

    def require_gpu(self) -> None:
        reason = self.gpu_ready
        if reason is not None:
            raise Skip(reason)

    def no_cuda(self, step: Step, name: str) -> bool:
        """In the self-test: record ``name`` as skipped (no CUDA); True then."""
        if self.selftest:
            step.skip(name, "no CUDA (self-test)")
        return self.selftest

    def child_env(
        self, extra: Mapping[str, str] | None = None, path: Sequence[Path] = ()
    ) -> dict[str, str]:
        env = dict(self.env)
        env.update(extra or {})
        if path:
            old = env.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join(
                [*(str(p) for p in path), *([old] if old else [])]
            )
        return env

    @contextlib.contextmanager
    def server(
        self,
        step: Step,
        label: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        path: Sequence[Path] = (),
    ) -> Iterator[Deepaas]:
        """A ``deepaas-run`` on 127.0.0.1 for the block; stopped at its end,
        its workers and jobs too, its port checked free."""
        srv = Deepaas(self, step, label, args, env, path)
        try:
            srv.server.start()
            yield srv
        finally:
            with deadline_paused():
                srv.stop(step)

    def start_load(
        self, step: Step, label: str, url: str, connections: int, duration: float
    ) -> Load:
        return Load(self, step, label, url, connections, duration)


class Deepaas:
    """One ``deepaas-run`` of a step (a :class:`_harness.Server` inside)."""

    def __init__(
        self,
        ctx: Context,
        step: Step,
        label: str,
        args: Sequence[str],
        env: Mapping[str, str] | None,
        path: Sequence[Path],
    ) -> None:
        port = free_port()
        self.label = label
        self.url = f"http://127.0.0.1:{port}"
        argv = [
            *ctx.deepaas_run,
            "--listen-ip",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "--state-dir",
            str(ctx.tmp / f"{step.key}-{label}-state"),
            *args,
        ]
        self.server = Server(label, argv, ctx.child_env(env, path), port, step.dir)
        self.ctx = ctx
        step.notes.append(f"{label}: {' '.join(argv)}")

    def log(self) -> str:
        try:
            return self.server.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self) -> str:
        text = self.log().strip()
        return text[-LOG_TAIL:] if text else "(no output)"

    def alive_or_fail(self) -> None:
        proc = self.server.proc
        if proc is not None and proc.poll() is not None:
            raise Failure(
                f"{self.label} exited with status {proc.returncode}; its output "
                f"ends:\n{self.tail()}"
            )

    def system(self) -> dict[str, Any]:
        status, doc = http("GET", f"{self.url}/v2/system/", timeout=10)
        if status != 200 or not isinstance(doc, dict):
            raise Failure(f"{self.label}: GET /v2/system/ answered {status}: {doc}")
        return doc

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        status, text = http("GET", f"{self.url}/metrics", timeout=10)
        if status != 200 or not isinstance(text, str):
            raise Failure(f"{self.label}: GET /metrics answered {status}")
        return parse_metrics(text)

    def workers(self, model: str | None = None) -> list[dict[str, Any]]:
        found = self.system().get("workers", [])
        return [w for w in found if model is None or w.get("model") == model]

    def wait_ready(self, step: Step, workers: int, timeout: float = 120.0) -> None:
        """Until the banner is out and ``workers`` workers are ready."""

        def ready() -> bool:
            self.alive_or_fail()
            log = self.log()
            if "ready in" not in log:
                return False
            if "FAILED:" in log:
                raise Failure(f"{self.label}: a model did not start:\n{self.tail()}")
            states = [w.get("state") for w in self.workers()]
            return len(states) >= workers and all(s == "ready" for s in states)

        try:
            step.until(ready, f"{self.label} has {workers} ready worker(s)", timeout)
        except Failure as exc:
            if "timed out" in str(exc):
                raise Failure(f"{exc}; its output ends:\n{self.tail()}") from None
            raise

    def predict(
        self, model: str, query: str = "", timeout: float = 60.0
    ) -> tuple[int, Any]:
        url = f"{self.url}/v2/models/{model}/predict/{query}"
        return http("POST", url, timeout=timeout)

    def stop(self, step: Step) -> None:
        left = self.server.stop()
        if left:
            self.ctx.left_behind += left
            step.check(
                f"{self.label} stopped with its workers",
                False,
                f"processes left behind: {left}",
            )
        deadline = time.monotonic() + 5.0
        while not port_free(self.server.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not port_free(self.server.port):
            step.check(
                f"{self.label}'s port is free",
                False,
                f"127.0.0.1:{self.server.port} still accepts connections",
            )


# -- load ---------------------------------------------------------------------------


class Load:
    """POSTs to ``url`` on ``connections`` connections for ``duration``
    seconds, from a few processes (``run.py --load-worker``: one Python
    process cannot load a fast server alone)."""

    def __init__(
        self,
        ctx: Context,
        step: Step,
        label: str,
        url: str,
        connections: int,
        duration: float,
    ) -> None:
        cores = os.cpu_count() or 2
        count = max(1, min(4, connections // 8, cores // 4))
        shares = [
            connections // count + (i < connections % count) for i in range(count)
        ]
        self.label = label
        self.procs: list[subprocess.Popen[str]] = []
        self.errors = [step.dir / f"load-{label}-{i}.err" for i in range(count)]
        for share, errors in zip(shares, self.errors, strict=True):
            spec = json.dumps({"url": url, "connections": share, "duration": duration})
            with errors.open("w") as err:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(RUN_PY), "--load-worker", spec],
                        env=ctx.env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                        start_new_session=True,
                    )
                )

    def running(self) -> bool:
        return any(proc.poll() is None for proc in self.procs)

    def wait_a_little(self, seconds: float) -> None:
        """Return after ``seconds``, or sooner when the load is over."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=seconds)
                return

    def result(self, step: Step, timeout: float) -> dict[str, Any]:
        """Wait for every load process; their figures summed."""
        deadline = time.monotonic() + step.budget(timeout)
        parts = []
        try:
            for proc, errors in zip(self.procs, self.errors, strict=True):
                left = max(0.1, deadline - time.monotonic())
                try:
                    out, _ = proc.communicate(timeout=left)
                except subprocess.TimeoutExpired:
                    raise Failure(f"load {self.label} did not end in time") from None
                lines = [line for line in out.splitlines() if line.startswith("{")]
                if proc.returncode != 0 or not lines:
                    detail = errors.read_text(errors="replace").strip()[-LOG_TAIL:]
                    raise Failure(
                        f"load {self.label} exited {proc.returncode}: "
                        f"{detail or '(no output)'}"
                    )
                parts.append(json.loads(lines[-1]))
        finally:
            self.stop()
            for errors in self.errors:  # keep only what says something
                with contextlib.suppress(OSError):
                    if not errors.stat().st_size:
                        errors.unlink()
        statuses: collections.Counter[str] = collections.Counter()
        for part in parts:
            statuses.update(part["statuses"])
        latencies = sorted(x for part in parts for x in part["latencies_ms"])
        return {
            "rps": sum(p["ok"] / p["elapsed"] for p in parts if p["elapsed"] > 0),
            "ok": sum(p["ok"] for p in parts),
            "statuses": dict(statuses),
            "errors": sum(n for s, n in statuses.items() if s != "200"),
            "p50_ms": percentile(latencies, 0.50),
            "p99_ms": percentile(latencies, 0.99),
            "processes": len(parts),
        }

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def load_worker(spec_json: str) -> int:
    """The body of ``run.py --load-worker``: one JSON line of figures."""
    spec = json.loads(spec_json)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    result = asyncio.run(_load(spec["url"], spec["connections"], spec["duration"]))
    print(json.dumps(result), flush=True)
    return 0


async def _load(url: str, connections: int, duration: float) -> dict[str, Any]:
    import aiohttp

    loop = asyncio.get_running_loop()
    statuses: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    timeout = aiohttp.ClientTimeout(total=max(60.0, 4 * duration))
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Accept": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = loop.time()
        stop = start + duration

        async def client() -> None:
            while loop.time() < stop:
                sent = loop.time()
                try:
                    async with session.post(url, data=b"", headers=headers) as resp:
                        await resp.read()
                        statuses[str(resp.status)] += 1
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    statuses[type(exc).__name__] += 1
                    await asyncio.sleep(0.05)  # a refused connection: no busy loop
                latencies.append((loop.time() - sent) * 1000)

        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = loop.time() - start
    # A sample of the latencies is enough for percentiles and keeps the pipe small.
    step = max(1, len(latencies) // 5000)
    return {
        "ok": statuses.get("200", 0),
        "statuses": dict(statuses),
        "elapsed": elapsed,
        "latencies_ms": [round(x, 3) for x in latencies[::step]],
    }


@dataclasses.dataclass
class GpuWatch:
    """What ``/metrics`` showed of the GPUs while a load ran."""

    scrapes: int = 0
    peaks: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    utilization: list[float] = dataclasses.field(default_factory=list)

    def peak(self, field: str) -> float | None:
        """The highest reading of ``deepaas_gpu_<field>`` over all GPUs."""
        values = self.peaks.get(field, {}).values()
        return max(values) if values else None


def watch_gpus(srv: Deepaas, load: Load, interval: float = 0.5) -> GpuWatch:
    """Scrape ``/metrics`` every ``interval`` seconds while ``load`` runs."""
    watch = GpuWatch()
    while load.running():
        with contextlib.suppress(OSError, Failure):
            gauges = gpu_gauges(srv.metrics())
            watch.scrapes += 1
            for field, by_gpu in gauges.items():
                peak = watch.peaks.setdefault(field, {})
                for gpu, value in by_gpu.items():
                    peak[gpu] = max(value, peak.get(gpu, value))
            watch.utilization += gauges.get("utilization_ratio", {}).values()
        load.wait_a_little(interval)
    return watch


def processes_alive(pids: Sequence[int]) -> list[int]:
    return [pid for pid in pids if alive(pid)]
