"""The framework-independent part: kinds, devices, input checks, errors,
and that no framework is imported before a file needs it. No framework is
needed to run these."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from deepaas import frameworks
from deepaas.exceptions import TensorError, TensorInputError
from deepaas.frameworks.base import (
    ModelFileError,
    Runtime,
    TensorInfo,
    resolve_device,
    tensor_infos,
)


class Echo(Runtime):
    """A runtime without a framework: returns its inputs, renamed."""

    framework = "echo"

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {f"out_{name}": array for name, array in arrays.items()}


def echo(*inputs: TensorInfo) -> Echo:
    return Echo("echo.model", "cpu", inputs, [])


def test_importing_deepaas_imports_no_framework() -> None:
    code = textwrap.dedent(
        """
        import sys
        import deepaas, deepaas.frameworks, deepaas.frameworks.base
        from deepaas.frameworks import load, kind_of
        heavy = {"torch", "tensorflow", "keras", "onnxruntime", "onnx"}
        assert not heavy & set(sys.modules), heavy & set(sys.modules)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_framework_names_the_extra(tmp_path: Path) -> None:
    """Each framework's import made to fail: one line naming the extra."""
    code = textwrap.dedent(
        """
        import os, sys
        from deepaas.frameworks import ModelFileError, load
        os.mkdir("saved")
        open("saved/saved_model.pb", "wb").close()
        cases = [("onnxruntime", "m.onnx", "onnx"), ("torch", "m.pt", "torch"),
                 ("torch", "m.pt2", "torch"), ("tensorflow", "m.keras", "tensorflow"),
                 ("tensorflow", "saved", "tensorflow")]
        for module, name, extra in cases:
            if not os.path.exists(name):
                open(name, "wb").close()
            sys.modules[module] = None  # "import module" raises ImportError
            try:
                load(name)
            except ModelFileError as exc:
                message = str(exc)
            else:
                raise AssertionError(name + " loaded")
            expected = (
                f"{name}: needs {module}, which is not installed; "
                f"pip install 'deepaas[{extra}]'"
            )
            assert message.startswith(expected), (message, expected)
            if extra == "torch":  # and the CPU build's pinned command
                assert message.endswith("--index-url "
                    "https://download.pytorch.org/whl/cpu)"), message
            else:
                assert message == expected, (message, expected)
            assert "\\n" not in message
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=tmp_path)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("m.onnx", ".onnx"),
        ("m.PT", ".pt"),
        ("m.pth", ".pth"),
        ("m.pt2", ".pt2"),
        ("m.keras", ".keras"),
        ("m.h5", None),
        ("m", None),
    ],
)
def test_kind_of_files(tmp_path: Path, name: str, kind: str | None) -> None:
    assert frameworks.kind_of(tmp_path / name) == kind


def test_kind_of_directories(tmp_path: Path) -> None:
    assert frameworks.kind_of(tmp_path) is None
    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert frameworks.kind_of(tmp_path) == "savedmodel"


def test_unknown_kind_names_the_file_and_the_kinds(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF")
    with pytest.raises(ModelFileError) as info:
        frameworks.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: unknown model kind")
    assert "'.h5'" in message and ".onnx" in message and "SavedModel" in message
    assert info.value.path == str(path)
    with pytest.raises(ModelFileError, match=r"a directory without saved_model\.pb"):
        frameworks.load(tmp_path)


def test_absent_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.onnx"
    with pytest.raises(ModelFileError, match=f"^{path}: no such file or directory$"):
        frameworks.load(path)


@pytest.mark.timeout(30)
def test_a_fifo_or_device_is_refused(tmp_path: Path) -> None:
    # The framework's read of a FIFO blocked start-up (its probe) until the
    # probe's timeout, 600 s; /dev/zero would have filled the memory.
    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)
    zero = tmp_path / "z.onnx"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        with pytest.raises(ModelFileError) as caught:
            frameworks.load(path)
        assert str(caught.value) == (
            f"{path}: is not a regular file (a FIFO, socket or device); give the "
            "model file itself"
        )


def test_signature_only_for_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="TorchScript archives only"):
        frameworks.load(path, signature={"inputs": []})


def test_device_default_is_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPAAS_DEVICE", raising=False)
    assert resolve_device(None) == "cpu"
    monkeypatch.setenv("DEEPAAS_DEVICE", "cuda:0")
    assert resolve_device(None) == "cuda:0"
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("CUDA") == "cuda:0"
    assert resolve_device("cuda:3") == "cuda:3"
    with pytest.raises(ValueError, match="'gpu0': use 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("gpu0")


# -- input checks ---------------------------------------------------------------


X = TensorInfo("x", "FP32", (-1, 4))
Y = TensorInfo("y", "INT64", (-1,))


def test_batch_axis_dynamic() -> None:
    assert echo(X, Y).batch_axis_dynamic
    assert not echo(X, TensorInfo("k", "INT64", (2,))).batch_axis_dynamic
    assert not echo(TensorInfo("s", "FP32", ())).batch_axis_dynamic
    assert not echo(TensorInfo("u", None, None)).batch_axis_dynamic
    assert not echo().batch_axis_dynamic


def test_run_passes_checked_arrays() -> None:
    x = np.zeros((2, 4), np.float32)
    out = echo(X, Y).run({"y": np.arange(2), "x": x})
    assert list(out) == ["out_x", "out_y"]  # the model's order
    assert out["out_x"] is x  # no copy


def test_run_converts_byte_order() -> None:
    x = np.arange(8, dtype=">f4").reshape(2, 4)
    out = echo(X).run({"x": x})["out_x"]
    assert out.dtype.isnative and out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"x": np.zeros((2, 4), np.float64), "y": np.zeros(2, np.int64)},
            "input 'x': expected FP32 [-1, 4], got FP64 [2, 4]; convert it with "
            ".astype(numpy.float32)",
        ),
        (
            {"x": np.zeros((2, 3), np.float32), "y": np.zeros(2, np.int64)},
            "input 'x': expected FP32 [-1, 4], got FP32 [2, 3] (-1 is an axis of "
            "any size)",
        ),
        (
            {"x": np.zeros(4, np.float32), "y": np.zeros(2, np.int64)},
            "input 'x': expected FP32 [-1, 4], got FP32 [4]",
        ),
        (
            {"x": [[0.0] * 4], "y": np.zeros(1, np.int64)},
            "input 'x': expected a numpy array of FP32 [-1, 4], got list",
        ),
        (
            {"x": np.zeros((2, 4), np.float32)},
            "missing input(s) 'y' (INT64 [-1]); every input is required",
        ),
        (
            {"x": np.zeros((2, 4), np.float32), "y": np.zeros(2, np.int64), "z": 1},
            "unknown input(s) 'z'; the model's inputs are 'x' (FP32 [-1, 4]), "
            "'y' (INT64 [-1])",
        ),
        (
            {"x": np.zeros((2, 4), np.float32), "y": np.zeros(3, np.int64)},
            "inputs have different batch sizes (axis 0): 'x' 2, 'y' 3",
        ),
    ],
)
def test_run_refuses_what_does_not_match(arrays: dict, message: str) -> None:
    with pytest.raises(TensorInputError) as info:
        echo(X, Y).run(arrays)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TensorError) and info.value.status == 400


def test_undeclared_inputs_take_any_array() -> None:
    runtime = echo(TensorInfo("u", None, None))
    assert runtime.run({"u": np.zeros((1, 2, 3), np.int8)})["out_u"].shape == (1, 2, 3)
    with pytest.raises(TensorInputError, match="has no OIP datatype"):
        runtime.run({"u": np.zeros(2, np.complex64)})


def test_bytes_inputs() -> None:
    runtime = echo(TensorInfo("s", "BYTES", (-1,)))
    runtime.run({"s": np.array([b"a", b"bc"], dtype=object)})
    with pytest.raises(TensorInputError, match="give an array of str or bytes"):
        runtime.run({"s": np.zeros(2, np.float32)})


def test_declared_tensors_are_checked() -> None:
    infos = tensor_infos("sig", [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}])
    assert infos == [X]
    assert tensor_infos("sig", [X]) == [X]
    for bad, message in [
        ("x", "must be a list"),
        ([{"name": "x"}], r"sig\[0\] must have exactly 'name', 'datatype'"),
        ([{"name": "x", "datatype": "fp32", "shape": [1]}], "datatype 'fp32'"),
        ([{"name": "x", "datatype": "BYTES", "shape": [1]}], "datatype 'BYTES'"),
        ([{"name": "x", "datatype": ["FP32"], "shape": [1]}], "datatype \\['FP32'\\]"),
        ([{"name": "x", "datatype": "FP32", "shape": [-2]}], "shape must be"),
        ([X, X], "names must differ"),
    ]:
        with pytest.raises(ValueError, match=message):
            tensor_infos("sig", bad)


def test_describe() -> None:
    runtime = Echo("m.onnx", "cpu", [X], [TensorInfo("u", None, None)])
    assert runtime.describe() == (
        "m.onnx (echo on cpu): inputs x FP32 [-1, 4]; outputs u any datatype, any shape"
    )
    assert X.as_dict() == {"name": "x", "datatype": "FP32", "shape": [-1, 4]}
