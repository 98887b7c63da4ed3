"""``benchmarks/gpu/prepare.py``: the wheels a GPU host without an index needs.

The dry run resolves the list from the ``pyproject.toml`` files and the
installed metadata, without the network, so these tests notice when a new
dependency of deepaas would be missing on the GPU machine. The real run
(downloads) is not tested here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.needs import needs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = needs("tomli")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu" / "prepare.py"

# deepaas's own dependencies that the GPU image lacks, and some it has
# (.library/device/KINDS.md).
CARRIED = {
    "marshmallow",
    "webargs",
    "apispec",
    "stevedore",
    "swagger-ui-bundle",
    "platformdirs",
}
IN_IMAGE = {"aiohttp", "numpy", "prometheus-client", "nvidia-ml-py", "uvloop"}
BUILT = {
    "deepaas",
    "deepaas-example-plugins",
    "deepaas-bench-mlp",
    "deepaas-bench-plugins",
    "deepaas-bench-faults",
}


def offline_env() -> dict[str, str]:
    """The environment, with any attempt to reach an index bound to fail."""
    env = dict(os.environ)
    env.update(
        PIP_NO_INDEX="1",
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
    )
    return env


def dry_run(*argv: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--dest", str(dest), *argv],
        capture_output=True,
        text=True,
        env=offline_env(),
        timeout=60,
    )


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> dict:
    dest = tmp_path_factory.mktemp("gpu") / "wheels"
    proc = dry_run("--json", dest=dest)
    assert proc.returncode == 0, proc.stderr
    assert not dest.exists()  # a dry run writes nothing
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def prepare() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("gpu_prepare", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def names(entries: list[dict]) -> list[str]:
    return [canonicalize_name(entry["name"]) for entry in entries]


def test_dry_run_carries_what_the_image_lacks(plan):
    carried = names(plan["download"])
    assert set(carried) >= CARRIED, carried
    assert not IN_IMAGE & set(carried), carried
    assert set(plan["image_provides"]) >= IN_IMAGE
    assert len(carried) == len(set(carried))  # one version each
    for entry in plan["download"]:
        assert entry["version"], entry  # installed here, so pinned
        assert entry["why"], entry


def test_dry_run_builds_deepaas_and_the_example_plugins(plan):
    assert set(names(plan["build"])) == BUILT
    for entry in plan["build"]:
        assert (REPO / entry["path"] / "pyproject.toml").is_file()


def test_every_direct_dependency_is_carried_or_in_the_image(plan):
    """A dependency added to pyproject.toml shows up in the plan."""
    with open(REPO / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    accounted = set(names(plan["download"])) | set(plan["image_provides"])
    for line in deps:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not for this Python (tomli before 3.11): not installed
        assert canonicalize_name(requirement.name) in accounted, line
    assert plan["image_provides"]["aiohttp"]["asked_by"]["deepaas"]


def test_dry_run_human_listing(tmp_path):
    proc = dry_run(dest=tmp_path / "wheels")
    assert proc.returncode == 0, proc.stderr
    for name in CARRIED | BUILT:
        assert name in proc.stdout.replace("_", "-"), name
    listed_to_carry = proc.stdout.split("already in the GPU image")[0]
    for name in IN_IMAGE:
        assert f"  {name}" not in listed_to_carry, name


def test_include_carries_a_package_the_image_has(tmp_path):
    proc = dry_run("--json", "--include", "aiohttp", dest=tmp_path / "wheels")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert "aiohttp" in names(doc["download"])
    assert "aiohttp" not in doc["image_provides"]


def test_resolve_markers_extras_and_the_image(prepare):
    """Markers are evaluated for CPython 3.12 on Linux; extras only when
    asked; packages the image has are recorded with their ranges."""
    metadata = {
        "alpha": ("1.0", ["beta>=2", 'gamma; python_version < "3.10"']),
        "beta": ("2.5", ["numpy>=1.20", 'delta; extra == "more"']),
        "epsilon": ("0.3", ['win; sys_platform == "win32"', "alpha"]),
    }

    def fetch(need):
        need.version, need.requires = metadata[need.name]

    project = {"name": "proj", "version": "1.0", "dependencies": ["alpha", "epsilon"]}
    local = [(prepare.LocalProject(".", "test"), project)]
    plan = prepare.resolve(local, fetch)
    assert list(plan.carry) == ["alpha", "epsilon", "beta"]
    assert plan.carry["alpha"].why() == "proj asks for it; epsilon 0.3 asks for it"
    assert plan.image == {"numpy": {"beta 2.5": ">=1.20"}}


def test_resolve_refuses_a_conflict(prepare):
    def fetch(need):
        need.version, need.requires = {"a": ("1.0", ["b"]), "b": ("1", ["a>=2"])}[
            need.name
        ]

    project = {"name": "proj", "version": "1.0", "dependencies": ["a"]}
    with pytest.raises(SystemExit, match="already chosen"):
        prepare.resolve([(prepare.LocalProject(".", "test"), project)], fetch)


@pytest.mark.parametrize(
    ("filename", "ok"),
    [
        ("x-1.0-py3-none-any.whl", True),
        ("x-1.0-py2.py3-none-any.whl", True),
        ("x-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
        ("x-1.0-cp38-abi3-manylinux_2_28_x86_64.whl", True),
        ("x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", False),
        ("x-1.0-cp312-cp312-manylinux_2_17_aarch64.whl", False),
        ("x-1.0-cp312-cp312-musllinux_1_2_x86_64.whl", False),
        ("x-1.0-cp312-cp312-linux_x86_64.whl", False),
        ("x-1.0-cp312-cp312-macosx_11_0_arm64.whl", False),
    ],
)
def test_wheel_tags(prepare, filename, ok):
    assert prepare.tag_ok(filename) is ok


def test_size_limit(prepare):
    mib = 1024 * 1024
    assert prepare.size_problem(3 * mib, 2 * mib) is None
    assert prepare.size_problem(3 * mib, None) is None
    assert "over the 64 MiB" in prepare.size_problem(65 * mib, None)
    problem = prepare.size_problem(40 * mib, 30 * mib)
    assert "working tree" in problem and "70.00 MiB" in problem
