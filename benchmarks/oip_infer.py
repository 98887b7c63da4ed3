"""OIP infer benchmark: a 1x3x224x224 FP32 tensor over OIP and DEEPaaS routes.

Starts one ``deepaas-run`` (default settings, one worker per model) serving
two benchmark plugins: ``bench_trivial`` (``benchmarks/trivial_plugin``) and
``bench_tensor`` (``benchmarks/tensor_plugin``, the mean of a 1x3x224x224
float32 tensor), and ``benchmarks/bare_aiohttp.py``; then measures five
requests with ``wrk`` in the same run, alternating them round after round:

- (a) ``trivial``: ``POST /v2/models/bench_trivial/predict/?x=1``, the
  baseline the issue names (a trivial predict);
- (b) ``oip-binary``: ``POST /v2/models/bench_tensor/infer``, the tensor's
  602,112 bytes as the binary data of the FP32 input ``image`` of shape
  [1, 3, 224, 224], ``Inference-Header-Content-Length`` giving the JSON
  header (the plugin is tensor-native: ``get_infer_signature()`` and
  ``infer(image)``, which gets the numpy array itself);
- (c) ``oip-json``: the same infer with the tensor as JSON, an FP32 ``data``
  list of 150,528 numbers (what ``tritonclient`` sends with
  ``binary_data=False``);
- (d) ``multipart``: ``POST /v2/models/bench_tensor/predict/`` with the same
  bytes as a multipart file upload ``image`` (the plugin's ``predict``);
- (e) ``bare-read``: (b)'s request to ``benchmarks/bare_aiohttp.py``, a bare
  aiohttp handler that only reads the body and answers its size: the floor
  under any server that takes this body over HTTP on this machine.

Every answer is checked first (the mean the model computes must be the
tensor's). Prints requests per second, p50/p99, the CPU time the server
(API process and workers) spent per request, and, from the medians, the
time per request of (b), (c), (d), (e) relative to (a) and of (b) relative
to (d) and (e). The issue's target: (b) costs at most 1.5x the time of (a).
(e)/(a) shows how far below that the floor already is on this machine:
moving 602 KB through loopback and aiohttp costs several trivial predicts.

Usage::

    .venv/bin/python benchmarks/oip_infer.py [--rounds 3] [--duration 10]

Exit status: 0 measured (PASS or FAIL is printed; ``--strict`` turns FAIL into
3), 1 the run is invalid (wrong answers, non-2xx responses, socket errors or a
process left behind), 2 the benchmark could not run (no wrk, no deepaas-run,
the server did not come up).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _harness import (
    BenchError,
    Server,
    add_run_options,
    checked_run_options,
    deepaas_env,
    deepaas_run_path,
    free_ports,
    install_plugin,
    live_children,
    tree_cpu_seconds,
    uninstall_dist,
    wait_answers,
    wait_ready,
)
from _wrk import WrkResult, find_wrk, machine_info, parse_wrk
from bare_aiohttp import READ_PATH

HERE = Path(__file__).resolve().parent
BARE_SERVER = HERE / "bare_aiohttp.py"
LUA_SCRIPT = HERE / "post.lua"
TRIVIAL = ("trivial_plugin", "deepaas_bench_trivial", "bench_trivial")
TRIVIAL_DIST = "deepaas-bench-plugins"
TENSOR = ("tensor_plugin", "deepaas_bench_tensor", "bench_tensor")
TENSOR_DIST = "deepaas-bench-tensor"
SHAPE = (1, 3, 224, 224)
TARGET_TIME_RATIO = 1.5  # (b) at most 1.5x the time of (a)
BOUNDARY = "deepaasbenchboundary7d3f"
#: wrk's per-request timeout: 16 queued JSON infers take seconds each.
WRK_TIMEOUT_S = 60
#: After each wrk run, wait (this long at most) until the server is idle, so
#: that requests still queued (wrk stops without waiting for them) are not
#: served during the next measurement.
DRAIN_TIMEOUT_S = 120.0


@dataclass
class Case:
    """One request measured: its path and the body and headers wrk sends."""

    key: str  # a, b, c, d, e
    label: str
    path: str
    body: bytes
    headers: dict[str, str]
    server: str = "deepaas"  # or "bare" (benchmarks/bare_aiohttp.py)

    def files(self, workdir: Path) -> tuple[Path, Path]:
        """Write the body and headers for post.lua; return their paths."""
        body = workdir / f"{self.label}.body"
        heads = workdir / f"{self.label}.headers"
        body.write_bytes(self.body)
        heads.write_text("".join(f"{k}: {v}\n" for k, v in self.headers.items()))
        return body, heads


def make_tensor() -> np.ndarray:
    """The image: fixed pseudo-random float32 values in [0, 1)."""
    return np.random.default_rng(0).random(SHAPE, dtype=np.float32)


def make_cases(tensor: np.ndarray) -> list[Case]:
    """The five requests (see the module's docstring)."""
    raw = tensor.astype("<f4").tobytes()
    # (b) binary: the FP32 tensor's raw little-endian bytes.
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": list(SHAPE),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "mean", "parameters": {"binary_data": False}}],
        }
    ).encode()
    binary = Case(
        "b",
        "oip-binary",
        f"/v2/models/{TENSOR[2]}/infer",
        header + raw,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    # (c) JSON: the FP32 data list as tritonclient sends it (float64 reprs).
    as_json = Case(
        "c",
        "oip-json",
        f"/v2/models/{TENSOR[2]}/infer",
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "FP32",
                        "shape": list(SHAPE),
                        "data": [float(v) for v in tensor.reshape(-1)],
                    }
                ],
                "outputs": [{"name": "mean"}],
            }
        ).encode(),
        {"Content-Type": "application/json"},
    )
    # (d) multipart: the same bytes as the file upload "image".
    multipart = (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="image"; filename="image.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + raw
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    upload = Case(
        "d",
        "multipart",
        f"/v2/models/{TENSOR[2]}/predict/",
        multipart,
        {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    trivial = Case("a", "trivial", f"/v2/models/{TRIVIAL[2]}/predict/?x=1", b"", {})
    # (e) the binary body, read by a bare aiohttp handler.
    bare = Case("e", "bare-read", READ_PATH, binary.body, binary.headers, "bare")
    return [trivial, binary, as_json, upload, bare]


def send(base: str, case: Case, timeout: float = 30.0) -> tuple[int, dict, Any]:
    """POST ``case``; return (status, headers, parsed JSON or text)."""
    req = urllib.request.Request(
        base + case.path,
        data=case.body,
        method="POST",
        headers={"Accept": "application/json", **case.headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, headers, json.loads(raw)
    except ValueError:
        return status, headers, raw.decode(errors="replace")


def check_answers(
    bases: dict[str, str], cases: list[Case], tensor: np.ndarray
) -> list[str]:
    """Check that every request gets the expected answer; return problems."""
    mean = float(tensor.astype(np.float64).mean())
    problems = []
    for case in cases:
        try:
            status, headers, body = send(bases[case.server], case)
        except OSError as exc:
            raise BenchError(
                f"the server stopped answering ({case.label}): {exc}"
            ) from exc
        if status != 200:
            problems.append(f"{case.label}: HTTP {status}: {str(body)[:300]}")
            continue
        got: Any = None
        if case.key == "a":
            ok = body == {"status": "OK", "predictions": {"echo": 2}}
        elif case.key == "e":
            ok = body == {"read": len(case.body)}
        elif case.key in "bc":
            outputs = body.get("outputs") if isinstance(body, dict) else None
            ok = (
                "Inference-Header-Content-Length" not in headers
                and isinstance(outputs, list)
                and len(outputs) == 1
                and outputs[0].get("name") == "mean"
                and outputs[0].get("datatype") == "FP64"
                and outputs[0].get("shape") == [1, 1]
                and len(outputs[0].get("data", [])) == 1
            )
            got = outputs[0]["data"][0] if ok else None
        else:
            ok = isinstance(body, dict) and body.get("status") == "OK"
            predictions = body.get("predictions") if ok else None
            ok = ok and isinstance(predictions, dict)
            ok = ok and predictions.get("size") == tensor.size
            got = predictions.get("mean") if ok else None
        if ok and got is not None:
            ok = isinstance(got, float) and abs(got - mean) <= 1e-9 * abs(mean)
        if not ok:
            problems.append(
                f"{case.label}: unexpected answer (mean {mean!r}): {str(body)[:300]}"
            )
    return problems


def run_wrk(
    wrk: str, url: str, duration: float, args: argparse.Namespace, files: list[Path]
) -> WrkResult:
    """Run wrk with post.lua POSTing ``files`` (body, headers) to ``url``."""
    cmd = [
        wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration:g}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        *map(str, files),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise BenchError(
            f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return parse_wrk(proc.stdout + proc.stderr)


def drain(pid: int) -> None:
    """Wait until the server's processes use (almost) no CPU any more."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    last = tree_cpu_seconds(pid)
    while last is not None and time.monotonic() < deadline:
        time.sleep(0.25)
        now = tree_cpu_seconds(pid)
        if now is None or now - last < 0.01:
            return
        last = now


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="OIP infer (binary, JSON) and multipart predict of a "
        "1x3x224x224 FP32 tensor vs a trivial predict."
    )
    add_run_options(
        parser,
        connections=16,
        plugins="the benchmark plugins",
        warmup_help="seconds of warm-up per request kind",
        loop_help="event loop of deepaas-run",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (default: %(default)s)"
    )
    args = checked_run_options(parser, parser.parse_args(argv))
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit so that the server gets stopped."""
    raise SystemExit(128 + signum)


def _median(values: list[float | None]) -> float | None:
    return statistics.median(values) if values and all(values) else None  # type: ignore[arg-type]


def benchmark(
    args: argparse.Namespace, wrk: str, workdir: Path, report: dict[str, Any]
) -> int:
    """Start the servers, measure the five requests, print; return the status."""
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise BenchError("--loop uvloop given but uvloop is not installed")
    tensor = make_tensor()
    cases = make_cases(tensor)
    files = {case.key: case.files(workdir) for case in cases}
    port, bare_port = free_ports(2)
    argv = [
        str(deepaas_run_path()),
        "--listen-ip",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--model-name",
        f"{TRIVIAL[2]},{TENSOR[2]}",
    ]
    server = Server(
        "deepaas", argv, deepaas_env(args.loop), port, workdir, cases[0].path
    )
    bare = Server(
        "bare",
        [
            sys.executable,
            str(BARE_SERVER),
            "--port",
            str(bare_port),
            "--loop",
            args.loop,
        ],
        deepaas_env(args.loop),
        bare_port,
        workdir,
        cases[0].path,
    )
    servers = {"deepaas": server, "bare": bare}
    bases = {key: f"http://127.0.0.1:{s.port}" for key, s in servers.items()}
    report["server"] = " ".join(argv)
    report["bodies"] = {case.label: len(case.body) for case in cases}
    problems: list[str] = []
    rounds: list[dict[str, Any]] = []
    try:
        server.start()
        bare.start()
        assert server.proc is not None and bare.proc is not None
        pids = {key: s.proc.pid for key, s in servers.items() if s.proc}
        wait_ready(server, "")  # (a)'s URL carries ?x=1 already
        wait_ready(bare, "")
        wait_answers(server, f"/v2/models/{TENSOR[2]}/ready")
        problems = check_answers(bases, cases, tensor)
        report["problems"] = problems
        if problems:
            print("INVALID: the server does not give the expected answers:")
            for problem in problems:
                print(f"  - {problem}")
            return 1

        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
            f"loop={args.loop}, {args.rounds} rounds of a, b, c, d, e; tensor "
            f"{'x'.join(map(str, SHAPE))} FP32; bodies: "
            + ", ".join(f"{c.key} {len(c.body):,} B" for c in cases)
        )
        for case in cases:
            print(f"  ({case.key}) {case.label:<10} POST {case.path}")
        if args.warmup > 0:
            for case in cases:
                url = bases[case.server] + case.path
                res = run_wrk(wrk, url, args.warmup, args, files[case.key])
                drain(pids[case.server])
                if res.non_2xx or res.errors:
                    problems.append(
                        f"warm-up {case.label}: {res.non_2xx} non-2xx, "
                        f"{res.errors} socket errors"
                    )
        for number in range(1, args.rounds + 1):
            entry: dict[str, Any] = {"round": number}
            for case in cases:
                pid = pids[case.server]
                cpu_before = tree_cpu_seconds(pid)
                res = run_wrk(
                    wrk,
                    bases[case.server] + case.path,
                    args.duration,
                    args,
                    files[case.key],
                )
                cpu_after = tree_cpu_seconds(pid)
                drain(pid)
                entry[case.key] = res
                entry[f"{case.key}_cpu_us"] = (
                    (cpu_after - cpu_before) * 1e6 / res.requests
                    if cpu_before is not None and cpu_after is not None and res.requests
                    else None
                )
                if res.non_2xx or res.errors:
                    problems.append(
                        f"round {number} {case.label}: {res.non_2xx} non-2xx, "
                        f"{res.errors} socket errors {res.socket_errors}"
                    )
            rounds.append(entry)
            print(
                f"  round {number}: "
                + ", ".join(f"{c.key} {entry[c.key].rps:.1f}" for c in cases)
                + " req/s",
                flush=True,
            )
    finally:
        left = server.stop() + bare.stop()
        left += [pid for pid in live_children() if pid not in left]
        report["left_behind"] = left
        if left:
            print(f"ERROR: processes left behind: {left}", file=sys.stderr)

    rps = {c.key: statistics.median(e[c.key].rps for e in rounds) for c in cases}
    cpu = {c.key: _median([e[f"{c.key}_cpu_us"] for e in rounds]) for c in cases}
    time_ratio = {k: rps["a"] / rps[k] if rps[k] else 0.0 for k in "bcde"}
    time_ratio["b/d"] = rps["d"] / rps["b"] if rps["b"] else 0.0
    time_ratio["b/e"] = rps["e"] / rps["b"] if rps["b"] else 0.0
    cpu_ratio: dict[str, float] = {}
    if all(cpu.values()):
        cpu_ratio = {k: cpu[k] / cpu["a"] for k in "bcde"}  # type: ignore[operator]
        cpu_ratio["b/d"] = cpu["b"] / cpu["d"]  # type: ignore[operator]
        cpu_ratio["b/e"] = cpu["b"] / cpu["e"]  # type: ignore[operator]
    left = report["left_behind"]
    valid = not problems and not left
    target_ratio = time_ratio["b"]
    passed = target_ratio <= TARGET_TIME_RATIO
    verdict = "INVALID" if not valid else "PASS" if passed else "FAIL"

    print()
    header = (
        f"{'round':>5}  {'request':<14} {'req/s':>10} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'non-2xx':>8} {'sock.err':>8} {'CPU us/req':>10}"
    )
    print(header)
    print("-" * len(header))
    for entry in rounds:
        for case in cases:
            res = entry[case.key]
            c = entry[f"{case.key}_cpu_us"]
            print(
                f"{entry['round']:>5}  ({case.key}) {case.label:<10} {res.rps:>10.1f} "
                f"{res.p50_ms:>8.2f} {res.p99_ms:>8.2f} {res.non_2xx:>8} "
                f"{res.errors:>8} {f'{c:.0f}' if c else '-':>10}"
            )
        a = entry["a"].rps
        print(
            f"{'':>5}  time vs (a): "
            + ", ".join(f"{k} {a / entry[k].rps:.2f}x" for k in "bcde" if entry[k].rps)
        )
    print()
    for case in cases:
        c = cpu[case.key]
        print(
            f"median ({case.key}) {case.label:<10} {rps[case.key]:>10.1f} req/s"
            f"  {f'{c:.0f}' if c else '-':>7} CPU us/req"
        )
    print()
    print("time per request (from the median req/s), and CPU per request:")
    for key, what in (
        ("b", "(b)/(a) oip-binary / trivial"),
        ("c", "(c)/(a) oip-json   / trivial"),
        ("d", "(d)/(a) multipart  / trivial"),
        ("e", "(e)/(a) bare-read  / trivial"),
        ("b/d", "(b)/(d) oip-binary / multipart"),
        ("b/e", "(b)/(e) oip-binary / bare-read"),
    ):
        cr = f"{cpu_ratio[key]:.2f}x" if key in cpu_ratio else "-"
        print(f"  {what}: time {time_ratio[key]:.2f}x, CPU {cr}")
    print(
        f"target: (b) at most {TARGET_TIME_RATIO}x the time of (a): "
        f"{target_ratio:.2f}x  ->  {verdict}"
    )
    if problems:
        print("INVALID run (figures not to be trusted):")
        for problem in problems:
            print(f"  - {problem}")

    report.update(
        rounds=[
            {
                "round": e["round"],
                **{c.label: asdict(e[c.key]) for c in cases},
                "cpu_us_per_request": {c.label: e[f"{c.key}_cpu_us"] for c in cases},
            }
            for e in rounds
        ],
        median_rps={c.label: rps[c.key] for c in cases},
        median_cpu_us_per_request={c.label: cpu[c.key] for c in cases},
        time_ratios=time_ratio,
        cpu_ratios=cpu_ratio,
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
        "benchmark": "oip_infer",
        "config": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "loop": args.loop,
            "shape": list(SHAPE),
        },
        "machine": machine_info(wrk),
        "target_time_ratio": TARGET_TIME_RATIO,
        "verdict": "INVALID",
        "valid": False,
    }
    status = 2
    installed: list[str] = []
    try:
        for (folder, module, entry), dist in (
            (TRIVIAL, TRIVIAL_DIST),
            (TENSOR, TENSOR_DIST),
        ):
            if install_plugin(HERE / folder, module, entry, f"the {entry} plugin"):
                installed.append(dist)
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
        if not args.keep_plugin:
            for dist in installed:
                uninstall_dist(dist)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
            print(f"results written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
