"""Per-item compute of the ``bench_mlp`` model at batch 1 and batch N, no server.

Calls the plugin's own ``predict`` (batch 1) and ``predict_batch`` (batch N)
in this process, as a worker would, and prints the median time per call and
per item. The ratio is the most dynamic batching can gain on this machine;
the server-side benchmark (``batching.py``) shows how much of it survives
HTTP, queueing and the worker pipe.

    .venv/bin/python benchmarks/mlp_compute.py [--sizes 1,8,32] [--json PATH]

Needs torch, the CPU build::

    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

Imports the plugin from ``benchmarks/mlp_plugin`` when it is not installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The CPU build, pinned: PyPI's Linux torch pulls the CUDA libraries too.
TORCH_INSTALL = (
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
)


def load_plugin() -> Any:
    """Import ``deepaas_bench_mlp``, from the source tree if not installed."""
    try:
        import deepaas_bench_mlp
    except ImportError:
        sys.path.insert(0, str(HERE / "mlp_plugin"))
        import deepaas_bench_mlp
    return deepaas_bench_mlp


def time_calls(call: Any, budget_s: float, min_calls: int = 10) -> float:
    """Median seconds of ``call()`` over ~``budget_s`` (after 3 warm-up calls)."""
    for _ in range(3):
        call()
    times: list[float] = []
    stop = time.perf_counter() + budget_s
    while len(times) < min_calls or time.perf_counter() < stop:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(sizes: list[int], budget_s: float) -> list[dict[str, float]]:
    """Median call and per-item times of the plugin at each batch size."""
    plugin = load_plugin()
    plugin.warm()
    rows = []
    for size in sizes:
        if size == 1:
            per_call = time_calls(lambda: plugin.predict(seed=1), budget_s)
        else:
            batch = [{"seed": seed} for seed in range(size)]
            per_call = time_calls(lambda b=batch: plugin.predict_batch(b), budget_s)
        rows.append(
            {"batch": size, "call_ms": per_call * 1e3, "item_ms": per_call * 1e3 / size}
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="1,2,4,8,16,32", help="batch sizes (default: %(default)s)"
    )
    parser.add_argument(
        "--budget", type=float, default=1.0, help="seconds per size (default: 1)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    try:
        rows = measure(sizes, args.budget)
    except ImportError as exc:
        print(
            f"ERROR: {exc}; install torch first: {sys.executable} -m {TORCH_INSTALL}",
            file=sys.stderr,
        )
        return 2
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), cpu")
    print(f"{'batch':>5} {'ms/call':>9} {'ms/item':>9} {'speed-up':>9}")
    base = rows[0]["item_ms"]
    for row in rows:
        row["speedup"] = base / row["item_ms"]
        print(
            f"{row['batch']:>5} {row['call_ms']:>9.3f} {row['item_ms']:>9.3f} "
            f"{row['speedup']:>8.2f}x"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"torch": torch.__version__, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
