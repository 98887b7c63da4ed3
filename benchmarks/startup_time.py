"""Seconds from launching ``deepaas-run`` to a warmed server answering ``/``.

Launches ``deepaas-run`` on the example plugins, polls ``GET /`` and waits for
the "ready" banner (printed once every model has a warm worker). Repeats
``--runs`` times and prints each run and the worst.

    .venv/bin/python benchmarks/startup_time.py [--runs 5]

Target (issue #2): answers ``/`` warmed within 3 s.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_run() -> tuple[float, float]:
    port = free_port()
    run = str(Path(sys.executable).with_name("deepaas-run"))
    started = time.monotonic()
    proc = subprocess.Popen(
        [run, "--listen-port", str(port), "--model-name", "demo,demo_class"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    answered = ready = 0.0
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    output = b""
    try:
        while not (answered and ready):
            if time.monotonic() - started > 60:
                raise RuntimeError(f"not ready after 60 s:\n{output.decode()}")
            if not answered:
                try:
                    url = f"http://127.0.0.1:{port}/"
                    with urllib.request.urlopen(url, timeout=1) as resp:
                        if resp.status == 200:
                            answered = time.monotonic() - started
                except OSError:
                    pass
            if selector.select(timeout=0.01):
                output += os.read(proc.stdout.fileno(), 65536)
                if b"ready in" in output and not ready:
                    ready = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return answered, ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    worst = 0.0
    for i in range(args.runs):
        answered, ready = one_run()
        warmed = max(answered, ready)
        worst = max(worst, warmed)
        print(
            f"run {i + 1}: answers / after {answered:.2f}s, "
            f"workers warm after {ready:.2f}s"
        )
    print(f"worst: {worst:.2f}s (target < 3 s): {'PASS' if worst < 3 else 'FAIL'}")
    return 0 if worst < 3 else 1


if __name__ == "__main__":
    sys.exit(main())
