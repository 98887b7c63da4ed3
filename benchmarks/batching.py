"""Batching benchmark: ``deepaas-run`` with dynamic batching on and off.

Serves the ``bench_mlp`` plugin (``benchmarks/mlp_plugin``: a memory-bound
torch MLP of four 2048x2048 layers, one thread) from two ``deepaas-run``
processes started side by side with the same settings but one:

- **on**: the plugin's own batching (``predict_batch``, up to 32 requests,
  no delay), or what ``--batch-size``/``--batch-delay`` say;
- **off**: ``--max-batch-size 1`` (every request is one ``predict`` call).

Each round measures both with wrk, alternating which goes first: throughput
at ``--connections`` (32) connections, then latency at 1 connection. Prints
the per-round figures, the throughput ratio on/off of the medians (target
>= 3.0) and the difference of the median p50 latencies at 1 connection,
on - off (target <= 1 ms).

Usage::

    .venv/bin/python benchmarks/batching.py [--rounds 3] [--duration 10]

Exit status: 0 measured (PASS or FAIL is printed; ``--strict`` turns FAIL into
3), 1 the run is invalid (wrong or misrouted answers, non-2xx responses,
socket errors, batches on the "off" server, a process left behind), 2 the
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
TARGET_RATIO = 3.0
TARGET_P50_DIFF_MS = 1.0
STARTUP_TIMEOUT_S = 120.0  # importing torch and building the model
SETTLE_TIMEOUT_S = 60.0
REQUIRED_FLAGS = ("--max-batch-size", "--max-batch-delay", "--devices")
OFF, ON = "off", "on"


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


def make_servers(workdir: Path, args: argparse.Namespace) -> tuple[Server, Server]:
    """Build the (off, on) server descriptions on free ports."""
    off_port, on_port = free_ports(2)
    env = deepaas_env(args.loop)
    run = str(deepaas_run_path())

    def server(label: str, port: int, extra: list[str]) -> Server:
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
            *extra,
        ]
        return Server(label, argv, env, port, workdir, PREDICT_PATH)

    on_extra: list[str] = []
    if args.batch_size is not None:
        on_extra += ["--max-batch-size", str(args.batch_size)]
    if args.batch_delay is not None:
        on_extra += ["--max-batch-delay", str(args.batch_delay)]
    return (
        server(OFF, off_port, ["--max-batch-size", "1"]),
        server(ON, on_port, on_extra),
    )


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


def check_answers(off: Server, on: Server, devices: str) -> list[str]:
    """Both servers agree, on the expected device, and batched answers are routed.

    32 concurrent requests with distinct seeds go to the batching server; each
    must get the answer the other server gives to its seed alone.
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
    for seed in (0, 1):
        got, problem = _predictions(on, seed)
        if problem or seed not in reference:
            problems.append(problem or f"no reference answer for ?seed={seed}")
        elif not _same(got, reference[seed]):
            problems.append(f"?seed={seed}: on {got} != off {reference[seed]}")
    with concurrent.futures.ThreadPoolExecutor(len(seeds)) as pool:
        answers = dict(
            zip(seeds, pool.map(lambda s: _predictions(on, s), seeds), strict=True)
        )
    for seed, (got, problem) in answers.items():
        if problem:
            problems.append(problem)
        elif seed in reference and not _same(got, reference[seed]):
            problems.append(
                f"concurrent ?seed={seed} on {on.label}: {got} != {reference[seed]} "
                f"(results routed to the wrong request?)"
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


def _fmt(value: float | None, width: int, spec: str) -> str:
    """``value`` formatted by ``spec``, or "-", right-aligned in ``width``."""
    return format("-" if value is None else format(value, spec), f">{width}")


def print_table(rounds: list[dict[str, Any]], connections: int) -> None:
    """Print the per-round figures."""
    c = f"c{connections}"
    header = (
        f"{'round':>5}  {'server':<6} {c + ' req/s':>11} {c + ' p50':>8} "
        f"{'batch':>6}  {'c1 req/s':>9} {'c1 p50':>8} {'c1 p99':>8} "
        f"{'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for entry in rounds:
        for label in entry["order"]:
            tput: WrkResult = entry[label]["throughput"]
            lat: WrkResult = entry[label]["latency"]
            errors = tput.non_2xx + tput.errors + lat.non_2xx + lat.errors
            print(
                f"{entry['round']:>5}  {label:<6} {tput.rps:>11.1f} "
                f"{tput.p50_ms:>8.2f} {_fmt(entry[label]['batch'], 6, '.1f')}  "
                f"{lat.rps:>9.1f} {lat.p50_ms:>8.2f} {lat.p99_ms:>8.2f} "
                f"{errors:>6}"
            )
        print(
            f"{'':>5}  {'on/off':<6} {entry['ratio']:>10.2f}x "
            f"{'':>17}c1 p50 on-off {entry['p50_diff_ms']:+.2f} ms"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Throughput and latency of deepaas-run with dynamic "
        "batching on and off (--max-batch-size 1), on a torch MLP."
    )
    add_run_options(
        parser,
        connections=32,
        plugins=PLUGIN_DIST,
        connections_help="wrk connections of the throughput runs",
        loop_help="event loop of both servers",
    )
    parser.add_argument(
        "--devices",
        default="cpu",
        help="deepaas-run --devices of both servers (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="deepaas-run --workers of both servers (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="--max-batch-size of the batching server (default: the plugin's, 32)",
    )
    parser.add_argument(
        "--batch-delay",
        type=int,
        metavar="MS",
        help="--max-batch-delay of the batching server (default: the plugin's, 0)",
    )
    parser.add_argument(
        "--no-compute",
        action="store_true",
        help="skip measuring the model's per-item compute without a server",
    )
    args = checked_run_options(parser, parser.parse_args(argv))
    if args.connections < 1 or args.workers < 1:
        parser.error("--connections and --workers must be >= 1")
    if args.batch_size is not None and args.batch_size < 2:
        parser.error("--batch-size must be >= 2 (1 is the 'off' server)")
    if args.batch_delay is not None and args.batch_delay < 0:
        parser.error("--batch-delay must be >= 0")
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit so that the servers get stopped."""
    raise SystemExit(128 + signum)


def run_rounds(
    wrk: str, args: argparse.Namespace, off: Server, on: Server, problems: list[str]
) -> list[dict[str, Any]]:
    """Measure both servers ``--rounds`` times, alternating which goes first."""
    rounds: list[dict[str, Any]] = []
    for number in range(1, args.rounds + 1):
        order = (off, on) if number % 2 else (on, off)
        entry: dict[str, Any] = {"round": number, "order": [s.label for s in order]}
        for server in order:
            tput, batch = measure(wrk, server, args, args.connections)
            lat, _ = measure(wrk, server, args, 1)
            entry[server.label] = {"throughput": tput, "latency": lat, "batch": batch}
            for name, res in ((f"c{args.connections}", tput), ("c1", lat)):
                if res.non_2xx or res.errors:
                    problems.append(
                        f"round {number} {server.label} {name}: {res.non_2xx} "
                        f"non-2xx, {res.errors} socket errors {res.socket_errors}"
                    )
            if server is off and batch is not None and batch > 1.0:
                problems.append(
                    f"round {number}: the 'off' server formed batches "
                    f"(mean {batch:.2f}): --max-batch-size 1 is not honoured"
                )
        off_rps = entry[OFF]["throughput"].rps
        entry["ratio"] = entry[ON]["throughput"].rps / off_rps if off_rps else 0.0
        entry["p50_diff_ms"] = (
            entry[ON]["latency"].p50_ms - entry[OFF]["latency"].p50_ms
        )
        rounds.append(entry)
        print(
            f"  round {number}: c{args.connections} off "
            f"{entry[OFF]['throughput'].rps:.1f} req/s, on "
            f"{entry[ON]['throughput'].rps:.1f} req/s; c1 p50 off "
            f"{entry[OFF]['latency'].p50_ms:.2f} ms, on "
            f"{entry[ON]['latency'].p50_ms:.2f} ms",
            flush=True,
        )
    return rounds


def benchmark(
    args: argparse.Namespace, wrk: str, workdir: Path, report: dict[str, Any]
) -> int:
    """Start the servers, measure them and print the results; return the status."""
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise BenchError("--loop uvloop given but uvloop is not installed")
    check_deepaas_flags(deepaas_run_path())
    off, on = make_servers(workdir, args)
    servers = [off, on]
    report["servers"] = {s.label: " ".join(s.argv) for s in servers}
    problems: list[str] = []
    report["problems"] = problems
    try:
        for server in servers:
            server.start()
        for server in servers:
            wait_ready(server, BENCH_QUERY, timeout=STARTUP_TIMEOUT_S)

        problems += check_answers(off, on, args.devices)
        if problems:
            print("INVALID: the servers do not give the expected answers:")
            for problem in problems:
                print(f"  - {problem}")
            return 1

        print(
            f"wrk -t1 -c{args.connections} (throughput) and -c1 (latency), "
            f"-d{args.duration:g}s POST {PREDICT_PATH}{BENCH_QUERY}, "
            f"loop={args.loop}, devices={args.devices}, workers={args.workers}, "
            f"{args.rounds} rounds (order alternates)"
        )
        if args.warmup > 0:
            for server in servers:
                res = run_wrk(
                    wrk,
                    server.base_url + BENCH_QUERY,
                    args.warmup,
                    args.connections,
                    1,
                )
                if res.non_2xx or res.errors:
                    problems.append(
                        f"warm-up {server.label}: {res.non_2xx} non-2xx, "
                        f"{res.errors} socket errors"
                    )
        rounds = run_rounds(wrk, args, off, on, problems)
    finally:
        left: list[int] = []
        for server in servers:
            left += server.stop()
        left += [pid for pid in live_children() if pid not in left]
        report["left_behind"] = left
        if left:
            print(f"ERROR: processes left behind: {left}", file=sys.stderr)

    def median(label: str, kind: str, attr: str) -> float:
        return float(statistics.median(getattr(e[label][kind], attr) for e in rounds))

    rps = {label: median(label, "throughput", "rps") for label in (OFF, ON)}
    p50 = {label: median(label, "latency", "p50_ms") for label in (OFF, ON)}
    ratio = rps[ON] / rps[OFF] if rps[OFF] else 0.0
    p50_diff = p50[ON] - p50[OFF]
    ratio_ok = ratio >= TARGET_RATIO
    p50_ok = p50_diff <= TARGET_P50_DIFF_MS
    valid = not problems and not left
    verdict = "INVALID" if not valid else "PASS" if ratio_ok and p50_ok else "FAIL"

    print()
    print_table(rounds, args.connections)
    print()
    c = f"c{args.connections}"
    print(f"median {c} throughput: off {rps[OFF]:.1f} req/s, on {rps[ON]:.1f} req/s")
    print(
        f"throughput ratio on/off at {args.connections} connections: {ratio:.2f}x "
        f"(target >= {TARGET_RATIO:.1f}x: {'ok' if ratio_ok else 'missed'})"
    )
    print(f"median c1 p50 latency: off {p50[OFF]:.2f} ms, on {p50[ON]:.2f} ms")
    print(
        f"p50 difference on - off at 1 connection: {p50_diff:+.2f} ms "
        f"(target <= {TARGET_P50_DIFF_MS:.1f} ms: {'ok' if p50_ok else 'missed'})"
    )
    print(f"verdict: {verdict}")
    if problems:
        print("INVALID run (figures not to be trusted):")
        for problem in problems:
            print(f"  - {problem}")

    report.update(
        rounds=[
            {
                "round": e["round"],
                "order": e["order"],
                **{
                    label: {
                        "throughput": asdict(e[label]["throughput"]),
                        "latency": asdict(e[label]["latency"]),
                        "mean_batch_size": e[label]["batch"],
                    }
                    for label in (OFF, ON)
                },
                "ratio": e["ratio"],
                "p50_diff_ms": e["p50_diff_ms"],
            }
            for e in rounds
        ],
        median_rps=rps,
        median_c1_p50_ms=p50,
        ratio=ratio,
        p50_diff_ms=p50_diff,
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
            "devices": args.devices,
            "workers": args.workers,
            "batch_size": args.batch_size,
            "batch_delay_ms": args.batch_delay,
            "loop": args.loop,
            "url": PREDICT_PATH + BENCH_QUERY,
        },
        "machine": machine_info(wrk),
        "targets": {"ratio": TARGET_RATIO, "p50_diff_ms": TARGET_P50_DIFF_MS},
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
