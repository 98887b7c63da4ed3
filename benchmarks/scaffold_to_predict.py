"""Seconds from a fresh virtual environment with deepaas to a first prediction
of a new model.

    python benchmarks/scaffold_to_predict.py [--deepaas PATH] [--runs N] [--cold]

Each run makes a fresh venv (``python -m venv``) and installs deepaas into it
(``pip install -e PATH``, from the package index: the **setup**, timed and
shown but not part of the target); then times, as a newcomer types them in
that venv:

1. ``deepaas-cli new mymodel``;
2. ``pip install -e mymodel`` (pip's default build isolation, as a user runs it);
3. ``deepaas-run --model-name mymodel`` until it answers at all;
4. ``POST /v2/models/mymodel/predict/?x=1`` polled until the first 200.

Target (issue 15): steps 1-4, from the venv with deepaas installed to the
first successful prediction, under 60 s. ``--cold`` gives pip
``--no-cache-dir``, as on a machine that never installed these packages.
Every process started is stopped; the venvs are removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

from _harness import BenchError, Server, free_ports, post

HERE = Path(__file__).resolve().parent
TARGET_S = 60.0
MODEL = "mymodel"
STEP_TIMEOUT_S = 600.0


def header(args: argparse.Namespace, argv: list[str]) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    commit = subprocess.run(
        ["git", "-C", str(args.deepaas), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    pip = [sys.executable, "-m", "pip"]
    cache = Path(_output([*pip, "cache", "dir"]) or Path.home() / ".cache" / "pip")
    cache_note = "not used (--cold)" if args.cold else f"{cache} ({_size_mb(cache)} MB)"
    # where packages come from: the figures depend on it
    sources: list[str] = []
    for line in _output([*pip, "config", "list"]).splitlines():
        key, _, value = line.partition("=")
        if "index" in key or "find-links" in key:
            sources += [v for v in value.strip("'\"").split() if v not in sources]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *argv])
    return (
        f"  {now}; {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; load average {load}\n"
        f"  deepaas {args.deepaas} (commit {commit or '?'}); pip cache: {cache_note}\n"
        f"  package sources: PyPI{''.join(', ' + s for s in sources)}\n"
        f"  command: {command}"
    )


def _output(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _size_mb(path: Path) -> int:
    if not path.is_dir():
        return 0
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return round(total / 2**20)


def clean_env(venv: Path, state: Path, cold: bool) -> dict[str, str]:
    """The environment of a shell in the venv: nothing of ours (no
    PYTHONPATH, no deepaas settings), the venv's bin first on PATH; pip's
    own settings (index, certificates) are kept, as a user's would be."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
        and not k.startswith(("DEEPAAS_", "OS_DEFAULT__"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        DEEPAAS_STATE_DIR=str(state),  # not the user's own
    )
    if cold:
        env["PIP_NO_CACHE_DIR"] = "1"
    return env


def timed(label: str, argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Run a command to its end; its seconds. A failure ends the benchmark
    with its output."""
    started = time.monotonic()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise BenchError(
            f"{label} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return seconds


def serve_and_predict(
    venv: Path, work: Path, env: dict[str, str]
) -> tuple[float, float, bytes]:
    """Launch deepaas-run; (seconds until it answers at all, seconds until
    the first 200 predict, that answer). Stops it, whatever happens."""
    port = free_ports(1)[0]
    server = Server(
        label="deepaas-run",
        argv=[
            *(str(venv / "bin" / "deepaas-run"), "--model-name", MODEL),
            *("--listen-ip", "127.0.0.1", "--listen-port", str(port)),
        ],
        env=env,
        port=port,
        workdir=work,
        path=f"/v2/models/{MODEL}/predict/",
    )
    url = f"{server.base_url}?x=1"
    started = time.monotonic()
    server.start()
    listening = None
    try:
        while time.monotonic() - started < STEP_TIMEOUT_S:
            assert server.proc is not None
            if server.proc.poll() is not None:
                raise BenchError(f"deepaas-run exited:\n{server.output()}")
            try:
                status, body = post(url, timeout=5.0)
            except (OSError, urllib.error.URLError):
                time.sleep(0.02)
                continue
            now = time.monotonic() - started
            listening = listening if listening is not None else now
            if status == 200:
                return listening, now, body
            time.sleep(0.02)
        raise BenchError(f"no successful predict:\n{server.output()}")
    finally:
        left = server.stop()
        if left:
            raise BenchError(f"deepaas-run left processes behind: {left}")


def one_run(args: argparse.Namespace, root: Path) -> dict[str, float]:
    venv, work = root / "venv", root / "work"
    work.mkdir(parents=True)
    env = clean_env(venv, root / "state", args.cold)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip"]
    steps: dict[str, float] = {}
    steps["python -m venv"] = timed(
        "venv", [sys.executable, "-m", "venv", str(venv)], work, env
    )
    steps[f"pip install -e {args.deepaas}"] = timed(
        "deepaas install", [*pip, "install", "-q", "-e", str(args.deepaas)], work, env
    )
    steps["deepaas-cli new mymodel"] = timed(
        "new", [str(venv / "bin" / "deepaas-cli"), "new", MODEL], work, env
    )
    steps["pip install -e mymodel"] = timed(
        "plugin install", [*pip, "install", "-q", "-e", MODEL], work, env
    )
    listening, predicted, body = serve_and_predict(venv, work, env)
    steps["deepaas-run: answers"] = listening
    steps["deepaas-run: first 200 predict"] = predicted
    version = subprocess.run(
        [python, "-m", "pip", "--version"], capture_output=True, text=True, env=env
    ).stdout.split()[1]
    print(f"  pip {version} in the venv; first prediction: {body.decode().strip()}")
    return steps


def report(steps: dict[str, float]) -> float:
    """Print one run's steps; its timeline total (the target's part)."""
    names = list(steps)
    setup, timeline = names[:2], names[2:]
    print("  setup (not in the target):")
    for name in setup:
        print(f"    {name:<50} {steps[name]:6.1f} s")
    print("  from the venv with deepaas installed to the first prediction:")
    for name in timeline:
        if name == "deepaas-run: answers":
            continue
        shown = name
        if name == "deepaas-run: first 200 predict":
            shown = "deepaas-run --model-name mymodel, first predict"
        print(f"    {shown:<50} {steps[name]:6.1f} s")
    print(
        f"      (of which until deepaas-run answered at all: "
        f"{steps['deepaas-run: answers']:.1f} s)"
    )
    total = sum(steps[name] for name in timeline if name != "deepaas-run: answers")
    print(f"    {'total':<50} {total:6.1f} s   (target < {TARGET_S:g} s)")
    print(f"    {'with the setup':<50} {total + sum(steps[n] for n in setup):6.1f} s")
    return total


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--deepaas",
        type=Path,
        default=HERE.parent,
        help="the deepaas checkout to install (default: this one)",
    )
    parser.add_argument("--runs", type=int, default=1, help="fresh venvs, one each")
    parser.add_argument("--cold", action="store_true", help="pip --no-cache-dir")
    parser.add_argument("--keep", action="store_true", help="keep the venvs")
    args = parser.parse_args(argv)
    args.deepaas = args.deepaas.resolve()
    print(
        "Scaffold to prediction: deepaas-cli new, pip install -e, deepaas-run, predict"
    )
    print(header(args, [str(Path(sys.argv[0])), *argv]))
    totals = []
    for run in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="deepaas-scaffold-bench-"))
        print(f"\nrun {run + 1}: {root}")
        try:
            totals.append(report(one_run(args, root)))
        except BenchError as exc:
            print(f"  FAILED: {exc}")
            print("verdict: FAIL")
            return 1
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    worst = max(totals)
    verdict = "PASS" if worst < TARGET_S else "FAIL"
    print(f"\nworst total {worst:.1f} s, target < {TARGET_S:g} s: {verdict}")
    print(f"verdict: {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
