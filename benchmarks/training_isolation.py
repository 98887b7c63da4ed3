"""Predict throughput while a training runs, and how fast a cancel takes effect.

Starts ``deepaas-run`` on the trivial ``bench_trivial`` plugin (whose
``train`` sleeps), measures predict throughput with wrk at 16 connections
with no training, then again while a training runs on the same model, in the
same run, for a few rounds; then cancels the training and times the DELETE.
Prints both throughputs, their ratio (target >= 0.8; DEEPaaS 2.6 serves no
prediction until the training ends) and the cancel time (target: within 2 s
plus the grace period).

Usage::

    .venv/bin/python benchmarks/training_isolation.py [--rounds 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _harness import (
    BenchError,
    Server,
    deepaas_env,
    deepaas_run_path,
    free_ports,
    plugin_for_run,
    uninstall_dist,
    wait_ready,
)
from _wrk import (
    find_wrk,
    run_wrk,
)

HERE = Path(__file__).resolve().parent
PLUGIN_DIR = HERE / "trivial_plugin"
PLUGIN_MODULE = "deepaas_bench_trivial"
PLUGIN_DIST = "deepaas-bench-plugins"
MODEL = "bench_trivial"
TARGET_RATIO = 0.8
CANCEL_SLACK_S = 2.0


def _request(url: str, method: str) -> dict:
    req = urllib.request.Request(
        url, data=b"" if method == "POST" else None, method=method
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _drop_a_copy_without_train() -> None:
    """Uninstall an older copy of the trivial plugin, one without ``train``,
    so that the one here is installed for the run."""
    try:
        if not hasattr(importlib.import_module(PLUGIN_MODULE), "train"):
            uninstall_dist(PLUGIN_DIST)
            importlib.invalidate_caches()
            sys.modules.pop(PLUGIN_MODULE, None)
    except ImportError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="--train-cancel-grace given to deepaas-run",
    )
    args = parser.parse_args()
    wrk = find_wrk()
    _drop_a_copy_without_train()
    (port,) = free_ports(1)
    with (
        plugin_for_run(
            PLUGIN_DIR, PLUGIN_MODULE, MODEL, PLUGIN_DIST, "the trivial plugin", False
        ),
        tempfile.TemporaryDirectory(prefix="deepaas-bench-train-") as tmp,
    ):
        server = Server(
            label="deepaas",
            argv=[
                str(deepaas_run_path()),
                "--listen-port",
                str(port),
                "--model-name",
                MODEL,
                "--state-dir",
                tmp,
                "--train-cancel-grace",
                f"{args.grace:g}",
            ],
            env=deepaas_env("auto"),
            port=port,
            workdir=Path(tmp),
            path=f"/v2/models/{MODEL}/predict/",
        )
        server.start()
        try:
            wait_ready(server, "?x=1")
            base = f"http://127.0.0.1:{port}/v2/models/{MODEL}/train/"
            predict = server.base_url + "?x=1"
            run_wrk(wrk, predict, 2, 16, 1)  # warm-up
            alone, during, cancels = [], [], []
            for n in range(1, args.rounds + 1):
                alone.append(run_wrk(wrk, predict, args.duration, 16, 1).rps)
                job = _request(base + "?seconds=600", "POST")
                while job["status"] != "running":
                    time.sleep(0.05)
                    job = _request(base + job["uuid"], "GET")
                during.append(run_wrk(wrk, predict, args.duration, 16, 1).rps)
                started = time.monotonic()
                job = _request(base + job["uuid"], "DELETE")
                cancels.append(time.monotonic() - started)
                assert job["status"] == "cancelled", job
                print(
                    f"round {n}: alone {alone[-1]:.1f} req/s, during training "
                    f"{during[-1]:.1f} req/s, cancel {cancels[-1]:.2f}s",
                    flush=True,
                )
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            left = server.stop()
    ratio = statistics.median(during) / statistics.median(alone)
    worst_cancel = max(cancels)
    ok = ratio >= TARGET_RATIO and worst_cancel <= CANCEL_SLACK_S + args.grace
    print(
        f"median predict throughput: alone {statistics.median(alone):.1f} req/s, "
        f"during training {statistics.median(during):.1f} req/s"
    )
    print(f"ratio during/alone: {ratio:.3f} (target >= {TARGET_RATIO})")
    print(
        f"slowest cancel: {worst_cancel:.2f}s (target <= {CANCEL_SLACK_S:g}s + "
        f"grace {args.grace:g}s)"
    )
    if left:
        print(f"INVALID: processes left behind: {left}")
        return 1
    print("PASS" if ok else "FAIL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
