"""A multipart request of 10,000 tiny file parts: refused fast, loop free.

Starts ``deepaas-run`` on the example ``demo`` model (own process group, a
free port, default settings: ``--max-form-parts 1000``), then, on one event
loop in this process:

1. probes ``GET /healthz`` every ~5 ms on a keep-alive connection for
   ``--baseline`` seconds with no other load: the latency baseline;
2. sends one ~800 KB ``multipart/form-data`` request of ``--parts`` tiny
   file parts (``name="file"``, alternating with ``name="image"`` and an
   unknown name, so that parts are saved, discarded and counted) to
   ``/v2/models/demo/predict/`` while the probe goes on, and measures the
   time until the status line of the answer arrives;
3. prints the time to the answer, its status, the longest ``/healthz``
   latency while the request was being sent and answered, and the baseline;
   PASS when the answer is a 4xx in < 0.5 s and the longest probe latency is
   < 50 ms.

    .venv/bin/python benchmarks/form_parts.py [--parts 10000] [--rounds 3]
        [--source DIR]

Exit status: 0 PASS, 1 FAIL, 2 the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _harness import (
    BenchError,
    Server,
    deepaas_env,
    deepaas_run_path,
    fail,
    free_ports,
    wait_ready,
)

TARGET_ANSWER_S = 0.5
TARGET_STALL_MS = 50.0
PROBE_EVERY_S = 0.005
BOUNDARY = "b0undary"
PREDICT = "/v2/models/demo/predict/"
NAMES = ("file", "image", "other")  # saved, saved, discarded (unknown)


def attack_body(parts: int) -> bytes:
    """``parts`` tiny file parts, about 80 bytes each."""
    pieces = []
    for i in range(parts):
        name = NAMES[i % len(NAMES)]
        pieces.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{i}"\r\n\r\nx\r\n'
        )
    pieces.append(f"--{BOUNDARY}--\r\n")
    return "".join(pieces).encode()


@dataclass
class Probe:
    """GET /healthz on one keep-alive connection, over and over."""

    port: int
    samples: list[tuple[float, float]] = field(default_factory=list)  # (t, s)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                writer.write(request)
                await _read_response(reader)
                self.samples.append((started, time.perf_counter() - started))
                await asyncio.sleep(PROBE_EVERY_S)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def latencies(self, since: float, until: float) -> list[float]:
        """Latencies of probes that were in flight in [since, until]."""
        return [s for t, s in self.samples if t + s >= since and t <= until]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


@dataclass
class Attack:
    status: int
    answer_s: float
    message: str
    max_probe_ms: float
    probes: int


async def attack(port: int, body: bytes, probe: Probe) -> Attack:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def send() -> None:
        with contextlib.suppress(OSError):  # the server may answer and close
            writer.write(head + body)
            await writer.drain()

    started = time.perf_counter()
    sender = asyncio.create_task(send())
    try:
        status, payload = await asyncio.wait_for(_read_response(reader), 60)
        answered = time.perf_counter()
        await asyncio.wait_for(sender, 60)
    finally:
        sender.cancel()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    # Let probes that started during the attack finish before reading them.
    await asyncio.sleep(0.1)
    latencies = probe.latencies(started, max(answered, time.perf_counter() - 0.1))
    try:
        message = json.loads(payload)["message"]
    except (ValueError, KeyError, TypeError):
        message = payload[:200].decode("utf-8", "replace")
    return Attack(
        status=status,
        answer_s=answered - started,
        message=message,
        max_probe_ms=max(latencies, default=0.0) * 1e3,
        probes=len(latencies),
    )


async def measure(port: int, parts: int, rounds: int, baseline_s: float) -> int:
    body = attack_body(parts)
    probe = Probe(port)
    task = asyncio.create_task(probe.run())
    try:
        await asyncio.sleep(baseline_s)
        base = [s * 1e3 for _, s in probe.samples]
        if not base:
            raise BenchError("the /healthz probe got no answer")
        print(
            f"/healthz baseline ({len(base)} probes, no other load): "
            f"median {statistics.median(base):.2f} ms, max {max(base):.2f} ms"
        )
        print(f"attack: {parts} file parts, {len(body) / 1e3:.0f} KB, {PREDICT}")
        results = []
        for i in range(rounds):
            result = await attack(port, body, probe)
            results.append(result)
            print(
                f"  round {i + 1}: HTTP {result.status} in "
                f"{result.answer_s * 1e3:.1f} ms; longest /healthz latency "
                f"{result.max_probe_ms:.1f} ms ({result.probes} probes)"
            )
        print(f"  answer: {results[-1].message}")
    finally:
        probe.stop.set()
        await task
    worst_answer = max(r.answer_s for r in results)
    worst_stall = max(r.max_probe_ms for r in results)
    all_4xx = all(400 <= r.status < 500 for r in results)
    ok = all_4xx and worst_answer < TARGET_ANSWER_S and worst_stall < TARGET_STALL_MS
    print(
        f"worst: answer {worst_answer * 1e3:.1f} ms (target < "
        f"{TARGET_ANSWER_S * 1e3:.0f} ms, a 4xx: {all_4xx}), longest /healthz "
        f"{worst_stall:.1f} ms (target < {TARGET_STALL_MS:.0f} ms; baseline max "
        f"{max(base):.2f} ms)  ->  {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=float, default=1.0, help="seconds")
    parser.add_argument("--loop", default="auto", choices=("auto", "asyncio", "uvloop"))
    parser.add_argument(
        "--source",
        metavar="DIR",
        help="run deepaas from this source tree (put first on PYTHONPATH), "
        "e.g. an older commit: git archive REV deepaas | tar -x -C DIR",
    )
    args = parser.parse_args()
    try:
        run = deepaas_run_path()
    except BenchError as exc:
        fail(str(exc))
    (port,) = free_ports(1)
    with tempfile.TemporaryDirectory(prefix="deepaas-bench-parts-") as tmp:
        env = deepaas_env(args.loop)
        env["TMPDIR"] = tmp
        if args.source:
            paths = [str(Path(args.source).resolve()), env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
        argv = [str(run), "--listen-ip", "127.0.0.1", "--listen-port", str(port)]
        server = Server(
            label="deepaas",
            argv=[*argv, "--model-name", "demo"],
            env=env,
            port=port,
            workdir=Path(tmp),
            path=PREDICT,
        )
        try:
            server.start()
            wait_ready(server, "")
            code = asyncio.run(measure(port, args.parts, args.rounds, args.baseline))
        except BenchError as exc:
            fail(str(exc))
        finally:
            left = server.stop()
        if left:
            print(f"processes left behind: {left}", file=sys.stderr)
            return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
