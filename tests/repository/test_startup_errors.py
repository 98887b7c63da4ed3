"""A repository that cannot be served stops ``deepaas-run`` before it
serves anything: exit status 1, one line per problem, each naming its
file and what to do (real ``deepaas-run`` processes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deepaas_run import DEEPAAS_RUN, REPO_ROOT, register_plugins
from tests.needs import needs
from tests.repository import models

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
]


def refused(repo: Path, *args: str, path: tuple[Path, ...] = ()) -> list[str]:
    """``deepaas-run --model-repository repo *args``, which must exit 1
    without a traceback: the lines it printed."""
    command = [DEEPAAS_RUN, "--listen-port", "0", "--devices", "cpu"]
    done = subprocess.run(
        [*command, "--model-repository", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=repo.parent,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.pathsep.join(map(str, [*path, REPO_ROOT])),
        },
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "ready in" not in done.stderr
    assert all(line.startswith("deepaas-run: error: ") for line in lines), lines
    return [line.removeprefix("deepaas-run: error: ") for line in lines]


def test_an_unknown_config_key(tmp_path: Path) -> None:
    models.save_onnx_linear(tmp_path / "linear.onnx")
    (tmp_path / "linear.toml").write_text("max_batch_size = 4\nbatch_delay = 2\n")
    assert refused(tmp_path) == [
        f"{tmp_path / 'linear.toml'}: unknown key 'batch_delay'; the keys are "
        "description, inputs, outputs, max_batch_size, max_delay_ms, labels, "
        "top_k, image, threads, workers, devices (docs/model-files.md)"
    ]


def test_a_corrupt_file(tmp_path: Path) -> None:
    needs("onnxruntime")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07 not a protobuf of a model")
    (line,) = refused(tmp_path)
    assert line.startswith(f"{tmp_path / 'broken.onnx'}: onnxruntime cannot load it (")
    assert line.endswith(
        "check that it is an ONNX model that onnx.checker.check_model accepts"
    )


def test_a_missing_framework(tmp_path: Path) -> None:
    """onnxruntime hidden by a package that is not there (as a machine
    without the extra): the probe's import fails."""
    (tmp_path / "linear.onnx").write_bytes(b"")
    shadow = tmp_path / "shadow"
    (shadow / "onnxruntime").mkdir(parents=True)
    (shadow / "onnxruntime" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'onnxruntime'\", "
        "name='onnxruntime')\n"
    )
    assert refused(tmp_path, path=(shadow,)) == [
        f"{tmp_path / 'linear.onnx'}: needs onnxruntime, which is not installed; "
        "pip install 'deepaas[onnx]'"
    ]


def test_torchscript_without_a_signature(tmp_path: Path) -> None:
    models.save_torchscript_linear(tmp_path / "linear.pt")
    (line,) = refused(tmp_path)
    assert line.startswith(
        f"{tmp_path / 'linear.pt'}: a TorchScript archive records no datatypes or "
        f"shapes; declare them in {tmp_path / 'linear.toml'}: inputs = [{{name = "
    )


def test_an_onnx_tensor_of_unknown_rank(tmp_path: Path) -> None:
    # onnxruntime shows a type without a shape as a scalar's ([]): the
    # model was served as taking one number, and failed on any array. As
    # Triton, which needs every tensor's axes (dims), deepaas refuses it.
    models.save_onnx_any_shape(tmp_path / "relu.onnx")
    assert refused(tmp_path) == [
        f"{tmp_path / 'relu.onnx'}: input 'x' has no known datatype or rank in "
        "the file; export the model with the rank of each input and output (an "
        "axis of any size may stay unknown: None, -1)"
    ]


def test_batching_a_fixed_batch_axis(tmp_path: Path) -> None:
    models.save_onnx_linear(tmp_path / "pairs.onnx", batch=2)
    (tmp_path / "pairs.toml").write_text("max_batch_size = 8\n")
    assert refused(tmp_path) == [
        f"{tmp_path / 'pairs.toml'}: max_batch_size = 8, but input 'x' of "
        f"{tmp_path / 'pairs.onnx'} has a fixed first axis (FP32 [2, 4]): it "
        "cannot be batched; leave max_batch_size out (or 0)"
    ]


def test_every_problem_has_its_line(tmp_path: Path) -> None:
    needs("onnxruntime")
    models.save_onnx_linear(tmp_path / "echo.onnx")  # the plugin's name
    models.save_onnx_linear(tmp_path / "good.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"garbage")
    (tmp_path / "good.toml").write_text("labels = 'missing.txt'\n")
    (tmp_path / "stray.toml").write_text("")
    plugins = tmp_path / "plugins"
    register_plugins(plugins, "deepaas_test_clash", {"echo": "tests.plugins.echo"})
    lines = refused(tmp_path, "--model-name", "echo", path=(plugins,))
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"{tmp_path / 'stray.toml'}: no model file stray.*")
    assert lines[1].startswith(f"{tmp_path / 'broken.onnx'}: onnxruntime cannot load")
    assert lines[2].startswith(f"{tmp_path / 'good.toml'}: labels file ")
    # the name clash is found once the files are good
    (tmp_path / "broken.onnx").unlink()
    (tmp_path / "stray.toml").unlink()
    (tmp_path / "good.toml").unlink()
    assert refused(tmp_path, "--model-name", "echo", path=(plugins,)) == [
        f"{tmp_path / 'echo.onnx'}: model name 'echo' is also the entry point "
        "tests.plugins.echo; rename the file, or give the plugin another name "
        "(NAME=TARGET)"
    ]


def test_no_repository(tmp_path: Path) -> None:
    assert refused(tmp_path / "none") == [
        f"model repository {tmp_path / 'none'} does not exist"
    ]
