"""``benchmarks/gpu/run.py``, the GPU check (issue 9), kept from rotting here.

There is no GPU here: ``--self-test`` runs the check's plumbing against the
fake NVML of ``tests/fakes/nvml.py`` (in the script and, through a
``sitecustomize``, in every server, worker and job it starts), canned
``nvidia-smi`` answers and torch on the CPU. These tests check that its
report is complete (every step a-f with a status, the JSON and the Markdown
saying the same), that nothing it started outlives it, and that it never
answers with a traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "benchmarks" / "gpu" / "run.py"
STEPS = list("abcdef")
STATUSES = {"pass", "fail", "skipped"}
MARK = "GPU_CHECK_TEST_MARK"


def run(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[int, str, str]:
    """run.py ARGS with a mark in its environment: (exit status, output,
    the mark), after checking that no process holding the mark is left."""
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env[MARK] = mark
    proc = subprocess.run(
        [sys.executable, str(RUN), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert not marked(mark), f"processes left behind: {marked(mark)}\n{output}"
    return proc.returncode, output, mark


def marked(mark: str) -> list[int]:
    """Live processes whose environment holds ``MARK=mark`` (every process
    run.py starts inherits it: servers, workers, training jobs, load)."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


def table(markdown: str) -> dict[str, dict[str, str]]:
    """The report's table: step key -> status (before any ':') and seconds."""
    rows = {}
    for line in markdown.splitlines():
        match = re.match(r"^\| ([a-f])\. .*\| ([\d.]+) \|$", line)
        if match:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[match.group(1)] = {
                "status": cells[1].split(":", 1)[0],
                "seconds": cells[3],
            }
    return rows


def load_report(out: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    report = json.loads((out / "gpu-report.json").read_text())
    steps = {step["key"]: step for step in report["steps"]}
    return report, steps, (out / "gpu-report.md").read_text()


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_self_test_report_is_complete(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output, _ = run(tmp_path, "--self-test", "--out", str(out))
    assert code == 0, output

    report, steps, markdown = load_report(out)
    assert sorted(steps) == STEPS
    for step in steps.values():
        assert step["status"] in STATUSES, step
        assert step["checks"], step
        if step["status"] != "pass":
            assert step["reason"], step
    failed = {key: s["reason"] for key, s in steps.items() if s["status"] == "fail"}
    assert not failed, failed
    assert report["left_behind"] == []
    assert report["environment"]["mode"] == "self-test"

    # What runs without CUDA passes; what needs CUDA says so, after the
    # plumbing around it (servers, answers, metrics, jobs) passed.
    assert steps["a"]["status"] == "pass"
    assert steps["b"]["status"] == "pass"
    for key in "cde":
        assert steps[key]["status"] == "skipped", steps[key]
        assert steps[key]["reason"] == "no CUDA (self-test)", steps[key]
        assert any(c["status"] == "pass" for c in steps[key]["checks"]), steps[key]
    assert "issue 11" in steps["f"]["reason"] or "no step" in steps["f"]["reason"]

    # The Markdown says what the JSON says; each step's line is printed.
    rows = table(markdown)
    assert sorted(rows) == STEPS, markdown
    for key, step in steps.items():
        assert rows[key]["status"] == step["status"], (rows[key], step)
        assert float(rows[key]["seconds"]) == pytest.approx(step["seconds"], abs=0.1)
        assert f"[{key}] {step['status']}" in output
    assert "SELF-TEST" in markdown


@pytest.mark.timeout(120)
def test_only_and_bundle(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output, _ = run(
        tmp_path, "--self-test", "--only", "telemetry", "--bundle", "--out", str(out)
    )
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu-report.json",
        "gpu-report.md",
        "gpu-steps.tar.gz",
    ]
    _, steps, markdown = load_report(out)
    assert steps["a"]["status"] == "pass"
    for key in "bcdef":
        assert steps[key]["reason"] == "not selected (--only)"
        assert table(markdown)[key]["status"] == "skipped"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--wheels", "no-such-folder"], "no wheels in"),
        (["--only", "z"], "unknown step"),
    ],
)
def test_cannot_run_exits_2_with_a_line(
    tmp_path: Path, args: list[str], says: str
) -> None:
    code, output, _ = run(tmp_path, *args, "--out", str(tmp_path / "out"))
    assert code == 2
    assert says in output


@pytest.fixture
def support() -> Any:
    sys.path.insert(0, str(RUN.parent))
    try:
        yield importlib.import_module("_support")
    finally:
        sys.path.remove(str(RUN.parent))


def test_nvidia_smi_and_metrics_parsing(support: Any) -> None:
    rows = support.parse_smi_csv(
        "0, GPU-1, NVIDIA H200, 143771, 0, 0, 31, 76.54\n"
        "1, GPU-2, Odd, Name, 81559, [N/A], [Not Supported], 40, [N/A]\n",
        support.SMI_FIELDS,
    )
    assert rows[0]["name"] == "NVIDIA H200" and rows[0]["power.draw"] == "76.54"
    assert rows[1]["name"] == "Odd, Name"
    assert rows[1]["memory.used"] is None and rows[1]["power.draw"] is None
    apps = support.parse_compute_apps("1234, 1530\n99, [N/A]\n")
    assert apps == {1234: 1530, 99: None}
    assert support.parse_compute_apps("No running processes found\n") == {}

    samples = support.parse_metrics(
        "# HELP deepaas_gpu_utilization_ratio x\n"
        'deepaas_gpu_utilization_ratio{gpu="0",name="NVIDIA \\"H\\"",uuid="GPU-1"} '
        "0.97\n"
        'deepaas_worker_restarts_total{model="m",reason="crashed"} 2.0\n'
        'deepaas_worker_restarts_total{model="m",reason="timeout"} 1.0\n'
    )
    assert support.gpu_gauges(samples) == {"utilization_ratio": {"0": 0.97}}
    assert samples[0][1]["name"] == 'NVIDIA "H"'
    total = support.metric_sum
    assert total(samples, "deepaas_worker_restarts_total", model="m") == 3.0
    assert total(samples, "deepaas_worker_restarts_total", reason="crashed") == 2.0
    assert total(samples, "deepaas_nothing") is None
