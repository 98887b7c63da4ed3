"""The steps of the GPU check (``run.py``), a to f.

Each step is ``fn(ctx, step)``: it records checks (pass, fail, or skipped
with a reason), figures and notes on ``step``, keeps its files in
``step.dir``, and stops whatever it started before it returns. It raises
:class:`Skip` when it cannot run at all here, :class:`Failure` when it cannot
go on; ``run.py`` bounds it with a deadline.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import math
import os
import pkgutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _support import (
    HERE,
    MIB,
    REPO,
    Context,
    Deepaas,
    Failure,
    GpuWatch,
    Skip,
    Step,
    http,
    metric_sum,
    watch_gpus,
)

PROBE = "gpu_probe"
# Where each model comes from when its entry point is not installed:
# (module, folder to put on PYTHONPATH). gpu_probe is never installed.
SOURCES = {
    "demo_torch": ("deepaas_example.torch_mlp", REPO / "plugins-example"),
    "bench_mlp": ("deepaas_bench_mlp", REPO / "benchmarks" / "mlp_plugin"),
    PROBE: ("deepaas_gpu_probe", HERE / "plugins"),
}
TARGET_BATCH_RATIO = 5.0
FREED_WITHIN_S = 5.0
# Step a: how far deepaas's reading may be from the nvidia-smi readings taken
# just before and just after it (both ways, beyond the range of the two).
TOLERANCE = {
    "memory.used": "64 MiB",
    "utilization.gpu": "10 percentage points",
    "temperature.gpu": "3 °C",
    "power.draw": "the larger of 15 W and 10 %",
}


def models(ctx: Context, names: Sequence[str]) -> tuple[list[str], list[Path]]:
    """deepaas-run arguments serving ``names``, and the PYTHONPATH they need:
    an installed entry point by ``--model-name``, else ``--plugin NAME=module``."""
    installed = [n for n in names if n != PROBE and n in ctx.info["entry_points"]]
    args = ["--model-name", ",".join(installed)] if installed else []
    path = []
    for name in names:
        if name not in installed:
            module, folder = SOURCES[name]
            args += ["--plugin", f"{name}={module}"]
            path.append(folder)
    return args, path


def probe_env(ctx: Context, hold_mib: int = 0) -> dict[str, str]:
    env = {"GPU_PROBE_HOLD_MIB": str(hold_mib)}
    if ctx.selftest:
        env["GPU_PROBE_SELFTEST"] = "1"
    return env


def cuda_devices(srv: Deepaas) -> list[dict[str, Any]]:
    return [d for d in srv.system().get("devices", []) if d.get("kind") == "cuda"]


def expected_device(ctx: Context) -> str:
    """What torch reports as the device of a GPU worker's work."""
    return "cpu" if ctx.selftest else "cuda:0"


# -- a: NVML inventory and telemetry vs nvidia-smi --------------------------------


def telemetry(ctx: Context, step: Step) -> None:
    from deepaas.engine import devices
    from deepaas.engine.telemetry import Telemetry

    step.figures["deepaas_module"] = devices.__file__
    handler = logging.FileHandler(step.dir / "deepaas.log")
    said = _Said()
    logger = logging.getLogger("deepaas")
    level = logger.level
    logger.addHandler(handler)
    logger.addHandler(said)
    logger.setLevel(logging.DEBUG)
    try:
        nvml = devices.Nvml.open()
        if nvml is None:
            raise Skip(f"deepaas cannot open NVML: {said.last or 'it did not say why'}")
        step.check("deepaas opens NVML", True)
        try:
            gpus, usable = nvml.inventory()
            smi_error = None
            try:
                before = ctx.smi.gpus()
            except Failure as exc:
                smi_error, before = str(exc), []
            samples = Telemetry(nvml, gpus).refresh()
            after = ctx.smi.gpus() if smi_error is None else []
        finally:
            nvml.close()
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(said)
        logger.setLevel(level)
        handler.close()

    seen = [
        {
            "index": gpu.index,
            "uuid": gpu.uuid,
            "name": gpu.name,
            "memory_total_bytes": gpu.memory_total,
            "sample": _asdict(samples.get(gpu.label)),
        }
        for gpu in gpus
    ]
    step.figures["deepaas"] = seen
    step.figures["usable_devices"] = [d.label for d in usable]
    step.figures["nvidia_smi"] = {"before": before, "after": after}
    step.figures["tolerances"] = TOLERANCE
    step.check("NVML reports a GPU", bool(gpus), f"{len(gpus)} GPU(s)")
    if smi_error is not None:
        step.skip("agrees with nvidia-smi", smi_error)
        step.summary = f"{len(gpus)} GPU(s); nvidia-smi: {smi_error}"
        return
    step.check(
        "as many GPUs as nvidia-smi",
        len(before) == len(gpus),
        f"deepaas {len(gpus)}, nvidia-smi {len(before)}",
    )
    deltas = []
    for gpu in gpus:
        row = next((r for r in before if r["index"] == str(gpu.index)), None)
        later = next((r for r in after if r["index"] == str(gpu.index)), None)
        if row is None or later is None:
            step.check(f"GPU {gpu.index} in nvidia-smi", False, "not listed")
            continue
        deltas.append(_compare(step, gpu, samples.get(gpu.label), row, later, ctx))
    names = sorted({gpu.name for gpu in gpus})
    step.summary = f"{len(gpus)} GPU(s) ({', '.join(names)}); " + "; ".join(deltas)


class _Said(logging.Handler):
    """The last message deepaas logged (why NVML did not open)."""

    last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


def _asdict(sample: Any) -> dict[str, Any] | None:
    import dataclasses

    return None if sample is None else dataclasses.asdict(sample)


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _compare(
    step: Step,
    gpu: Any,
    sample: Any,
    before: dict[str, str | None],
    after: dict[str, str | None],
    ctx: Context,
) -> str:
    """Check one GPU against its two nvidia-smi rows; a line of deltas."""
    label = f"GPU {gpu.index}"
    total_mib = None if gpu.memory_total is None else gpu.memory_total // MIB
    mismatches = [
        f"{field}: deepaas {ours!r}, nvidia-smi {theirs!r}"
        for field, ours, theirs in (
            ("uuid", gpu.uuid, before["uuid"]),
            ("name", gpu.name, before["name"]),
            ("memory.total MiB", total_mib, _int(before["memory.total"])),
        )
        if ours != theirs
    ]
    step.check(
        f"{label} index, uuid, name, memory.total agree exactly",
        not mismatches,
        "; ".join(mismatches) or f"{gpu.uuid}, {gpu.name}, {total_mib} MiB",
    )
    if sample is None:
        step.check(f"{label} telemetry sample", False, "deepaas read nothing")
        return f"{label}: no sample"
    ours = {
        "memory.used": None
        if sample.memory_used_bytes is None
        else sample.memory_used_bytes / MIB,
        "utilization.gpu": None
        if sample.utilization_ratio is None
        else sample.utilization_ratio * 100,
        "temperature.gpu": sample.temperature_celsius,
        "power.draw": sample.power_watts,
    }
    units = {
        "memory.used": "MiB",
        "utilization.gpu": "pp",
        "temperature.gpu": "°C",
        "power.draw": "W",
    }
    parts = []
    for field, value in ours.items():
        low_high = [_number(before[field]), _number(after[field])]
        smi = [x for x in low_high if x is not None]
        if value is None or not smi:
            step.skip(
                f"{label} {field}",
                f"not reported (deepaas {value}, nvidia-smi {before[field]})",
            )
            continue
        low, high = min(smi), max(smi)
        slack = {
            "memory.used": 64.0,
            "utilization.gpu": 10.0,
            "temperature.gpu": 3.0,
            "power.draw": max(15.0, 0.10 * high),
        }[field]
        delta = 0.0 if low <= value <= high else min(value - low, value - high, key=abs)
        detail = (
            f"deepaas {value:.1f}, nvidia-smi {low:g}..{high:g} "
            f"(Δ {delta:+.1f} {units[field]}, tolerance {TOLERANCE[field]})"
        )
        ok = abs(delta) <= slack
        if not ok and field == "memory.used" and not ctx.selftest:
            with contextlib.suppress(Failure):
                reserved = ctx.smi.field("memory.reserved")[gpu.index or 0]
                detail += (
                    f"; nvidia-smi memory.reserved {reserved} MiB (nvidia-smi "
                    "leaves reserved memory out of memory.used; NVML's v1 "
                    "memory info counts it)"
                )
        step.check(f"{label} {field} within tolerance", ok, detail)
        parts.append(f"Δ{field.split('.')[0]} {delta:+.1f} {units[field]}")
    return f"{label}: " + ", ".join(parts)


def _int(value: str | None) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


# -- b: deepaas-run --devices auto --workers 2 ------------------------------------

DEMO_POINTS = [(0.0, 0.0), (0.3, -0.2), (1.5, 1.5), (-2.0, 0.5)]
REFERENCE = """
import json, sys
from deepaas_example import torch_mlp
points = json.loads(sys.argv[1])
print(json.dumps([torch_mlp.predict(x=x, y=y) for x, y in points]))
"""


def serving(ctx: Context, step: Step) -> None:
    ctx.require_gpu()
    names = ["demo_torch", PROBE]
    args, path = models(ctx, names)
    weights = step.dir / "demo_torch-weights.pt"  # absent: the seeded, untrained model
    env = {"DEEPAAS_EXAMPLE_WEIGHTS": str(weights), **probe_env(ctx)}
    argv = ["--devices", "auto", "--workers", "2", *args]
    with ctx.server(step, "server", argv, env, path) as srv:
        srv.wait_ready(step, workers=4, timeout=120)
        gpus = cuda_devices(srv)
        labels = [d["label"] for d in gpus]
        step.figures["devices"] = labels
        if not step.check("deepaas selected a GPU", bool(gpus), f"{labels}"):
            return
        for name in names:
            placed = sorted(srv.workers(name), key=lambda w: w["index"])
            got = [w["device"] for w in placed]
            want = [labels[i % len(labels)] for i in range(2)]
            step.check(
                f"both {name} workers placed round-robin on the GPU(s)",
                got == want,
                f"workers on {got}, expected {want}",
            )
        _demo_predictions(ctx, step, srv, env, path)
        _probe_answers(ctx, step, srv, gpus)
        _gauges_under_load(ctx, step, srv)


def _demo_predictions(
    ctx: Context, step: Step, srv: Deepaas, env: dict[str, str], path: list[Path]
) -> None:
    reference_env = ctx.child_env({**env, "CUDA_VISIBLE_DEVICES": ""}, path)
    proc = subprocess.run(
        [ctx.python, "-c", REFERENCE, json.dumps(DEMO_POINTS)],
        capture_output=True,
        text=True,
        env=reference_env,
        cwd=step.dir,
        timeout=step.budget(60),
    )
    if proc.returncode != 0:
        step.check(
            "demo_torch reference computed",
            False,
            f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}",
        )
        return
    expected = json.loads(proc.stdout.strip().splitlines()[-1])
    got = []
    for x, y in DEMO_POINTS:
        status, body = srv.predict("demo_torch", f"?x={x}&y={y}")
        got.append(body.get("predictions") if status == 200 else f"HTTP {status}")
    step.figures["demo_torch"] = {"got": got, "expected": expected}
    step.check(
        "demo_torch predictions equal the plugin's own (in a plain process)",
        got == expected,
        f"got {got}, expected {expected}",
    )
    step.notes.append(
        "demo_torch's predict() runs on the CPU even in a GPU worker (its "
        "_model() never moves to DEEPAAS_DEVICE): GPU load comes from gpu_probe"
    )


def _probe_answers(
    ctx: Context, step: Step, srv: Deepaas, gpus: list[dict[str, Any]]
) -> None:
    n = 1000
    exact = n * (n + 1) * (2 * n + 1) / 6
    size = 256 if ctx.selftest else 2048
    query = f"?n={n}&seconds=0.3&size={size}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: srv.predict(PROBE, query), range(8)))
    workers = {w["pid"]: w for w in srv.workers(PROBE)}
    uuids = {d["label"]: d["uuid"] for d in gpus}
    names = {d["label"]: d["name"] for d in gpus}
    problems = []
    pids = set()
    for status, body in answers:
        if status != 200:
            problems.append(f"HTTP {status}: {body}")
            continue
        got = body["predictions"]
        pids.add(got["pid"])
        worker = workers.get(got["pid"])
        if got["sum_squares"] != exact:
            problems.append(f"sum_squares {got['sum_squares']} != {exact}")
        if got["device"] != expected_device(ctx):
            problems.append(f"ran on {got['device']}")
        if worker is None:
            problems.append(f"answered by pid {got['pid']}, not a worker")
            continue
        visible = got["env"]["CUDA_VISIBLE_DEVICES"]
        if visible != uuids.get(worker["device"]):
            problems.append(
                f"worker on {worker['device']} sees CUDA_VISIBLE_DEVICES={visible}"
            )
        if not ctx.selftest and got["cuda_name"] != names.get(worker["device"]):
            problems.append(f"torch names the GPU {got['cuda_name']!r}")
    step.figures["gpu_probe_answers"] = [a[1] for a in answers]
    step.check(
        "gpu_probe: 8 concurrent answers right, on the worker's own GPU",
        not problems,
        "; ".join(problems) or f"sum of squares exact, device {expected_device(ctx)}",
    )
    step.check(
        "both gpu_probe workers answered",
        len(pids) == 2,
        f"answered by pids {sorted(pids)} of workers {sorted(workers)}",
    )


def _gauges_under_load(ctx: Context, step: Step, srv: Deepaas) -> None:
    duration = 1.5 if ctx.selftest else 6.0
    query = "?reps=1&size=128" if ctx.selftest else "?reps=8&size=4096"
    url = f"{srv.url}/v2/models/{PROBE}/predict/{query}"
    load = ctx.start_load(step, "b", url, 8, duration)
    watch = watch_gpus(srv, load)
    result = load.result(step, duration + 60)
    step.figures["load"] = result
    step.figures["gpu_gauges_peak"] = watch.peaks
    step.figures["utilization_readings"] = watch.utilization
    step.check(
        "load answered 200",
        result["ok"] > 0 and not result["errors"],
        f"{result['ok']} answers, {result['rps']:.0f} req/s, "
        f"statuses {result['statuses']}",
    )
    step.check(
        "/metrics scraped during the load", watch.scrapes > 0, f"{watch.scrapes}"
    )
    fake = " (the fake NVML's values)" if ctx.selftest else ""
    for field, unit, scale in (
        ("utilization_ratio", "%", 100),
        ("memory_used_bytes", "MiB", 1 / MIB),
        ("power_watts", "W", 1),
        ("temperature_celsius", "°C", 1),
    ):
        peak = watch.peak(field)
        step.check(
            f"deepaas_gpu_{field} > 0 during the load",
            peak is not None and peak > 0,
            "absent" if peak is None else f"peak {peak * scale:.1f} {unit}{fake}",
        )
    util = watch.peak("utilization_ratio")
    step.summary = (
        f"workers on {step.figures.get('devices')}; load {result['rps']:.0f} req/s; "
        f"GPU util peak {0 if util is None else util * 100:.0f}%"
    )


# -- c: batching on the GPU ----------------------------------------------------------


def batching(ctx: Context, step: Step) -> None:
    ctx.require_gpu()
    import batching as bench  # benchmarks/batching.py: its checks and metrics

    devices = "cpu" if ctx.selftest else "auto"  # bench_mlp cannot fake a GPU
    duration, warmup, rounds = (2.0, 0.5, 1) if ctx.selftest else (8.0, 2.0, 2)
    args, path = models(ctx, ["bench_mlp"])
    common = ["--devices", devices, "--workers", "1", *args]
    with contextlib.ExitStack() as stack:
        off = stack.enter_context(
            ctx.server(step, "off", [*common, "--max-batch-size", "1"], path=path)
        )
        on = stack.enter_context(ctx.server(step, "on", common, path=path))
        for srv in (off, on):
            srv.server.path = bench.PREDICT_PATH
        for srv in (off, on):
            srv.wait_ready(step, workers=1, timeout=120)
        try:
            problems = bench.check_answers(off.server, [on.server], devices)
        except bench.BenchError as exc:
            raise Failure(str(exc)) from None
        status, body = on.predict("bench_mlp", "?seed=1")
        device = body.get("predictions", {}).get("device") if status == 200 else None
        if device != expected_device(ctx) and not ctx.selftest:
            problems.append(f"bench_mlp ran on {device!r}, not cuda:0")
        step.check(
            "batched and unbatched answers agree (32 concurrent, routed right)",
            not problems,
            "; ".join(problems[:5]) or f"on {device}",
        )
        for srv in (off, on):
            _run_load(ctx, step, srv, "warmup", warmup)
        measured: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for number in range(rounds):
            for srv in (off, on) if number % 2 == 0 else (on, off):
                bench.wait_idle(srv.server, timeout=step.budget(60))
                measured[srv.label].append(_measure(ctx, step, srv, duration, bench))
    step.figures["rounds"] = measured
    _judge_batching(ctx, step, measured)


def _run_load(
    ctx: Context, step: Step, srv: Deepaas, label: str, duration: float
) -> tuple[dict[str, Any], GpuWatch]:
    url = f"{srv.url}{srv.server.path}?seed=1"
    load = ctx.start_load(step, f"{srv.label}-{label}", url, 32, duration)
    watch = watch_gpus(srv, load)
    return load.result(step, duration + 60), watch


def _measure(
    ctx: Context, step: Step, srv: Deepaas, duration: float, bench: Any
) -> dict[str, Any]:
    def totals() -> tuple[float, float, float, float]:
        samples = srv.metrics()
        model = {"model": "bench_mlp"}
        return (
            metric_sum(samples, "deepaas_batch_size_sum", **model) or 0.0,
            metric_sum(samples, "deepaas_batch_size_count", **model) or 0.0,
            metric_sum(samples, "deepaas_compute_duration_seconds_sum", **model) or 0.0,
            metric_sum(samples, "deepaas_compute_duration_seconds_count", **model)
            or 0.0,
        )

    before = totals()
    result, watch = _run_load(ctx, step, srv, "measure", duration)
    bench.wait_idle(srv.server, timeout=step.budget(60))
    after = totals()
    items, calls = after[0] - before[0], after[1] - before[1]
    seconds = after[2] - before[2]
    util = watch.peak("utilization_ratio")
    return {
        "rps": round(result["rps"], 1),
        "errors": result["errors"],
        "p50_ms": result["p50_ms"],
        "mean_batch": round(items / calls, 2) if calls else None,
        "compute_ms_per_request": round(seconds / items * 1000, 3) if items else None,
        "gpu_util_peak": None if util is None else round(util, 3),
        "gpu_util_mean": (
            round(statistics.fmean(watch.utilization), 3) if watch.utilization else None
        ),
        "processes": result["processes"],
    }


def _judge_batching(
    ctx: Context, step: Step, measured: dict[str, list[dict[str, Any]]]
) -> None:
    errors = sum(r["errors"] for runs in measured.values() for r in runs)
    step.check("every load request answered 200", errors == 0, f"{errors} not 200")
    off_batches = [r["mean_batch"] for r in measured["off"] if r["mean_batch"]]
    step.check(
        "--max-batch-size 1 makes no batches",
        all(b == 1 for b in off_batches),
        f"mean batch off: {off_batches}",
    )
    on_batches = [r["mean_batch"] for r in measured["on"] if r["mean_batch"]]
    off_rps = statistics.median(r["rps"] for r in measured["off"])
    on_rps = statistics.median(r["rps"] for r in measured["on"])
    ratio = on_rps / off_rps if off_rps else math.inf
    utils = [
        r["gpu_util_peak"] for r in measured["on"] if r["gpu_util_peak"] is not None
    ]
    step.figures.update(
        off_rps=off_rps, on_rps=on_rps, ratio=round(ratio, 2), on_mean_batch=on_batches
    )
    step.summary = (
        f"32 conns: batched {on_rps:.0f} req/s, unbatched {off_rps:.0f} req/s, "
        f"ratio {ratio:.2f}x (target ≥ {TARGET_BATCH_RATIO:g}x); mean batch "
        f"{on_batches}; GPU util peak {max(utils, default=0) * 100:.0f}%"
    )
    if ctx.no_cuda(step, f"throughput ratio ≥ {TARGET_BATCH_RATIO:g}x on the GPU"):
        step.summary += " (CPU, self-test)"
        ctx.no_cuda(step, "GPU utilisation seen in /metrics")
        return
    step.check(
        f"throughput ratio ≥ {TARGET_BATCH_RATIO:g}x on the GPU",
        ratio >= TARGET_BATCH_RATIO,
        f"{ratio:.2f}x ({on_rps:.0f} / {off_rps:.0f} req/s)",
    )
    step.check(
        "GPU utilisation seen in /metrics during the batched load",
        bool(utils) and max(utils) > 0,
        f"peaks {utils}",
    )


# -- d: a training with deepaas_gpus ------------------------------------------------


def training(ctx: Context, step: Step) -> None:
    ctx.require_gpu()
    args, path = models(ctx, [PROBE])
    argv = ["--devices", "auto", "--workers", "1", *args]
    with ctx.server(step, "server", argv, probe_env(ctx), path) as srv:
        srv.wait_ready(step, workers=1, timeout=120)
        gpus = cuda_devices(srv)
        if not step.check("deepaas selected a GPU", bool(gpus), f"{len(gpus)} GPU(s)"):
            return
        present = len(gpus)
        sizes = [1] if present == 1 else [1, present]
        for size in sizes:
            _train(ctx, step, srv, gpus, size)
        step.check(
            "a training ran with world size = GPUs present",
            max(sizes) == present,
            f"{present} GPU(s) present; trainings of {sizes}",
        )


def _train(
    ctx: Context, step: Step, srv: Deepaas, gpus: list[dict[str, Any]], size: int
) -> None:
    label = f"deepaas_gpus={size}"
    url = f"{srv.url}/v2/models/{PROBE}/train/"
    status, record = http("POST", f"{url}?deepaas_gpus={size}&steps=20")
    if not step.check(
        f"{label}: POST answered 200", status == 200, f"{status}: {record}"
    ):
        return
    uuid = record["uuid"]
    statuses = [record.get("status")]

    def finished() -> dict[str, Any] | None:
        got_status, got = http("GET", f"{url}{uuid}")
        if got_status != 200:
            raise Failure(f"GET training {uuid} answered {got_status}: {got}")
        if got.get("status") != statuses[-1]:
            statuses.append(got.get("status"))
        return got if got.get("status") in ("done", "error", "cancelled") else None

    started = time.monotonic()
    record = step.until(finished, f"training {uuid} ends", 120, interval=0.2)
    seconds = time.monotonic() - started
    with contextlib.suppress(OSError, Failure):
        _, log = http("GET", f"{url}{uuid}/logs")
        (step.dir / f"training-{size}.log").write_text(str(log))
    step.figures[label] = {"statuses": statuses, "record": record, "seconds": seconds}
    want_devices = [f"cuda:{i}" for i in range(size)]
    step.check(
        f"{label}: lease granted",
        record.get("gpus") == size
        and record.get("devices") == want_devices
        and "running" in statuses,
        f"gpus {record.get('gpus')}, devices {record.get('devices')}, "
        f"statuses {statuses}",
    )
    if not step.check(
        f"{label}: finished done",
        record.get("status") == "done",
        f"{record.get('status')}: {record.get('message')}",
    ):
        return
    output = record["result"]["output"]
    visible = (output["env"]["CUDA_VISIBLE_DEVICES"] or "").split(",")
    known = {d["uuid"] for d in gpus}
    step.check(
        f"{label}: CUDA_VISIBLE_DEVICES in the job names {size} of the server's GPU(s)",
        len(visible) == size and set(visible) <= known,
        f"CUDA_VISIBLE_DEVICES={output['env']['CUDA_VISIBLE_DEVICES']}, "
        f"DEEPAAS_DEVICES={output['env']['DEEPAAS_DEVICES']}",
    )
    ranks = output["ranks"]
    problems = [
        f"rank {r['rank']}: {what}"
        for r in ranks
        for what, bad in (
            ("all-reduce wrong", not r["all_reduce_ok"]),
            (f"world size {r['world_size']}", r["world_size"] != size),
            ("loss did not fall", not r["loss_last"] < r["loss_first"]),
            ("replicas differ", abs(r["replicas_spread"]) > 1e-6),
        )
        if bad
    ]
    backends = sorted({r["backend"] for r in ranks})
    step.check(
        f"{label}: data-parallel training of world size {size} finished",
        len(ranks) == size and not problems,
        "; ".join(problems)
        or f"backend {backends}, loss {ranks[0]['loss_first']} -> "
        f"{ranks[0]['loss_last']}, {seconds:.1f}s",
    )
    if not ctx.no_cuda(step, f"{label}: NCCL on the GPU"):
        names = {d["name"] for d in gpus}
        step.check(
            f"{label}: NCCL on the GPU",
            backends == ["nccl"] and all(r["cuda_name"] in names for r in ranks),
            f"backends {backends}, devices {[r['cuda_name'] for r in ranks]}",
        )
    step.summary = (
        f"{label}: lease {record.get('devices')}, CUDA_VISIBLE_DEVICES="
        f"{output['env']['CUDA_VISIBLE_DEVICES']}, world size {len(ranks)} "
        f"{backends}, {seconds:.1f}s"
    )


# -- e: a worker killed during GPU work ----------------------------------------------


def worker_kill(ctx: Context, step: Step) -> None:
    ctx.require_gpu()
    hold = 0 if ctx.selftest else 1024
    args, path = models(ctx, [PROBE])
    argv = ["--devices", "auto", "--workers", "1", *args]
    with ctx.server(step, "server", argv, probe_env(ctx, hold), path) as srv:
        srv.wait_ready(step, workers=1, timeout=120)
        (worker,) = srv.workers(PROBE)
        pid = worker["pid"]
        index = next(
            (d["index"] for d in cuda_devices(srv) if d["label"] == worker["device"]),
            0,
        )
        apps = None if ctx.selftest else _apps(ctx)
        held = None if apps is None else apps.get(pid)
        step.figures.update(pid=pid, held_mib=held, compute_apps_before=apps)

        answer: list[tuple[int | None, Any]] = []
        size = 256 if ctx.selftest else 4096
        query = f"?seconds=60&size={size}"

        def ask() -> None:  # on a thread: the answer, or why there is none
            try:
                answer.append(srv.predict(PROBE, query, timeout=90))
            except Exception as exc:
                answer.append((None, f"{type(exc).__name__}: {exc}"))

        thread = threading.Thread(target=ask, daemon=True)
        thread.start()
        step.until(
            lambda: any(w["in_flight"] for w in srv.workers(PROBE)),
            "the worker runs the request",
            30,
        )
        used_before = None if ctx.selftest else _used(ctx, index)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _memory_freed(ctx, step, pid, index, (held, hold, used_before), killed)

        def respawned() -> dict[str, Any] | None:
            return next(
                (
                    w
                    for w in srv.workers(PROBE)
                    if w["pid"] not in (pid, None) and w["state"] == "ready"
                ),
                None,
            )

        new = step.until(respawned, "a new worker is ready", 90, interval=0.1)
        respawn_s = time.monotonic() - killed
        step.check(
            "the worker is respawned",
            new["restarts"] >= 1,
            f"pid {pid} -> {new['pid']} on {new['device']} in {respawn_s:.1f}s, "
            f"restarts {new['restarts']}",
        )
        thread.join(timeout=step.budget(30))
        status, body = answer[0] if answer else (None, "no answer")
        step.check(
            "the request it was running answered 503 (JSON)",
            status == 503 and isinstance(body, dict),
            f"{status}: {str(body)[:300]}",
        )
        status, body = srv.predict(PROBE, "?n=10")
        step.check(
            "the new worker answers",
            status == 200 and body["predictions"]["pid"] == new["pid"],
            f"{status}: {str(body)[:300]}",
        )
        restarts = metric_sum(
            srv.metrics(),
            "deepaas_worker_restarts_total",
            model=PROBE,
            reason="crashed",
        )
        step.check(
            "deepaas_worker_restarts_total{reason=crashed} counts it",
            bool(restarts and restarts >= 1),
            f"{restarts}",
        )
        step.figures["respawn_s"] = round(respawn_s, 2)
    freed = step.figures.get("freed_s")
    step.summary = f"respawned in {respawn_s:.1f}s; GPU memory " + (
        f"({held} MiB) freed in {freed:.2f}s"
        if freed is not None
        else "freed: not measured"
    )


def _apps(ctx: Context) -> dict[int, int | None] | None:
    try:
        return ctx.smi.compute_apps()
    except Failure:
        return None


def _used(ctx: Context, index: int) -> float | None:
    """nvidia-smi's memory.used (MiB) of GPU ``index``, if it says."""
    with contextlib.suppress(Failure, ValueError, TypeError, IndexError):
        value = ctx.smi.field("memory.used")[index]
        return None if value is None else float(value)
    return None


def _memory_freed(
    ctx: Context,
    step: Step,
    pid: int,
    index: int,
    memory: tuple[int | None, int, float | None],
    killed: float,
) -> None:
    """Until the killed worker's GPU memory is freed: its pid gone from
    nvidia-smi's compute apps, or (when nvidia-smi lists no pid of ours)
    ``memory.used`` down by what it held. ``memory``: (MiB nvidia-smi said
    the pid held, MiB it allocated, memory.used before the kill)."""
    held, hold, used_before = memory
    name = f"GPU memory of the killed worker freed within {FREED_WITHIN_S:g}s"
    if ctx.no_cuda(step, name):
        return
    within = FREED_WITHIN_S * 2  # watched past the target, to say by how much

    if held is not None:
        how = f"pid {pid} ({held} MiB) gone from nvidia-smi --query-compute-apps"

        def freed() -> bool:
            apps = _apps(ctx)
            return apps is not None and pid not in apps

    elif used_before is not None:
        how = (
            f"memory.used down by {hold} MiB from {used_before:.0f} MiB (nvidia-smi "
            f"lists no process for pid {pid}: another pid namespace?)"
        )

        def freed() -> bool:
            used = _used(ctx, index)
            return used is not None and used <= used_before - 0.9 * hold

    else:
        step.skip(name, "nvidia-smi shows neither the worker's pid nor memory.used")
        return
    try:
        step.until(freed, how, within, interval=0.05)
    except Failure:
        step.check(name, False, f"not freed within {within:g}s: {how}")
        return
    seconds = time.monotonic() - killed
    step.figures["freed_s"] = round(seconds, 3)
    step.check(name, seconds <= FREED_WITHIN_S, f"{seconds:.2f}s: {how}")


# -- f: framework runtimes -------------------------------------------------------------


def frameworks(ctx: Context, step: Step) -> None:
    import deepaas.frameworks as package

    runtimes = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
    ort = ctx.info.get("onnxruntime")
    if ort:
        providers = ort.get("providers", [])
        step.notes.append(
            f"onnxruntime {ort.get('version')}: providers {providers}"
            + ("" if "CUDAExecutionProvider" in providers else " (no onnxruntime-gpu)")
        )
    if not runtimes:
        raise Skip("not built yet (issue 11)")
    step.skip(
        "framework runtimes on the GPU",
        f"deepaas.frameworks has {', '.join(runtimes)}, but this check has no "
        "step for them yet (extend step f of benchmarks/gpu/run.py)",
    )


STEPS: list[tuple[str, str, str, Callable[[Context, Step], None]]] = [
    ("a", "telemetry", "NVML inventory and telemetry vs nvidia-smi", telemetry),
    ("b", "serving", "deepaas-run --devices auto --workers 2 on the GPU", serving),
    ("c", "batching", "GPU batching: MLP at 32 connections, on vs off", batching),
    ("d", "training", "training with deepaas_gpus: lease, NCCL", training),
    ("e", "worker-kill", "a worker killed during GPU work", worker_kill),
    ("f", "frameworks", "framework runtimes on the GPU", frameworks),
]
