"""How much the training store grows with the history of reported values.

Issue 17's number: "a job reporting 10 values per second for 10 minutes:
the store grows by less than 5 MB". No 10-minute wait: this drives the
store directly with synthetic reports, written as the record keeper writes
them (one transaction a second holding that second's reports), then
measures the database files (``trainings.sqlite3`` with its WAL, after a
checkpoint: what stays on disk) and the time a page's reads take: the
first load (every report, downsampled to ``--max-points`` per key) and an
incremental poll (``since`` = the previous cursor).

    python benchmarks/training_history.py              # 10/s for 600 s
    python benchmarks/training_history.py --keys 10    # 10 keys a report
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepaas.training import history
from deepaas.training.store import TrainingStore

UUID = "3f1c0e9a52a44d7e8a3b1c8d1d2e4f60"


def files_size(state_dir: str) -> int:
    return sum(
        os.path.getsize(os.path.join(state_dir, name))
        for name in os.listdir(state_dir)
        if name.startswith("trainings.sqlite3")
    )


def synthetic(i: int, rate: int, seconds: int, keys: int) -> dict[str, object]:
    """One report, as a training loop sends it: its step of the total and
    ``keys`` values in all (a loss, an accuracy, a learning rate, ...)."""
    total = rate * seconds
    values: dict[str, object] = {"step": i, "total": total}
    for k in range(keys - 2):
        values[f"metric_{k}"] = math.exp(-i / total) + random.random() / 100
    return values


async def measure(rate: int, seconds: int, keys: int, max_points: int) -> None:
    with tempfile.TemporaryDirectory(prefix="deepaas-history-") as state_dir:
        store = TrainingStore(state_dir)
        await store.open()
        try:
            await store.call(
                lambda: store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            )
            before = files_size(state_dir)
            tracker = history.Tracker()
            began = time.perf_counter()
            for second in range(seconds):
                for j in range(rate):
                    i = second * rate + j + 1
                    values = synthetic(i, rate, seconds, keys)
                    tracker.add(i / rate, values, values)
                await history.append(store, UUID, tracker.take())
            write_s = time.perf_counter() - began
            with_wal = files_size(state_dir) - before
            await store.call(
                lambda: store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            )
            grown = files_size(state_dir) - before

            began = time.perf_counter()
            reports, _, first = await history.load(store, UUID, 0)
            numbers, _ = history.series(reports, history.x_axis(first, "auto"))
            shown = {
                k: history.downsample(p, max_points)[0] for k, p in numbers.items()
            }
            first_load_s = time.perf_counter() - began
            cursor = reports[-1].seq - rate  # a page one second behind
            began = time.perf_counter()
            later, _, _ = await history.load(store, UUID, cursor)
            history.series(later, "step")
            poll_s = time.perf_counter() - began
        finally:
            await store.close()
    count = rate * seconds
    print(f"reports: {count} ({rate}/s for {seconds} s), {keys} values each")
    print(
        f"store growth: {grown / 1e6:.2f} MB on disk ({grown / count:.0f} B a report)"
    )
    print(f"  before the WAL checkpoint: {with_wal / 1e6:.2f} MB")
    print(f"writing: {write_s:.2f} s for {seconds} transactions")
    points = sum(len(p) for p in shown.values())
    print(
        f"first load: {first_load_s * 1000:.0f} ms "
        f"({len(shown)} curves, {points} points, max {max_points} a curve)"
    )
    print(f"incremental poll ({len(later)} reports): {poll_s * 1000:.1f} ms")
    peak = max(grown, with_wal)
    verdict = "met" if peak < 5e6 else "NOT met"
    print(f"goal (issue 17): < 5 MB, WAL included ({peak / 1e6:.2f} MB) -> {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=10, help="reports a second")
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument(
        "--keys", type=int, default=5, help="values a report (step, total, ...)"
    )
    parser.add_argument("--max-points", type=int, default=history.MAX_POINTS)
    args = parser.parse_args()
    random.seed(17)
    asyncio.run(measure(args.rate, args.seconds, args.keys, args.max_points))


if __name__ == "__main__":
    main()
