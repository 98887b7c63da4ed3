"""Tiny model files for the repository tests, made at test time.

Each maker imports its framework and skips the calling test when it is not
installed (:func:`tests.needs.needs`: the reason says what to install), so
that a framework's tests skip cleanly without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.needs import needs

RNG = np.random.default_rng(7)
W = RNG.standard_normal((4, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)


def linear(x: np.ndarray) -> np.ndarray:
    """What every linear model here computes: ``x @ W + B``."""
    return x.astype(np.float32) @ W + B


def save_onnx_linear(path: Path, batch: int | str = "batch") -> Path:
    """x [batch, 4] FP32 -> scores [batch, 3] FP32, best [batch] INT64."""
    onnx = needs("onnx")
    needs("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "B"], ["scores"]),
            helper.make_node("ArgMax", ["scores"], ["best"], axis=1, keepdims=0),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 3]),
            helper.make_tensor_value_info("best", TensorProto.INT64, [batch]),
        ],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    _save_onnx(onnx, helper, graph, path)
    return path


def save_onnx_image(path: Path) -> Path:
    """image [N, 3, 8, 8] FP32 -> mean [N, 3] FP32 (each channel's mean)."""
    onnx = needs("onnx")
    needs("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[2, 3], keepdims=0)],
        "image_means",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N", 3])],
    )
    _save_onnx(onnx, helper, graph, path)
    return path


def save_onnx_any_shape(path: Path) -> Path:
    """x -> y (Relu), FP32, of types without a shape (unknown rank: any
    shape), which onnx.checker refuses and onnxruntime runs."""
    onnx = needs("onnx")
    needs("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "any_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)  # type: ignore[attr-defined]
    return path


def _save_onnx(onnx: object, helper: object, graph: object, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])  # type: ignore[attr-defined]
    model.ir_version = 8  # what every onnxruntime since 1.14 reads
    onnx.checker.check_model(model)  # type: ignore[attr-defined]
    onnx.save(model, path)  # type: ignore[attr-defined]


def save_torchscript_linear(path: Path) -> Path:
    """A TorchScript archive of ``linear`` (records no datatypes or shapes)."""
    torch = needs("torch")
    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W.T.copy()))
        layer.bias.copy_(torch.from_numpy(B))
    traced = torch.jit.trace(layer.eval(), torch.zeros(2, 4))
    torch.jit.save(traced, str(path))
    return path


TORCHSCRIPT_SIGNATURE = """\
inputs = [{name = "x", datatype = "FP32", shape = [-1, 4]}]
outputs = [{name = "scores", datatype = "FP32", shape = [-1, 3]}]
"""


def save_keras_linear(path: Path) -> Path:
    """A ``.keras`` file of ``linear``: input ``x``, output ``scores``."""
    needs("tensorflow")
    import keras

    inputs = keras.Input(shape=(4,), name="x")
    dense = keras.layers.Dense(3, name="scores")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([W, B])
    model.save(path)
    return path


def save_export_linear(path: Path) -> Path:
    """A ``torch.export`` program of ``linear`` with a dynamic batch axis."""
    torch = needs("torch")
    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W.T.copy()))
        layer.bias.copy_(torch.from_numpy(B))
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        layer.eval(), (torch.zeros(2, 4),), dynamic_shapes={"input": {0: batch}}
    )
    torch.export.save(program, str(path))
    return path


def save_saved_model_linear(path: Path) -> Path:
    """A SavedModel directory of ``linear`` (``model.export``)."""
    needs("tensorflow")
    import keras

    inputs = keras.Input(shape=(4,), name="x")
    dense = keras.layers.Dense(3, name="scores")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([W, B])
    model.export(path, verbose=False)
    return path
