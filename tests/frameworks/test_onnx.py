"""ONNX Runtime: an MLP built with onnx's helper API, served and compared
with onnxruntime itself and with numpy."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.needs import needs

ort = needs("onnxruntime")
onnx = needs("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from deepaas import frameworks  # noqa: E402
from deepaas.exceptions import TensorInputError  # noqa: E402
from deepaas.frameworks import ModelFileError, TensorInfo, base  # noqa: E402

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((4, 16)).astype(np.float32)
B1 = RNG.standard_normal(16).astype(np.float32)
W2 = RNG.standard_normal((16, 3)).astype(np.float32)
B2 = RNG.standard_normal(3).astype(np.float32)


def mlp(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W1 + B1, 0) @ W2 + B2


def save_mlp(path: Path, batch: int | str) -> Path:
    """x [batch, 4] FP32 -> scores [batch, 3] FP32 and labels [batch] INT64."""
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "B1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["h3"]),
        helper.make_node("Add", ["h3", "B2"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["labels"], axis=1, keepdims=0),
    ]
    weights = [
        numpy_helper.from_array(a, n)
        for a, n in zip((W1, B1, W2, B2), ("W1", "B1", "W2", "B2"), strict=True)
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 3]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [batch]),
        ],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime since 1.14 reads
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("onnx")
    save_mlp(folder / "mlp.onnx", "batch")
    save_mlp(folder / "fixed.onnx", 2)
    return folder


def test_signature(models: Path) -> None:
    runtime = frameworks.load(models / "mlp.onnx", "cpu")
    assert runtime.framework == "onnxruntime"
    assert runtime.device == "cpu"
    assert runtime.inputs == (TensorInfo("x", "FP32", (-1, 4)),)
    assert runtime.outputs == (
        TensorInfo("scores", "FP32", (-1, 3)),
        TensorInfo("labels", "INT64", (-1,)),
    )
    assert runtime.batch_axis_dynamic


def test_fixed_batch_axis(models: Path) -> None:
    runtime = frameworks.load(models / "fixed.onnx")
    assert runtime.inputs == (TensorInfo("x", "FP32", (2, 4)),)
    assert not runtime.batch_axis_dynamic
    with pytest.raises(TensorInputError, match=r"expected FP32 \[2, 4\], got FP32 \[3"):
        runtime.run({"x": np.zeros((3, 4), np.float32)})


def test_run_matches_onnxruntime_and_numpy(models: Path) -> None:
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    out = frameworks.load(models / "mlp.onnx").run({"x": x})
    direct = ort.InferenceSession(str(models / "mlp.onnx")).run(None, {"x": x})
    np.testing.assert_array_equal(out["scores"], direct[0])
    np.testing.assert_array_equal(out["labels"], direct[1])
    np.testing.assert_allclose(out["scores"], mlp(x), rtol=1e-5, atol=1e-5)
    assert out["labels"].dtype == np.int64
    # one row, and rows on their own give the rows of the batch
    one = frameworks.load(models / "mlp.onnx").run({"x": x[2:3]})
    np.testing.assert_allclose(one["scores"][0], out["scores"][2], rtol=1e-6)


def test_read_only_input(models: Path) -> None:
    """OIP binary tensors are read-only views over the request body."""
    x = np.frombuffer(np.ones((2, 4), np.float32).tobytes(), np.float32)
    out = frameworks.load(models / "mlp.onnx").run({"x": x.reshape(2, 4)})
    assert out["scores"].shape == (2, 3)


def test_wrong_input_names_the_input(models: Path) -> None:
    runtime = frameworks.load(models / "mlp.onnx")
    with pytest.raises(TensorInputError, match="input 'x': expected FP32 \\[-1, 4\\]"):
        runtime.run({"x": np.zeros((2, 4), np.float64)})
    with pytest.raises(TensorInputError, match="input 'x'"):
        runtime.run({"x": np.zeros((2, 5), np.float32)})


def test_one_thread_by_default(models: Path) -> None:
    runtime = frameworks.load(models / "mlp.onnx")
    options = runtime.session.get_session_options()
    assert options.intra_op_num_threads == 1
    runtime = frameworks.load(models / "mlp.onnx", threads=2)
    options = runtime.session.get_session_options()
    assert options.intra_op_num_threads == 2
    with pytest.raises(ValueError, match="threads must be at least 1"):
        frameworks.load(models / "mlp.onnx", threads=0)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelFileError) as info:
        frameworks.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: onnxruntime cannot load it (")
    assert "onnx.checker.check_model" in message and "\n" not in message


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="this onnxruntime has CUDA",
)
def test_gpu_falls_back_to_cpu_once(
    models: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(base, "_SAID", set())
    monkeypatch.setenv("DEEPAAS_DEVICE", "cuda:0")
    with caplog.at_level(logging.WARNING, "deepaas.frameworks"):
        first = frameworks.load(models / "mlp.onnx")
        frameworks.load(models / "fixed.onnx")
    assert first.device == "cpu"
    said = [r.message for r in caplog.records if "CUDAExecutionProvider" in r.message]
    assert len(said) == 1 and "install onnxruntime-gpu" in said[0]


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime-gpu and a GPU",
)
def test_gpu(models: Path) -> None:
    runtime = frameworks.load(models / "mlp.onnx", "cuda:0")
    assert runtime.device == "cuda:0"
    x = RNG.standard_normal((8, 4)).astype(np.float32)
    np.testing.assert_allclose(runtime.run({"x": x})["scores"], mlp(x), atol=1e-3)


def save_echo(path: Path) -> Path:
    """s [batch] STRING -> t [batch] STRING (Identity)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"])],
        "echo",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_bytes_reach_a_string_input_as_text(tmp_path: Path) -> None:
    # onnxruntime stores str(b"cat"), "b'cat'", for a bytes element: the
    # text the model saw was not the text sent.
    runtime = frameworks.load(save_echo(tmp_path / "echo.onnx"), "cpu")
    assert runtime.inputs == (TensorInfo("s", "BYTES", (-1,)),)
    sent = np.array([b"cat", "d\u00e9j\u00e0".encode(), "str"], dtype=object)
    out = runtime.run({"s": sent})["t"]
    assert out.tolist() == ["cat", "d\u00e9j\u00e0", "str"]
    with pytest.raises(TensorInputError, match=r"input 's': element 1 is not UTF-8"):
        runtime.run({"s": np.array([b"ok", b"\xff"], dtype=object)})


def save_relu(path: Path, shape: list[int] | None) -> Path:
    """x -> y (Relu), both of ``shape``: None for a type with no shape at
    all (unknown rank; onnx.checker refuses it, onnxruntime runs it)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        # A weight before the inputs: skipped, not read, by the shape reader.
        initializer=[numpy_helper.from_array(W1, "unused")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_tensor_of_unknown_rank_takes_any_shape(tmp_path: Path) -> None:
    # onnxruntime shows a type without a shape as [], as a scalar's: the
    # model was described as taking one number, and refused an array.
    runtime = frameworks.load(save_relu(tmp_path / "any.onnx", None), "cpu")
    assert runtime.inputs == (TensorInfo("x", "FP32", None),)
    assert runtime.outputs == (TensorInfo("y", "FP32", None),)
    assert not runtime.batch_axis_dynamic
    x = np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]], np.float32)
    np.testing.assert_array_equal(runtime.run({"x": x})["y"], np.maximum(x, 0))
    scalar = runtime.run({"x": np.array(-2.0, np.float32)})["y"]
    assert scalar.shape == () and scalar == 0
    # A scalar is still a scalar: its type has a shape, of no axes.
    runtime = frameworks.load(save_relu(tmp_path / "scalar.onnx", []), "cpu")
    assert runtime.inputs == (TensorInfo("x", "FP32", ()),)
    with pytest.raises(TensorInputError, match="input 'x'"):
        runtime.run({"x": x})
