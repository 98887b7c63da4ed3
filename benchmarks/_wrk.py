"""wrk runs for the benchmarks: finding wrk, running it, parsing its output.

``post.lua`` (next to this file) makes wrk print one ``BENCH_RESULT`` line
with its latency percentiles and error counts; :func:`parse_wrk` reads it.
Standard library only.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import BenchError, fail

LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"

WRK_INSTALL_HINT = """\
wrk is not on PATH; it is needed to generate the load. Install it with:
  Debian/Ubuntu:  sudo apt-get install wrk
  macOS:          brew install wrk
  from source:    https://github.com/wg/wrk (make; copy ./wrk onto PATH)"""


@dataclass
class WrkResult:
    """What one wrk run measured."""

    rps: float
    requests: int
    duration_s: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Total socket errors (connect, read, write, timeout)."""
        return sum(self.socket_errors.values())


def find_wrk() -> str:
    """Return the path of wrk, or exit 2 telling how to install it."""
    wrk = shutil.which("wrk")
    if wrk is None:
        fail(WRK_INSTALL_HINT)
    return wrk


def wrk_version(wrk: str) -> str:
    """Return wrk's version line (wrk prints it with its usage)."""
    proc = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


_BENCH_LINE = re.compile(r"^BENCH_RESULT (.*)$", re.MULTILINE)
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk's output (with the BENCH_RESULT line from post.lua)."""
    match = _BENCH_LINE.search(output)
    if match is None:
        raise BenchError(f"no BENCH_RESULT line in wrk's output:\n{output}")
    values = {
        key: float(value)
        for key, value in (item.split("=", 1) for item in match.group(1).split())
    }
    requests = int(values["requests"])
    duration_s = values["duration_us"] / 1e6
    rps_match = _RPS.search(output)
    rps = float(rps_match.group(1)) if rps_match else requests / duration_s
    non_2xx_match = _NON_2XX.search(output)
    non_2xx = max(
        int(non_2xx_match.group(1)) if non_2xx_match else 0,
        int(values["status_errors"]),
    )
    socket_errors = {
        kind: int(values[f"{kind}_errors"])
        for kind in ("connect", "read", "write", "timeout")
    }
    sock_match = _SOCKET_ERRORS.search(output)
    if sock_match:
        for kind, count in zip(socket_errors, sock_match.groups(), strict=True):
            socket_errors[kind] = max(socket_errors[kind], int(count))
    return WrkResult(
        rps=rps,
        requests=requests,
        duration_s=duration_s,
        mean_ms=values["mean_us"] / 1e3,
        p50_ms=values["p50_us"] / 1e3,
        p90_ms=values["p90_us"] / 1e3,
        p99_ms=values["p99_us"] / 1e3,
        max_ms=values["max_us"] / 1e3,
        non_2xx=non_2xx,
        socket_errors=socket_errors,
    )


def run_wrk(
    wrk: str,
    url: str,
    duration: float,
    connections: int,
    threads: int,
    script: Path = LUA_SCRIPT,
    script_args: Sequence[str] = (),
) -> WrkResult:
    """Run wrk against ``url`` and return its parsed result; ``script_args``
    go to the script (post.lua: BODY_FILE HEADERS_FILE)."""
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "-s",
        str(script),
        url,
    ]
    if script_args:
        cmd += ["--", *script_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise BenchError(
            f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return parse_wrk(proc.stdout + proc.stderr)


def machine_info(wrk: str) -> dict[str, Any]:
    """Describe the machine the figures come from."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "wrk": wrk_version(wrk),
    }
