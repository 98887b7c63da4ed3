"""How a fault benchmark runs (standard library only).

``fault_isolation.py``, ``worker_recycling.py``, ``head_of_line.py`` and
``bounded_shutdown.py`` serve the ``bench_faults`` plugin
(``benchmarks/fault_plugin``) from ``deepaas-run`` and measure how it behaves
when the model crashes, leaks, stalls, or the server is told to stop. This
module holds the frame they share on top of :mod:`_harness`: their common
options, the header that says what was measured, the plugin installed for
the run, servers (under ``RLIMIT_AS``, or from another source tree) started
and stopped around a measurement, and the report written to ``--json``
(:func:`run_benchmark`). What they send to a server and read from it is in
:mod:`_faults_measure`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _faults_measure import MODEL, PREDICT_PATH
from _harness import (
    BenchError,
    Server,
    deepaas_env,
    deepaas_run_path,
    free_ports,
    live_children,
    plugin_for_run,
    wait_ready,
)
from _wrk import (
    wrk_version,
)

HERE = Path(__file__).resolve().parent
PLUGIN_DIST = "deepaas-bench-faults"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every fault benchmark takes."""
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="deepaas-run's event loop (default: %(default)s)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="run deepaas from this source tree (put first on PYTHONPATH), "
        "e.g. an older commit unpacked with `git archive REV | tar -x -C DIR`, "
        "to measure the 'before' figures",
    )
    parser.add_argument(
        "--keep-plugin",
        action="store_true",
        help=f"keep {PLUGIN_DIST} installed if this run installs it",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 3 when a target is missed"
    )


def print_header(title: str, args: argparse.Namespace, wrk: str | None) -> None:
    """Say what was measured, when, on what, with which deepaas."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    try:
        version = importlib.metadata.version("deepaas")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(HERE), "status", "--porcelain", "--", "../deepaas"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    source = f", source {args.source}" if args.source else ""
    wrk_line = wrk_version(wrk).split(" Copyright")[0].split(" [")[0] if wrk else ""
    print(f"{title}")
    print(
        f"  {now}; {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}" + (f", {wrk_line}" if wrk_line else "")
    )
    print(
        f"  deepaas {version} (commit {commit or '?'}"
        f"{' + uncommitted changes' if dirty else ''}{source}), "
        f"loop {resolve_loop(args.loop)}"
    )


def to_json(value: Any) -> Any:
    """``json.dumps``'s ``default``: dataclasses as dicts, paths as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def resolve_loop(loop: str) -> str:
    if loop != "auto":
        return loop
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def deepaas_server(
    label: str,
    workdir: Path,
    args: argparse.Namespace,
    workers: int,
    *flags: str,
    rlimit_as: int = 0,
) -> Server:
    """``deepaas-run --workers WORKERS`` serving ``bench_faults`` on a free
    port, not started; under ``RLIMIT_AS`` when ``rlimit_as`` (bytes)."""
    (port,) = free_ports(1)
    env = deepaas_env(resolve_loop(args.loop))
    if args.source is not None:
        source = str(Path(args.source).resolve())
        env["PYTHONPATH"] = os.pathsep.join(
            [source, *filter(None, [env.get("PYTHONPATH")])]
        )
    argv = [
        str(deepaas_run_path()),
        "--listen-ip",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--model-name",
        MODEL,
        "--workers",
        str(workers),
        *flags,
    ]
    return Server(label, argv, env, port, workdir, PREDICT_PATH, rlimit_as=rlimit_as)


@contextlib.contextmanager
def serving(*servers: Server) -> Iterator[list[int]]:
    """The servers started and answering inside; a :class:`BenchError`
    raised there gets their output. On the way out they are stopped, and the
    list yielded receives the pids left behind (of their groups, and any
    child of this process still alive)."""
    left: list[int] = []
    try:
        for server in servers:
            server.start()
        for server in servers:
            wait_ready(server, "?x=1")
        yield left
    except BenchError as exc:
        output = "\n".join(server.output() for server in servers)
        raise BenchError(f"{exc}\n--- server output ---\n{output}") from None
    finally:
        for server in servers:
            left += server.stop()
        left += [pid for pid in live_children() if pid not in left]


def run_benchmark(
    name: str,
    title: str,
    args: argparse.Namespace,
    measure: Callable[[Path, dict[str, Any]], int],
    *,
    wrk: str | None = None,
    intro: str = "",
) -> int:
    """A fault benchmark's ``main`` after its options: SIGTERM exits (so
    that its servers are stopped), the header and ``intro``, then, with the
    plugin installed for the run and a work directory,
    ``measure(workdir, report)``, which fills ``report`` and answers the exit
    status. Setup errors exit 2 and an interrupt 130; the report goes to
    ``--json`` whatever happened."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print_header(title, args, wrk)
    if intro:
        print(intro)
    report: dict[str, Any] = {"benchmark": name, "config": vars(args)}
    status = 2
    try:
        with (
            plugin_for_run(
                HERE / "fault_plugin",
                "deepaas_bench_faults",
                MODEL,
                PLUGIN_DIST,
                "the fault plugin",
                args.keep_plugin,
            ),
            tempfile.TemporaryDirectory(prefix="deepaas-bench-") as tmp,
        ):
            status = measure(Path(tmp), report)
    except BenchError as exc:
        report["error"] = str(exc)
        print(f"ERROR: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    finally:
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2, default=to_json) + "\n")
            print(f"results written to {args.json}")
    return status


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
