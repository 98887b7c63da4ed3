"""Batching benchmark: the adaptive batch window against fixed ones.

Serves the ``bench_mlp`` plugin (``benchmarks/mlp_plugin``: a memory-bound
torch MLP of four 2048x2048 layers, one thread, ``predict_batch`` of up to 32
requests, no delay of its own) from ``deepaas-run`` processes started side
by side, the same but for one setting:

- **adaptive**: deepaas's default window (waits for companions only while
  more requests are expected soon; docs/batching.md);
- **0ms**, **5ms**: ``--max-batch-delay 0`` (never wait) and ``5`` (a fixed
  window; ``--delays`` chooses them);
- **off**: ``--max-batch-size 1`` (every request is one ``predict`` call),
  the unbatched baseline.

Each round measures every server with wrk at each of ``--connections``
(1, 8, 32 and 64), rotating which server goes first: throughput, p50 and
p99 latency, and the mean batch size the model saw (``deepaas_batch_size``
from ``/metrics``). It prints the medians over the rounds, with their
spread, the ratios against the baselines measured in the same run, and
checks the targets of issue 14: at 32 connections the adaptive window's
throughput is at least 0.95x the 5 ms window's and 6x unbatched; at 1
connection its median latency is at most 0.5 ms above the 0 ms window's.

Usage::

    .venv/bin/python benchmarks/batching.py [--rounds 2] [--duration 5]

Exit status: 0 measured (PASS or FAIL is printed; ``--strict`` turns FAIL into
3), 1 the run is invalid (wrong or misrouted answers, non-2xx responses,
socket errors, batches on the "off" server, a server whose ``/v2/system/``
does not say the window it was started with, a process left behind), 2 the
benchmark could not run (no wrk, no torch, a deepaas without batching, a
server did not come up).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import math
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _harness import (
    BenchError,
    Server,
    add_run_options,
    checked_run_options,
    deepaas_env,
    deepaas_run_path,
    free_ports,
    get,
    install_plugin,
    int_list,
    live_children,
    post,
    uninstall_dist,
    wait_ready,
)
from _wrk import (
    WrkResult,
    find_wrk,
    machine_info,
    run_wrk,
)

HERE = Path(__file__).resolve().parent
COMPUTE_SCRIPT = HERE / "mlp_compute.py"
PLUGIN_DIR = HERE / "mlp_plugin"
PLUGIN_MODULE = "deepaas_bench_mlp"
PLUGIN_DIST = "deepaas-bench-mlp"
MODEL_NAME = "bench_mlp"
PREDICT_PATH = f"/v2/models/{MODEL_NAME}/predict/"
BENCH_QUERY = "?seed=1"
TORCH_PIN = "torch==2.13.0"
# The CPU build: PyPI's Linux wheels of torch pull gigabytes of CUDA libraries.
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
CONNECTIONS = [1, 8, 32, 64]
DELAYS_MS = [0, 5]
ADAPTIVE_CAP_MS = 5.0  # deepaas.engine.window.ADAPTIVE_CAP_S, as /v2/system/ says
# The targets of issue 14.
TARGET_CONNECTIONS = 32
TARGET_VS_FIXED = 0.95  # adaptive / 5ms throughput at 32 connections
TARGET_FIXED_MS = 5
TARGET_VS_OFF = 6.0  # adaptive / off throughput at 32 connections
TARGET_P50_DIFF_MS = 0.5  # adaptive - 0ms median latency at 1 connection
STARTUP_TIMEOUT_S = 120.0  # importing torch and building the model
SETTLE_TIMEOUT_S = 60.0
REQUIRED_FLAGS = ("--max-batch-size", "--max-batch-delay", "--devices")
ADAPTIVE, OFF = "adaptive", "off"


def ensure_torch() -> None:
    """Install ``torch==2.13.0`` (the CPU build) here if torch is missing,
    saying so."""
    if importlib.util.find_spec("torch") is not None:
        return
    print(
        f"torch is not installed in {sys.prefix}; the bench_mlp plugin needs "
        f"it.\ninstalling {TORCH_PIN} (pinned: an unpinned torch pulls "
        f"gigabytes of CUDA wheels; it stays installed afterwards) ...",
        flush=True,
    )
    cmd = [sys.executable, "-m", "pip", "install", "-q", TORCH_PIN]
    cmd += ["--index-url", TORCH_INDEX]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    importlib.invalidate_caches()
    if proc.returncode != 0 or importlib.util.find_spec("torch") is None:
        raise BenchError(
            f"could not install torch ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}"
            f"\ninstall a torch build yourself (e.g. {sys.executable} -m pip "
            f"install {TORCH_PIN} --index-url {TORCH_INDEX}) and run the "
            "benchmark again"
        )


def ensure_plugin() -> bool:
    """Install ``benchmarks/mlp_plugin`` here if missing; True if installed."""
    return install_plugin(PLUGIN_DIR, PLUGIN_MODULE, MODEL_NAME, "the MLP plugin")


def check_deepaas_flags(run: Path) -> None:
    """Raise BenchError unless ``deepaas-run`` knows the batching flags."""
    proc = subprocess.run([str(run), "--help"], capture_output=True, text=True)
    missing = [flag for flag in REQUIRED_FLAGS if flag not in proc.stdout]
    if missing:
        raise BenchError(
            f"{run} has no {', '.join(missing)}: this deepaas predates dynamic "
            f"batching and device placement, so there is nothing to compare"
        )


def measure_compute(timeout: float = 120.0) -> dict[str, Any] | None:
    """Per-item compute at batch 1 and 32 in a plain process (no server)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [
            sys.executable,
            str(COMPUTE_SCRIPT),
            "--sizes",
            "1,32",
            "--json",
            out.name,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            print(f"WARNING: {' '.join(cmd)} failed:\n{proc.stderr}", file=sys.stderr)
            return None
        return dict(json.loads(Path(out.name).read_text()))


def _predictions(server: Server, seed: int) -> tuple[Any, str | None]:
    """POST ``?seed=N``; return (predictions, problem or None)."""
    try:
        status, raw = post(f"{server.base_url}?seed={seed}", timeout=30.0)
    except OSError as exc:
        raise BenchError(
            f"{server.label} stopped answering: {exc}\n"
            f"--- output ---\n{server.output()}"
        ) from exc
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    if status != 200:
        return None, f"{server.label}: ?seed={seed} answered HTTP {status}: {body}"
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(predictions, dict) or not {"argmax", "sum"} <= predictions.keys():
        return None, f"{server.label}: ?seed={seed}: unexpected body {body}"
    return predictions, None


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same answer, up to float rounding (batched GEMMs round differently)."""
    return a["argmax"] == b["argmax"] and math.isclose(
        a["sum"], b["sum"], rel_tol=1e-4, abs_tol=1e-4
    )


def check_answers(off: Server, batched: list[Server], devices: str) -> list[str]:
    """Every server agrees, on the expected device, and batched answers are
    routed to their requests.

    32 concurrent requests with distinct seeds go to each batching server;
    each must get the answer the unbatched server gives to its seed alone.
    """
    problems = []
    reference: dict[int, dict[str, Any]] = {}
    seeds = list(range(100, 132))
    for seed in [0, 1, *seeds]:
        ref, problem = _predictions(off, seed)
        if problem:
            problems.append(problem)
            continue
        reference[seed] = ref
        if devices == "cpu" and ref.get("device") != "cpu":
            problems.append(f"{off.label}: ran on {ref.get('device')!r}, not cpu")
    for on in batched:
        for seed in (0, 1):
            got, problem = _predictions(on, seed)
            if problem or seed not in reference:
                problems.append(problem or f"no reference answer for ?seed={seed}")
            elif not _same(got, reference[seed]):
                problems.append(
                    f"?seed={seed}: {on.label} {got} != {off.label} {reference[seed]}"
                )
        with concurrent.futures.ThreadPoolExecutor(len(seeds)) as pool:
            answers = dict(
                zip(
                    seeds,
                    pool.map(lambda s, on=on: _predictions(on, s), seeds),
                    strict=True,
                )
            )
        for seed, (got, problem) in answers.items():
            if problem:
                problems.append(problem)
            elif seed in reference and not _same(got, reference[seed]):
                problems.append(
                    f"concurrent ?seed={seed} on {on.label}: {got} != "
                    f"{reference[seed]} (results routed to the wrong request?)"
                )
    return problems


def check_windows(
    servers: list[Server], expected: dict[str, tuple[str, float]]
) -> list[str]:
    """Each server's ``/v2/system/`` says the batch window it was started
    with: (kind, bound in ms) by label. A stale plugin that fixes its own
    delay would make "adaptive" measure something else."""
    problems = []
    for server in servers:
        kind, bound = expected[server.label]
        try:
            status, raw = get(f"http://127.0.0.1:{server.port}/v2/system/")
            queue = json.loads(raw)["queues"][MODEL_NAME] if status == 200 else {}
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"{server.label}: /v2/system/ unreadable: {exc}")
            continue
        got = (queue.get("batch_window"), queue.get("max_batch_delay_ms"))
        if got != (kind, bound):
            problems.append(
                f"{server.label}: /v2/system/ says batch_window={got[0]!r}, "
                f"max_batch_delay_ms={got[1]!r}; expected {kind!r}, {bound!r}"
            )
    return problems


_METRIC = re.compile(
    r"^deepaas_batch_size_(sum|count)\{([^}]*)\}\s+(\S+)", re.MULTILINE
)


def batch_totals(server: Server) -> tuple[float, float] | None:
    """(sum, count) of ``deepaas_batch_size`` for the model; None if unknown."""
    try:
        status, raw = get(f"http://127.0.0.1:{server.port}/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    totals = {"sum": 0.0, "count": 0.0}
    found = False
    for kind, labels, value in _METRIC.findall(raw.decode(errors="replace")):
        if f'model="{MODEL_NAME}"' in labels:
            totals[kind] += float(value)
            found = True
    return (totals["sum"], totals["count"]) if found else None


def wait_idle(server: Server, timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until the server has no request queued or in flight.

    When wrk stops, the requests it had in flight are still queued in the
    server and keep its worker busy for a while (32 x 6 ms without batching);
    the next run must not start behind them. ``/v2/system/`` tells; without
    it, wait a fixed second.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, raw = get(f"http://127.0.0.1:{server.port}/v2/system/")
            doc = json.loads(raw) if status == 200 else None
        except (OSError, ValueError):
            doc = None
        if not isinstance(doc, dict):
            time.sleep(1.0)
            return
        queued = sum(q.get("depth", 0) for q in doc.get("queues", {}).values())
        running = sum(w.get("in_flight", 0) for w in doc.get("workers", []))
        if not queued and not running:
            return
        time.sleep(0.05)
    raise BenchError(f"{server.label} still busy {timeout:.0f} s after a wrk run")


def fixed_label(delay_ms: int) -> str:
    return f"{delay_ms}ms"


def make_servers(workdir: Path, args: argparse.Namespace) -> list[Server]:
    """The servers to compare, on free ports: adaptive, each fixed delay, off."""
    specs: list[tuple[str, list[str]]] = [(ADAPTIVE, [])]
    specs += [(fixed_label(d), ["--max-batch-delay", str(d)]) for d in args.delays]
    specs.append((OFF, ["--max-batch-size", "1"]))
    ports = free_ports(len(specs))
    env = deepaas_env(args.loop)
    run = str(deepaas_run_path())
    size = ["--max-batch-size", str(args.batch_size)] if args.batch_size else []
    servers = []
    for (label, extra), port in zip(specs, ports, strict=True):
        argv = [
            run,
            "--listen-ip",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "--model-name",
            MODEL_NAME,
            "--devices",
            args.devices,
            "--workers",
            str(args.workers),
            *(size if label != OFF else []),
            *extra,
        ]
        servers.append(Server(label, argv, env, port, workdir, PREDICT_PATH))
    return servers


def expected_windows(args: argparse.Namespace) -> dict[str, tuple[str, float]]:
    """What each server's ``/v2/system/`` must say: (batch_window, ms)."""
    windows = {ADAPTIVE: ("adaptive", ADAPTIVE_CAP_MS), OFF: ("none", 0.0)}
    for delay in args.delays:
        windows[fixed_label(delay)] = ("fixed", float(delay))
    return windows


def measure(
    wrk: str, server: Server, args: argparse.Namespace, connections: int
) -> tuple[WrkResult, float | None]:
    """One wrk run; also the mean batch size it saw (from /metrics), if any."""
    wait_idle(server)
    before = batch_totals(server)
    res = run_wrk(wrk, server.base_url + BENCH_QUERY, args.duration, connections, 1)
    wait_idle(server)
    after = batch_totals(server)
    mean_batch = None
    if before is not None and after is not None and after[1] > before[1]:
        mean_batch = (after[0] - before[0]) / (after[1] - before[1])
    return res, mean_batch


def run_rounds(
    wrk: str, args: argparse.Namespace, servers: list[Server], problems: list[str]
) -> list[dict[str, Any]]:
    """Measure every server at every connection count, ``--rounds`` times;
    the server that goes first rotates from one measurement to the next."""
    runs: list[dict[str, Any]] = []
    turn = 0
    for number in range(1, args.rounds + 1):
        for connections in args.connections:
            order = servers[turn % len(servers) :] + servers[: turn % len(servers)]
            turn += 1
            line = []
            for server in order:
                res, batch = measure(wrk, server, args, connections)
                runs.append(
                    {
                        "round": number,
                        "connections": connections,
                        "server": server.label,
                        "wrk": res,
                        "batch": batch,
                    }
                )
                line.append(f"{server.label} {res.rps:.1f}")
                if res.non_2xx or res.errors:
                    problems.append(
                        f"round {number} {server.label} c{connections}: "
                        f"{res.non_2xx} non-2xx, {res.errors} socket errors "
                        f"{res.socket_errors}"
                    )
                if server.label == OFF and batch is not None and batch > 1.0:
                    problems.append(
                        f"round {number}: the 'off' server formed batches "
                        f"(mean {batch:.2f}): --max-batch-size 1 is not honoured"
                    )
            print(
                f"  round {number} c{connections}: " + ", ".join(line) + " req/s",
                flush=True,
            )
    return runs


def summarize(
    runs: list[dict[str, Any]], servers: list[Server], connections: list[int]
) -> dict[tuple[int, str], dict[str, Any]]:
    """Medians (and spread) over the rounds, by (connections, server)."""
    summary = {}
    for c in connections:
        for server in servers:
            mine = [
                r for r in runs if r["connections"] == c and r["server"] == server.label
            ]
            rps = [r["wrk"].rps for r in mine]
            batches = [r["batch"] for r in mine if r["batch"] is not None]
            summary[(c, server.label)] = {
                "rps": statistics.median(rps),
                "rps_min": min(rps),
                "rps_max": max(rps),
                "p50_ms": statistics.median(r["wrk"].p50_ms for r in mine),
                "p50_min": min(r["wrk"].p50_ms for r in mine),
                "p50_max": max(r["wrk"].p50_ms for r in mine),
                "p99_ms": statistics.median(r["wrk"].p99_ms for r in mine),
                "batch": statistics.median(batches) if batches else None,
            }
    return summary


def _fmt(value: float | None, width: int, spec: str) -> str:
    """``value`` formatted by ``spec``, or "-", right-aligned in ``width``."""
    return format("-" if value is None else format(value, spec), f">{width}")


def print_summary(
    summary: dict[tuple[int, str], dict[str, Any]],
    servers: list[Server],
    connections: list[int],
    rounds: int,
) -> None:
    """The medians, their spread, and each server against the baselines."""
    labels = [s.label for s in servers]
    others = [label for label in labels if label != ADAPTIVE]
    header = (
        f"{'conns':>5}  {'server':<8} {'req/s':>8} {'(min-max)':>15} "
        f"{'p50 ms':>7} {'(min-max)':>13} {'p99 ms':>7} {'batch':>6}"
    )
    print(f"medians over {rounds} round(s), (spread over the rounds):")
    print(header)
    print("-" * len(header))
    for c in connections:
        for label in labels:
            row = summary[(c, label)]
            spread = f"({row['rps_min']:.0f}-{row['rps_max']:.0f})"
            p50_spread = f"({row['p50_min']:.2f}-{row['p50_max']:.2f})"
            print(
                f"{c:>5}  {label:<8} {row['rps']:>8.1f} {spread:>15} "
                f"{row['p50_ms']:>7.2f} {p50_spread:>13} {row['p99_ms']:>7.2f} "
                f"{_fmt(row['batch'], 6, '.1f')}"
            )
        adaptive = summary[(c, ADAPTIVE)]
        ratios = ", ".join(
            f"/{label} {adaptive['rps'] / summary[(c, label)]['rps']:.2f}x"
            for label in others
            if summary[(c, label)]["rps"]
        )
        diffs = ", ".join(
            f"-{label} {adaptive['p50_ms'] - summary[(c, label)]['p50_ms']:+.2f}"
            for label in others
        )
        print(f"{'':>5}  adaptive req/s {ratios}; p50 ms {diffs}")
    print()


def check_targets(
    summary: dict[tuple[int, str], dict[str, Any]], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], bool]:
    """The targets of issue 14 that this run measured, and whether all held."""
    checks = []
    c = TARGET_CONNECTIONS
    fixed = fixed_label(TARGET_FIXED_MS)
    if (c, ADAPTIVE) in summary and (c, fixed) in summary:
        value = summary[(c, ADAPTIVE)]["rps"] / summary[(c, fixed)]["rps"]
        checks.append(
            {
                "what": f"c{c} throughput adaptive/{fixed}",
                "value": value,
                "target": f">= {TARGET_VS_FIXED:.2f}x",
                "ok": value >= TARGET_VS_FIXED,
            }
        )
    if (c, ADAPTIVE) in summary:
        value = summary[(c, ADAPTIVE)]["rps"] / summary[(c, OFF)]["rps"]
        checks.append(
            {
                "what": f"c{c} throughput adaptive/off",
                "value": value,
                "target": f">= {TARGET_VS_OFF:.1f}x",
                "ok": value >= TARGET_VS_OFF,
            }
        )
    zero = fixed_label(0)
    if (1, ADAPTIVE) in summary and (1, zero) in summary:
        value = summary[(1, ADAPTIVE)]["p50_ms"] - summary[(1, zero)]["p50_ms"]
        checks.append(
            {
                "what": f"c1 p50 adaptive-{zero}",
                "value": value,
                "target": f"<= +{TARGET_P50_DIFF_MS:.1f} ms",
                "ok": value <= TARGET_P50_DIFF_MS,
            }
        )
    for check in checks:
        shown = (
            f"{check['value']:+.2f} ms"
            if check["what"].startswith("c1 p50")
            else f"{check['value']:.2f}x"
        )
        verdict = "ok" if check["ok"] else "missed"
        print(f"target {check['what']}: {shown} ({check['target']}: {verdict})")
    if not checks:
        print("no target measured (they need 1 and 32 connections, delays 0 and 5)")
    return checks, all(check["ok"] for check in checks)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Throughput, latency and batch sizes of deepaas-run with the "
        "adaptive batch window, fixed windows and no batching, on a torch MLP."
    )
    add_run_options(
        parser,
        connections=CONNECTIONS,
        plugins=PLUGIN_DIST,
        connections_help="wrk connections, comma-separated",
        loop_help="event loop of every server",
    )
    parser.set_defaults(rounds=2, duration=5.0)
    parser.add_argument(
        "--delays",
        type=int_list,
        default=DELAYS_MS,
        metavar="MS,...",
        help="--max-batch-delay of the fixed-window servers "
        f"(default: {','.join(map(str, DELAYS_MS))})",
    )
    parser.add_argument(
        "--devices",
        default="cpu",
        help="deepaas-run --devices of every server (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="deepaas-run --workers of every server (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="--max-batch-size of the batching servers (default: the plugin's, 32)",
    )
    parser.add_argument(
        "--no-compute",
        action="store_true",
        help="skip measuring the model's per-item compute without a server",
    )
    args = checked_run_options(parser, parser.parse_args(argv))
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.batch_size is not None and args.batch_size < 2:
        parser.error("--batch-size must be >= 2 (1 is the 'off' server)")
    if any(d < 0 for d in args.delays) or len(set(args.delays)) != len(args.delays):
        parser.error("--delays must be distinct and >= 0")
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
    check_deepaas_flags(deepaas_run_path())
    servers = make_servers(workdir, args)
    off = servers[-1]
    report["servers"] = {s.label: " ".join(s.argv) for s in servers}
    problems: list[str] = []
    report["problems"] = problems
    try:
        for server in servers:
            server.start()
        for server in servers:
            wait_ready(server, BENCH_QUERY, timeout=STARTUP_TIMEOUT_S)

        problems += check_windows(servers, expected_windows(args))
        problems += check_answers(off, servers[:-1], args.devices)
        if problems:
            print("INVALID: the servers are not what they should be:")
            for problem in problems:
                print(f"  - {problem}")
            return 1

        print(
            f"wrk -t1 -c{{{','.join(map(str, args.connections))}}} "
            f"-d{args.duration:g}s POST {PREDICT_PATH}{BENCH_QUERY}, "
            f"loop={args.loop}, devices={args.devices}, workers={args.workers}, "
            f"{args.rounds} round(s), servers {', '.join(s.label for s in servers)} "
            f"(the first rotates)",
            flush=True,
        )
        if args.warmup > 0:
            for server in servers:
                res = run_wrk(
                    wrk,
                    server.base_url + BENCH_QUERY,
                    args.warmup,
                    max(args.connections),
                    1,
                )
                if res.non_2xx or res.errors:
                    problems.append(
                        f"warm-up {server.label}: {res.non_2xx} non-2xx, "
                        f"{res.errors} socket errors"
                    )
        runs = run_rounds(wrk, args, servers, problems)
    finally:
        left: list[int] = []
        for server in servers:
            left += server.stop()
        left += [pid for pid in live_children() if pid not in left]
        report["left_behind"] = left
        if left:
            print(f"ERROR: processes left behind: {left}", file=sys.stderr)

    summary = summarize(runs, servers, args.connections)
    print()
    print_summary(summary, servers, args.connections, args.rounds)
    checks, all_ok = check_targets(summary, args)
    valid = not problems and not left
    verdict = "INVALID" if not valid else "PASS" if all_ok else "FAIL"
    print(f"verdict: {verdict}")
    if problems:
        print("INVALID run (figures not to be trusted):")
        for problem in problems:
            print(f"  - {problem}")

    report.update(
        runs=[
            {**{k: v for k, v in r.items() if k != "wrk"}, "wrk": asdict(r["wrk"])}
            for r in runs
        ],
        summary=[
            {"connections": c, "server": label, **row}
            for (c, label), row in summary.items()
        ],
        checks=checks,
        valid=valid,
        verdict=verdict,
    )
    if not valid:
        return 1
    return 3 if args.strict and verdict == "FAIL" else 0


def print_compute(compute: dict[str, Any]) -> None:
    """Print the model's per-item compute measured without a server."""
    rows = {row["batch"]: row for row in compute["rows"]}
    one, many = rows.get(1), rows.get(32)
    if one and many:
        print(
            f"model compute without a server (torch {compute['torch']}, 1 thread): "
            f"{one['item_ms']:.2f} ms/item at batch 1, {many['item_ms']:.2f} "
            f"ms/item at batch 32 ({one['item_ms'] / many['item_ms']:.1f}x cheaper)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    wrk = find_wrk()
    signal.signal(signal.SIGTERM, _on_sigterm)
    report: dict[str, Any] = {
        "benchmark": "batching",
        "config": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "delays_ms": args.delays,
            "devices": args.devices,
            "workers": args.workers,
            "batch_size": args.batch_size,
            "loop": args.loop,
            "url": PREDICT_PATH + BENCH_QUERY,
        },
        "machine": machine_info(wrk),
        "targets": {
            "connections": TARGET_CONNECTIONS,
            "vs_fixed": TARGET_VS_FIXED,
            "fixed_ms": TARGET_FIXED_MS,
            "vs_off": TARGET_VS_OFF,
            "c1_p50_diff_ms": TARGET_P50_DIFF_MS,
        },
        "verdict": "INVALID",
        "valid": False,
    }
    status = 2
    installed_plugin = False
    try:
        ensure_torch()
        installed_plugin = ensure_plugin()
        if not args.no_compute:
            compute = measure_compute()
            report["compute"] = compute
            if compute:
                print_compute(compute)
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
            uninstall_dist(PLUGIN_DIST)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
            print(f"results written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
