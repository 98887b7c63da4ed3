"""The GPU check of deepaas (issue 9): every GPU path, on a real GPU, in one command.

Run on a CUDA host::

    python3 benchmarks/gpu/run.py [--wheels DIR] [--out DIR] [--only a,b,...]
    python3 benchmarks/gpu/run.py --self-test [--out DIR]   # anywhere, no GPU

``--wheels DIR`` (what ``benchmarks/gpu/prepare.py`` made): installs them
first (``pip install --no-index --no-deps --target``) into a temporary
folder put first on ``PYTHONPATH`` and its ``bin/`` first on ``PATH``, so
deepaas and its plugins come from those wheels. Without it, the deepaas
installed for this Python is used.

The steps, each timed and bounded by a deadline (the whole run stays under
about 7 minutes), each keeping its files in ``OUT/<key>-<name>/``:

a. NVML inventory and one telemetry sample as deepaas reads them
   (``deepaas.engine.devices``) against ``nvidia-smi --query-gpu``:
   index, uuid, name and memory.total exactly; memory.used, utilisation,
   temperature and power within a tolerance of the nvidia-smi readings just
   before and after.
b. ``deepaas-run --devices auto --workers 2`` serving the torch example
   (``demo_torch``) and ``gpu_probe`` (``plugins/``): workers placed on the
   GPU(s) per ``/v2/system/``, right predictions, ``deepaas_gpu_*`` gauges in
   ``/metrics`` above zero while a load runs.
c. Batching on the GPU: ``bench_mlp`` (``benchmarks/batching.py``'s MLP) at
   32 connections, batched vs ``--max-batch-size 1``: throughput ratio
   (target >= 5x), mean batch, GPU utilisation in ``/metrics``.
d. A training with ``deepaas_gpus=1`` (and = every GPU, when there are
   several): lease, ``CUDA_VISIBLE_DEVICES`` in the job, data-parallel NCCL
   (``deepaas.training.distributed``) of world size = the GPUs present.
e. A worker SIGKILLed during GPU work: respawned, its request answered 503,
   its GPU memory gone from ``nvidia-smi --query-compute-apps`` within 5 s.
f. Framework runtimes (``deepaas.frameworks``), once there are some.

A step that fails is recorded and the next one runs; a piece that is missing
(no GPU, no torch, no nvidia-smi) makes a step or a check "skipped" with the
reason. Writes ``OUT/gpu-report.md`` and ``OUT/gpu-report.json``; with
``--bundle`` (the default when ``$OUT`` is set, as under the device tool,
which brings back at most 8 files) the steps' folders are packed into
``OUT/gpu-steps.tar.gz``.

``--self-test`` runs the same plumbing here, without a GPU: the test suite's
fake NVML (``tests/fakes/nvml.py``) in this process and, through
``fake_nvml/sitecustomize.py``, in every server, worker and job; canned
nvidia-smi answers; torch on the CPU. Checks that need CUDA are "skipped: no
CUDA (self-test)"; the figures are not GPU measurements.

Exit status: 0 the check ran (its failures are in the report), 2 it could not
run at all (bad arguments, wheels that do not install, no deepaas, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from _support import (
    HERE,
    REPO,
    SKIPPED,
    Context,
    Failure,
    Skip,
    Smi,
    Step,
    StepTimeout,
    load_worker,
    processes_alive,
)

FAKE_NVML_DIR = HERE / "fake_nvml"
FAKE_NVML_MODULE = REPO / "tests" / "fakes" / "nvml.py"
REQUIRED_OPTIONS = (
    "--devices",
    "--workers",
    "--max-batch-size",
    "--plugin",
    "--state-dir",
)
# Seconds each step may take: (on a GPU host, in the self-test); and the
# whole run's budget, which shortens the deadlines of the last steps if the
# first ones took long, keeping MIN_STEP_S for each step still to come.
DEADLINES = {
    "a": (30, 20),
    "b": (110, 60),
    "c": (140, 70),
    "d": (90, 60),
    "e": (80, 50),
    "f": (10, 10),
}
BUDGET_S = (420, 150)
MIN_STEP_S = 10
GIB = 1 << 30
FAKE_GPU = {
    "uuid": "GPU-5e1f7e57-0000-4000-8000-00000000cafe",
    "name": "NVIDIA H200 (fake, self-test)",
    "memory_total": 141 * GIB,
    "memory_used": 3 * GIB,
    "utilization_percent": 50,
    "temperature": 41,
    "power_mw": 312_500,
}
# What nvidia-smi would say of FAKE_GPU, off by a little where sampling
# would be (inside the tolerances of step a).
CANNED_SMI = {
    "--query-gpu": (
        f"0, {FAKE_GPU['uuid']}, {FAKE_GPU['name']}, {141 * 1024}, {3 * 1024}, "
        "52, 42, 309.87\n"
    ),
    "--query-compute-apps": "",
}
INFO_SCRIPT = r"""
import importlib.metadata, json, os, sys
info = {"python": sys.version.split()[0], "executable": sys.executable}
try:
    import deepaas
    info["deepaas"] = {
        "version": getattr(deepaas, "__version__", "?"),
        "path": os.path.dirname(deepaas.__file__),
    }
except Exception as exc:
    info["deepaas_error"] = f"{type(exc).__name__}: {exc}"
eps = importlib.metadata.entry_points(group="deepaas.v2.model")
info["entry_points"] = sorted({ep.name for ep in eps})
for name in ("aiohttp", "nvidia-ml-py", "numpy", "uvloop", "prometheus-client"):
    try:
        info.setdefault("packages", {})[name] = importlib.metadata.version(name)
    except Exception:
        info.setdefault("packages", {})[name] = None
try:
    import torch
    cuda = torch.cuda.is_available()
    info["torch"] = {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "device_count": torch.cuda.device_count() if cuda else 0,
    }
except Exception as exc:
    info["torch_error"] = f"{type(exc).__name__}: {exc}"
try:
    import onnxruntime
    info["onnxruntime"] = {
        "version": onnxruntime.__version__,
        "providers": onnxruntime.get_available_providers(),
    }
except Exception as exc:
    info["onnxruntime_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(info))
"""


class CannotRun(Exception):
    """The check cannot run at all here; the message says why."""


# -- setting up ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run every GPU path of deepaas on this host (issue 9) and "
        "write gpu-report.md and gpu-report.json.",
    )
    parser.add_argument(
        "--wheels",
        type=Path,
        metavar="DIR",
        help="install these wheels (benchmarks/gpu/prepare.py's) into a "
        "temporary folder and use them (default: the installed deepaas)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where the report and each step's files go (default: $OUT when "
        "set, else a new temporary folder)",
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="no GPU: fake NVML, canned nvidia-smi, torch on the CPU",
    )
    parser.add_argument(
        "--only",
        metavar="a,b,...",
        help="run only these steps (keys a-f or names); the others are "
        "reported as not selected",
    )
    parser.add_argument(
        "--bundle",
        action=argparse.BooleanOptionalAction,
        help="pack the steps' folders into OUT/gpu-steps.tar.gz (and remove "
        "them), leaving three files in OUT (default: on when $OUT is set, as "
        "under the device tool, which brings back at most 8 files)",
    )
    parser.add_argument("--load-worker", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only is not None:
        from _steps import STEPS

        known = {key: key for key, *_ in STEPS} | {name: key for key, name, *_ in STEPS}
        wanted = [item.strip() for item in args.only.split(",") if item.strip()]
        unknown = [item for item in wanted if item not in known]
        if unknown or not wanted:
            parser.error(
                f"--only: unknown step(s) {', '.join(unknown) or '(none given)'}; "
                f"use {', '.join(f'{k} ({n})' for k, n, *_ in STEPS)}"
            )
        args.only = {known[item] for item in wanted}
    return args


def install_wheels(wheels: Path, tmp: Path) -> Path:
    """``pip install --no-index --no-deps --target``; the site folder."""
    found = sorted(glob.glob(str(wheels / "*.whl")))
    if not found:
        raise CannotRun(
            f"no wheels in {wheels}: run benchmarks/gpu/prepare.py first (and "
            "carry that folder to this host)"
        )
    site = tmp / "site"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",
        "--no-deps",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--target",
        str(site),
        *found,
    ]
    print(f"installing {len(found)} wheels from {wheels} into {site} ...", flush=True)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise CannotRun("pip install of the wheels took more than 300s") from None
    if proc.returncode != 0:
        raise CannotRun(
            f"pip install of the wheels failed ({proc.returncode}):\n"
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    return site


def manifest_notes(wheels: Path | None) -> tuple[dict[str, Any], list[str]]:
    """The wheels' MANIFEST.json (if any), and whether this host has what it
    says the image must provide."""
    if wheels is None or not (wheels / "MANIFEST.json").exists():
        return {}, []
    try:
        manifest = json.loads((wheels / "MANIFEST.json").read_text())
    except ValueError as exc:
        return {}, [f"MANIFEST.json unreadable: {exc}"]
    notes = []
    try:
        import importlib.metadata

        from packaging.specifiers import SpecifierSet
    except ImportError:
        return manifest, ["packaging is not installed: image versions not checked"]
    for name, want in sorted(manifest.get("image_provides", {}).items()):
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            notes.append(f"MISSING on this host: {name} {want.get('specifier', '')}")
            continue
        specifier = SpecifierSet(want.get("specifier", ""))
        if not specifier.contains(have, prereleases=True):
            notes.append(f"{name} {have} here, but {specifier} is asked")
    return manifest, notes


def deepaas_run_command(site: Path | None) -> list[str]:
    """The console script the wheels or this environment installed, else
    ``python -m deepaas.cmd.run``."""
    for folder in ([site / "bin"] if site else []) + [Path(sys.executable).parent]:
        script = folder / "deepaas-run"
        if script.exists():
            return [sys.executable, str(script)]
    return [sys.executable, "-m", "deepaas.cmd.run"]


def host_info(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """What the environment the servers run in has (in a child process, so
    that torch is never imported here; in ``cwd``, not in the repository,
    whose ``deepaas/`` would shadow the wheels' for ``python -c``)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", INFO_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        raise CannotRun(
            "probing the environment (imports) took more than 180s"
        ) from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise CannotRun(
            f"probing the environment failed ({proc.returncode}): "
            f"{proc.stderr.strip()[-1500:]}"
        )
    info: dict[str, Any] = json.loads(lines[-1])
    if "deepaas" not in info:
        raise CannotRun(f"deepaas is not importable: {info.get('deepaas_error')}")
    return info


def smi_facts(smi: Smi) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    with contextlib.suppress(Failure):
        facts["driver"] = sorted({v for v in smi.field("driver_version") if v})
    with contextlib.suppress(Failure):
        facts["gpus"] = smi.field("name")
    return facts


def _fake_nvml_installer() -> Any:
    """``install`` of ``fake_nvml/sitecustomize.py``, loaded by its path."""
    path = FAKE_NVML_DIR / "sitecustomize.py"
    spec = importlib.util.spec_from_file_location("_gpu_check_sitecustomize", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.install


def build_context(
    args: argparse.Namespace, tmp: Path
) -> tuple[Context, dict[str, Any]]:
    out: Path = args.out
    site = install_wheels(args.wheels.resolve(), tmp) if args.wheels else None
    manifest, manifest_problems = manifest_notes(args.wheels)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DEEPAAS_", "OS_DEFAULT__"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    paths = [str(site)] if site else []
    if args.self_test:
        if not FAKE_NVML_MODULE.exists():
            raise CannotRun(f"--self-test needs {FAKE_NVML_MODULE} (the test suite's)")
        paths.insert(0, str(FAKE_NVML_DIR))
        env["GPU_CHECK_FAKE_NVML"] = json.dumps(
            {"module": str(FAKE_NVML_MODULE), "gpus": [FAKE_GPU]}
        )
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    if site:
        env["PATH"] = os.pathsep.join([str(site / "bin"), env.get("PATH", "")])
        sys.path.insert(0, str(site))  # deepaas for step a, from the wheels
    if args.self_test:
        try:
            install = _fake_nvml_installer()
            install(json.loads(env["GPU_CHECK_FAKE_NVML"]))
        except Exception as exc:
            raise CannotRun(
                f"cannot install the fake NVML ({type(exc).__name__}: {exc}); "
                "it needs nvidia-ml-py installed"
            ) from None
    info = host_info(env, tmp)
    command = deepaas_run_command(site)
    try:
        helped = subprocess.run(
            [*command, "--help"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        raise CannotRun(f"{' '.join(command)} --help took more than 120s") from None
    missing = [opt for opt in REQUIRED_OPTIONS if opt not in helped.stdout]
    if helped.returncode != 0 or missing:
        raise CannotRun(
            f"{' '.join(command)} --help: exit {helped.returncode}, missing "
            f"{', '.join(missing) or 'nothing'}; {helped.stderr.strip()[-800:]}"
        )
    smi = Smi(CANNED_SMI if args.self_test else None)
    ctx = Context(
        selftest=args.self_test,
        out=out,
        python=sys.executable,
        deepaas_run=command,
        env=env,
        smi=smi,
        info=info,
        tmp=tmp,
    )
    environment = {
        "mode": "self-test" if args.self_test else "gpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": info.get("python"),
        "deepaas": info.get("deepaas"),
        "deepaas_run": command,
        "wheels": str(args.wheels) if args.wheels else None,
        "wheels_commit": manifest.get("deepaas_source"),
        "image_problems": manifest_problems,
        "packages": info.get("packages"),
        "torch": info.get("torch") or info.get("torch_error"),
        "onnxruntime": info.get("onnxruntime") or info.get("onnxruntime_error"),
        "entry_points": info.get("entry_points"),
        "nvidia_smi": {"canned": True} if args.self_test else smi_facts(smi),
    }
    return ctx, environment


# -- running the steps -----------------------------------------------------------


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`StepTimeout` in this (the main) thread after ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise StepTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_step(ctx: Context, step: Step, fn: Any) -> None:
    step.started = time.monotonic()
    try:
        with deadline(step.deadline_s):
            fn(ctx, step)
    except StepTimeout:
        step.error = f"timed out after {step.deadline_s:g}s (its deadline)"
    except Skip as exc:
        step.skip("step", str(exc))
    except Failure as exc:
        step.error = str(exc)
    except Exception as exc:
        step.error = f"{type(exc).__name__}: {exc}"
        (step.dir / "error.txt").write_text(traceback.format_exc())
        step.notes.append(f"traceback in {step.key}-{step.name}/error.txt")
    finally:
        step.seconds = time.monotonic() - step.started


def first_line(text: str, limit: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def run_all(ctx: Context, only: set[str] | None, started: float) -> list[Step]:
    from _steps import STEPS

    mode = 1 if ctx.selftest else 0
    chosen = [key for key, *_ in STEPS if only is None or key in only]
    steps = []
    for key, name, title, fn in STEPS:
        left = BUDGET_S[mode] - (time.monotonic() - started)
        later = len([k for k in chosen if k > key])
        allowed = left - MIN_STEP_S * later
        limit = min(DEADLINES[key][mode], allowed)
        step = Step(key, name, title, ctx.out, float(limit))
        steps.append(step)
        if key not in chosen:
            step.selected = False
            step.skip("step", "not selected (--only)")
            continue
        if allowed < MIN_STEP_S:
            step.skip("step", f"the run's {BUDGET_S[mode]}s budget is spent")
            continue
        print(f"[{key}] {title} ...", flush=True)
        run_step(ctx, step, fn)
        why = f": {first_line(step.reason)}" if step.reason else ""
        print(f"[{key}] {step.status}{why} ({step.seconds:.1f}s)", flush=True)
        if step.summary:
            print(f"    {first_line(step.summary, 300)}", flush=True)
    return steps


# -- the report -----------------------------------------------------------------------


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def report_md(
    environment: dict[str, Any], steps: list[Step], extra: dict[str, Any]
) -> str:
    mode = environment["mode"]
    lines = [
        f"# deepaas GPU check — {environment['date']}",
        "",
    ]
    if mode == "self-test":
        lines += [
            "**SELF-TEST**: fake NVML, canned nvidia-smi, torch on the CPU. The "
            "figures are not GPU measurements; checks that need CUDA are skipped.",
            "",
        ]
    deepaas = environment.get("deepaas") or {}
    torch = environment.get("torch")
    torch_text = (
        f"torch {torch.get('version')} (CUDA {torch.get('cuda')}, available: "
        f"{torch.get('cuda_available')})"
        if isinstance(torch, dict)
        else f"torch: {torch}"
    )
    smi = environment.get("nvidia_smi") or {}
    lines += [
        f"- host: {environment['host']}, {environment['cpus']} CPUs, Python "
        f"{environment['python']}",
        f"- deepaas {deepaas.get('version')} from {deepaas.get('path')}"
        + (f" (wheels {environment['wheels']})" if environment.get("wheels") else ""),
        f"- {torch_text}",
        f"- GPUs (nvidia-smi): {smi.get('gpus', '-')}, driver {smi.get('driver', '-')}",
    ]
    for problem in environment.get("image_problems") or []:
        lines.append(f"- image: {problem}")
    lines += [
        "",
        "| step | status | figures | seconds |",
        "|---|---|---|---|",
    ]
    for step in steps:
        reason = first_line(step.reason, 200)
        status = f"{step.status}: {reason}" if reason else step.status
        lines.append(
            f"| {step.key}. {cell(step.title)} | {cell(status)} | "
            f"{cell(step.summary or '-')} | {step.seconds:.1f} |"
        )
    lines += [
        "",
        f"Total: {extra['seconds']:.1f}s. Processes left behind: "
        f"{extra['left_behind'] or 'none'}. Each step's files (server logs, "
        f"...): {extra['step_files']}.",
        "",
    ]
    for step in steps:
        lines += [f"## {step.key}. {step.title}", ""]
        reason = first_line(step.reason, 300)
        lines.append(f"Status: **{step.status}**" + (f" ({reason})" if reason else ""))
        lines.append("")
        if step.error:
            lines += ["```", step.error.strip(), "```", ""]
        for check in step.checks:
            detail = f" — {check.detail}" if check.detail else ""
            lines.append(f"- {check.status}: {check.name}{detail}")
        for note in step.notes:
            lines.append(f"- note: {note}")
        if step.key == "a" and "tolerances" in step.figures:
            tolerances = ", ".join(
                f"{k} {v}" for k, v in step.figures["tolerances"].items()
            )
            lines.append(
                f"- tolerances (around the nvidia-smi readings just before and "
                f"after deepaas's): {tolerances}"
            )
        lines.append("")
    return "\n".join(lines)


def write_report(
    ctx_out: Path, environment: dict[str, Any], steps: list[Step], extra: dict[str, Any]
) -> None:
    document = {
        "environment": environment,
        "steps": [step.to_json() for step in steps],
        **extra,
    }
    (ctx_out / "gpu-report.json").write_text(
        json.dumps(document, indent=2, default=str)
    )
    (ctx_out / "gpu-report.md").write_text(report_md(environment, steps, extra))


def bundle(out: Path, steps: list[Step]) -> None:
    folders = [out / f"{s.key}-{s.name}" for s in steps]
    with tarfile.open(out / "gpu-steps.tar.gz", "w:gz") as tar:
        for folder in folders:
            if folder.exists():
                tar.add(folder, arcname=folder.name)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def descendants() -> list[int]:
    """Our live descendants (by /proc), in any process group."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in "ZX":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load_worker:
        return load_worker(args.load_worker)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.out is None:
        args.out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="deepaas-gpu-check-"))
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="deepaas-gpu-run-"))
    try:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            ctx, environment = build_context(args, tmp)
        except (CannotRun, OSError) as exc:
            print(f"run.py: cannot run: {exc}", file=sys.stderr)
            return 2
        print(
            f"GPU check ({environment['mode']}): deepaas "
            f"{(environment.get('deepaas') or {}).get('version')}, report in {ctx.out}",
            flush=True,
        )
        steps = run_all(ctx, args.only, started)
        left = sorted(set(ctx.left_behind) | set(processes_alive(descendants())))
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        packed = args.bundle or (args.bundle is None and bool(os.environ.get("OUT")))
        extra = {
            "seconds": round(time.monotonic() - started, 1),
            "left_behind": left,
            "step_files": "gpu-steps.tar.gz" if packed else "<key>-<name>/",
        }
        write_report(ctx.out, environment, steps, extra)
        if packed:
            bundle(ctx.out, steps)
        counts = {
            s: sum(step.status == s for step in steps)
            for s in ("pass", "fail", SKIPPED)
        }
        print(
            f"done in {extra['seconds']:.0f}s: {counts['pass']} passed, "
            f"{counts['fail']} failed, {counts[SKIPPED]} skipped; "
            f"{ctx.out / 'gpu-report.md'}",
            flush=True,
        )
        return 0
    except KeyboardInterrupt:
        print("run.py: interrupted", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug here: one line, not a traceback
        print(f"run.py: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
