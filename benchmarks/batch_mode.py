"""Batch mode against the server, on the same 1,000 small files.

Issue 16's number: "batch mode over 1,000 small files with the trivial
plugin: >= 0.8x the throughput of the server answering the same 1,000
requests from a local client". Both sides run the same plugin
(``files_plugin/``: ``bench_files``, ``predict(x, data)`` reads its file) on
the same number of worker processes, and each writes one output file per
input:

- **batch**: ``deepaas-cli --model-name bench_files predict --input-dir IN
  --output-dir OUT --jobs W``, timed from its start to its exit: the whole
  command, interpreter start-up, plugin import and worker start included
  (what a FaaS invocation or a batch job pays);
- **server**: ``deepaas-run --model-name bench_files --workers W``, started
  and warmed first (not timed), then 1,000 ``POST .../predict/`` with each
  file as a multipart upload from an aiohttp client in this process
  (``--concurrency`` requests in flight), each answer written to a file.

Rounds alternate batch, server, batch, server...; the ratio is of the
median throughputs (inputs a second).

    python benchmarks/batch_mode.py                   # 1,000 files, 3 rounds
    python benchmarks/batch_mode.py --workers 2 --files 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _harness import (
    HERE,
    BenchError,
    Server,
    deepaas_env,
    deepaas_run_path,
    fail,
    free_ports,
    plugin_for_run,
    wait_answers,
)

GOAL = 0.8
MODEL = "bench_files"
PLUGIN_DIR = HERE / "files_plugin"


def make_inputs(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        (folder / f"input-{i:05d}.csv").write_text(f"x,y\n{i},{i * i}\n")


def deepaas_cli_path() -> Path:
    return deepaas_run_path().with_name("deepaas-cli")


def run_batch(inputs: Path, out: Path, workers: int, env: dict[str, str]) -> float:
    """Seconds the whole command took; checks its outputs."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [
        str(deepaas_cli_path()), "--model-name", MODEL, "predict",
        "--input-dir", str(inputs), "--output-dir", str(out),
        "--jobs", str(workers), "--x", "1", "--devices", "cpu",
    ]  # fmt: skip
    began = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - began
    if proc.returncode != 0:
        raise BenchError(f"batch mode failed ({proc.returncode}):\n{proc.stderr}")
    check_outputs(inputs, out)
    return elapsed


def check_outputs(inputs: Path, out: Path) -> None:
    names = sorted(os.listdir(out))
    expected = sorted(f"{name}.json" for name in os.listdir(inputs))
    if names != expected:
        raise BenchError(f"{out}: {len(names)} outputs, expected {len(expected)}")
    sample = json.loads((out / names[-1]).read_text())
    if sample.get("predictions", {}).get("echo") != 2:
        raise BenchError(f"unexpected answer: {sample}")


async def run_client(
    url: str, inputs: Path, out: Path, concurrency: int
) -> tuple[float, int]:
    """1,000 uploads, ``concurrency`` at a time; (seconds, failures)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    files = sorted(inputs.iterdir())
    failures = 0
    queue: asyncio.Queue[Path] = asyncio.Queue()
    for path in files:
        queue.put_nowait(path)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            path = queue.get_nowait()
            form = aiohttp.FormData()
            form.add_field(
                "data", path.read_bytes(), filename=path.name, content_type="text/csv"
            )
            async with session.post(url, data=form) as resp:
                body = await resp.read()
            if resp.status != 200:
                failures += 1
                continue
            (out / f"{path.name}.json").write_bytes(body)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return elapsed, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="default: 1000")
    parser.add_argument("--rounds", type=int, default=3, help="default: 3")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default: 1)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="client requests in flight"
    )
    parser.add_argument("--keep-plugin", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 3 if missed")
    args = parser.parse_args()
    if args.files < 1 or args.rounds < 1 or args.workers < 1:
        parser.error("--files, --rounds and --workers must be >= 1")
    try:
        with plugin_for_run(
            PLUGIN_DIR,
            "deepaas_bench_files",
            MODEL,
            "deepaas-bench-files",
            "the files plugin",
            args.keep_plugin,
        ):
            code = measure(args)
    except BenchError as exc:
        fail(str(exc))
    sys.exit(code)


def measure(args: argparse.Namespace) -> int:
    env = deepaas_env("asyncio")
    with tempfile.TemporaryDirectory(prefix="deepaas-bench-batch-") as tmp:
        work = Path(tmp)
        inputs = work / "in"
        make_inputs(inputs, args.files)
        port = free_ports(1)[0]
        argv = [
            str(deepaas_run_path()),
            "--listen-ip", "127.0.0.1", "--listen-port", str(port),
            "--model-name", MODEL, "--workers", str(args.workers),
            "--devices", "cpu",
        ]  # fmt: skip
        server = Server(
            "deepaas",
            argv,
            env,
            port,
            work,
            path=f"/v2/models/{MODEL}/predict/",
        )
        server.start()
        try:
            # the model requires a file: a 422 means it is up and parsing
            wait_answers(server, "/readyz")
            url = server.base_url + "?x=1"
            asyncio.run(run_client(url, inputs, work / "warm", args.concurrency))
            batch_s: list[float] = []
            server_s: list[float] = []
            for round_no in range(1, args.rounds + 1):
                b = run_batch(inputs, work / "out-batch", args.workers, env)
                s, failures = asyncio.run(
                    run_client(url, inputs, work / "out-server", args.concurrency)
                )
                if failures:
                    raise BenchError(f"the server failed {failures} requests")
                check_outputs(inputs, work / "out-server")
                batch_s.append(b)
                server_s.append(s)
                print(
                    f"round {round_no}: batch {args.files / b:7.0f} inputs/s "
                    f"({b:.2f} s, whole command)   server {args.files / s:7.0f} "
                    f"requests/s ({s:.2f} s, {args.concurrency} in flight)",
                    flush=True,
                )
        finally:
            server.stop()
    batch_rate = args.files / statistics.median(batch_s)
    server_rate = args.files / statistics.median(server_s)
    ratio = batch_rate / server_rate
    print(
        f"{args.files} files, {args.workers} worker(s), {os.cpu_count()} CPUs: "
        f"batch {batch_rate:.0f}/s, server {server_rate:.0f}/s (medians)"
    )
    verdict = "PASS" if ratio >= GOAL else "MISSED"
    print(f"ratio batch/server: {ratio:.2f}x (goal >= {GOAL}x)  ->  {verdict}")
    return 3 if args.strict and ratio < GOAL else 0


if __name__ == "__main__":
    main()
