"""A described model file as it is served: batch axis, names, labels, image,
predict arguments and answers (fake descriptions and runtimes: no
framework needed)."""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import marshmallow
import numpy as np
import pytest

from deepaas.exceptions import DeepaasError, TensorInputError
from deepaas.frameworks import TensorInfo, arguments, images
from deepaas.frameworks.model_config import ConfigFileError, ImageConfig, ModelConfig
from deepaas.frameworks.probe import Described
from deepaas.frameworks.served import FileModel
from deepaas.frameworks.serving import DEFAULT_MAX_BATCH_SIZE, plan
from deepaas.model.signature import InferOutputError
from deepaas.model.v2.wrapper import ModelWrapper
from tests.needs import needs

X = TensorInfo("x", "FP32", (-1, 4))
SCORES = TensorInfo("scores", "FP32", (-1, 3))
DYNAMIC = Described("onnxruntime", (X,), (SCORES,))
FIXED = Described(
    "onnxruntime",
    (TensorInfo("x", "FP32", (2, 4)),),
    (TensorInfo("scores", "FP32", (2, 3)),),
)
TOML = "/models/m.toml"


def serve(described: Described = DYNAMIC, **config: Any) -> Any:
    return plan("/models/m.onnx", TOML, ModelConfig(path=TOML, **config), described)


def refused(described: Described = DYNAMIC, **config: Any) -> str:
    with pytest.raises(ConfigFileError) as caught:
        serve(described, **config)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_dynamic_batch_axis_is_batched_by_default() -> None:
    serving = serve()
    assert serving.signature() == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [4]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [3]}],
        "max_batch_size": DEFAULT_MAX_BATCH_SIZE,
    }
    assert serve(max_batch_size=32).max_batch_size == 32


def test_no_batching_keeps_the_full_shapes() -> None:
    assert serve(max_batch_size=0).signature()["inputs"][0]["shape"] == [-1, 4]
    fixed = serve(FIXED)
    assert fixed.max_batch_size == 0
    assert fixed.signature()["inputs"][0]["shape"] == [2, 4]


def test_batching_what_cannot_be_batched_is_refused() -> None:
    assert "input 'x' of /models/m.onnx has a fixed first axis (FP32 [2, 4])" in (
        refused(FIXED, max_batch_size=4)
    )
    odd = Described("onnxruntime", (X,), (TensorInfo("total", "FP32", (3,)),))
    assert "output 'total' (FP32 [3]) has no dynamic first axis" in refused(odd)
    assert serve(odd, max_batch_size=0).max_batch_size == 0
    assert "max_delay_ms is for a batched model" in refused(FIXED, max_delay_ms=5.0)


def test_a_bounded_batch_axis_caps_the_batch() -> None:
    # A torch.export Dim(max=8): batches of up to 16 rows failed in torch.
    bounded = Described("torch.export", (X,), (SCORES,), max_rows=8)
    assert serve(bounded).max_batch_size == 8
    assert serve(bounded, max_batch_size=4).max_batch_size == 4
    assert refused(bounded, max_batch_size=9) == (
        f"{TOML}: max_batch_size = 9, but /models/m.onnx takes at most 8 rows "
        "(its batch axis is bounded): give at most 8"
    )
    assert Described.from_json(bounded.as_json()) == bounded


def test_tensors_renamed_in_order() -> None:
    serving = serve(input_names=("features",), output_names=("logits",))
    assert [(t.name, t.file_name) for t in serving.inputs] == [("features", "x")]
    assert [(t.name, t.file_name) for t in serving.outputs] == [("logits", "scores")]
    message = refused(input_names=("a", "b"))
    assert "inputs gives 2 name(s), but the model has 1 ('x')" in message


def test_a_model_without_inputs_or_outputs_is_refused() -> None:
    # Both were refused with messages about something else: a plugin's
    # get_infer_signature() (no inputs), a TorchScript archive (no outputs).
    message = refused(Described("onnxruntime", (), (SCORES,)))
    assert message.startswith("/models/m.onnx: the model has no inputs; ")
    message = refused(Described("keras", (X,), ()))
    assert message.startswith("/models/m.onnx: the model has no outputs; ")
    assert "TorchScript" not in message


def test_a_tensor_of_unknown_rank_is_named_as_input_or_output() -> None:
    # A SavedModel input of shape=None was refused saying to export the
    # model "with its output shapes".
    anyrank = Described("tensorflow", (TensorInfo("x", "FP32", None),), (SCORES,))
    assert refused(anyrank) == (
        "/models/m.onnx: input 'x' has no known datatype or rank in the file; "
        "export the model with the rank of each input and output (an axis of "
        "any size may stay unknown: None, -1)"
    )
    out = Described("tensorflow", (X,), (TensorInfo("y", "FP32", None),))
    assert refused(out).startswith("/models/m.onnx: output 'y' has no known")


def test_an_input_named_accept_is_refused() -> None:
    # The predict route takes 'accept' as the answer's content type: an
    # input of that name reached the renderer as an array (a 500).
    message = refused(input_names=("accept",))
    assert message.startswith(f"{TOML}: the model has an input named 'accept'")
    assert "rename it with inputs = [...]" in message
    named = Described(
        "onnxruntime", (TensorInfo("accept", "FP32", (-1, 4)),), (SCORES,)
    )
    assert "input named 'accept'" in refused(named)
    assert serve(named, input_names=("x",)).inputs[0].file_name == "accept"


def test_torchscript_without_a_signature_is_refused() -> None:
    bare = Described("torchscript", (TensorInfo("x", None, None),), ())
    message = refused(bare)
    assert message.startswith("/models/m.onnx: a TorchScript archive records no")
    assert f"declare them in {TOML}: inputs = [{{name" in message


def test_labels(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n\n")
    assert serve(labels=str(labels)).labels == ("cat", "dog", "bird")
    labels.write_text("cat\ndog\n")
    assert "has 2 lines, but output 'scores' has 3 scores" in refused(
        labels=str(labels)
    )
    assert "cannot be read" in refused(labels=str(tmp_path / "none.txt"))
    # A byte order mark (Windows editors) was part of the first label.
    labels.write_bytes("\ufeffcat\r\ndog\r\nbird\r\n".encode())
    assert serve(labels=str(labels)).labels == ("cat", "dog", "bird")


@pytest.mark.timeout(30)
def test_a_fifo_labels_file_is_refused(tmp_path: Path) -> None:
    # Reading it blocked start-up for good.
    os.mkfifo(tmp_path / "labels.txt")
    assert refused(labels=str(tmp_path / "labels.txt")) == (
        f"{TOML}: labels file {tmp_path / 'labels.txt'} is not a regular file "
        "(a FIFO or device)"
    )


def test_labels_of_a_bytes_output_are_refused(tmp_path: Path) -> None:
    # Every predict was a 500 ("could not convert string to float").
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    text = Described("onnxruntime", (X,), (TensorInfo("t", "BYTES", (-1, 2)),))
    assert refused(text, labels=str(labels)) == (
        f"{TOML}: labels name the top scores of the model's first output, but "
        "output 't' is BYTES, not numbers: leave labels out"
    )


def test_an_image_input() -> None:
    nchw = Described(
        "onnxruntime", (TensorInfo("img", "FP32", (-1, 3, 8, 6)),), (SCORES,)
    )
    spec = serve(nchw, image=ImageConfig(mean=(0.5,) * 3)).image
    assert (spec.input, spec.height, spec.width, spec.channels) == ("img", 8, 6, 3)
    assert spec.leading == 0
    unbatched = Described(
        "onnxruntime", (TensorInfo("img", "UINT8", (1, 5, 5, 1)),), (SCORES,)
    )
    spec = serve(unbatched, max_batch_size=0, image=ImageConfig(layout="NHWC")).image
    assert (spec.leading, spec.channels, spec.datatype) == (1, 1, "UINT8")
    any_size = Described(
        "onnxruntime", (TensorInfo("img", "FP32", (-1, 3, -1, -1)),), (SCORES,)
    )
    assert "image.size = [height, width] is needed" in refused(
        any_size, image=ImageConfig()
    )
    assert "image.size gives height 9, but input 'img' takes 8" in refused(
        nchw, image=ImageConfig(size=(9, 6))
    )
    assert "has 6 channels on the NHWC channel axis" in refused(
        nchw, image=ImageConfig(layout="NHWC")
    )
    assert "image.mean has 1 value(s); the image has 3" in refused(
        nchw, image=ImageConfig(mean=(0.5,))
    )
    assert "is not an input of the model" in refused(nchw, image=ImageConfig(input="x"))


def test_an_image_input_of_too_many_pixels_is_refused() -> None:
    # Each request's picture became an array of the input's size, unbounded.
    huge = Described(
        "onnxruntime", (TensorInfo("img", "FP32", (-1, 3, 5000, 5000)),), (SCORES,)
    )
    assert refused(huge, image=ImageConfig()) == (
        f"{TOML}: image input 'img' takes 5000x5000 pixels ([3, 5000, 5000]), "
        "more than the 16777216 (4096 x 4096) deepaas makes of a picture: serve "
        "it from a plugin, or leave image out (the input then takes a list)"
    )
    at_most = Described(
        "onnxruntime", (TensorInfo("img", "FP32", (-1, 3, 4096, 4096)),), (SCORES,)
    )
    assert serve(at_most, image=ImageConfig()).image is not None


def png_header(width: int, height: int) -> bytes:
    """A PNG that says it is ``width`` x ``height`` (1 bit, grey) and holds
    no pixels: Pillow reads its size from the header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.filterwarnings("ignore:Image size")  # Pillow's DecompressionBombWarning
def test_a_picture_of_too_many_pixels_is_a_413_before_it_is_decoded(
    tmp_path: Path,
) -> None:
    # A small PNG of 10000 x 9000 pixels was decoded: 270 MB (RGB) for a
    # picture resized to 8 x 8.
    needs("PIL.Image")
    spec = images.ImageSpec("image", "FP32", 8, 8, 3, "NCHW")
    for (width, height), size in (
        ((10000, 9000), "10000x9000 pixels"),  # past the bound
        ((14000, 13000), "too large for Pillow"),  # Pillow refuses it itself
    ):
        picture = tmp_path / "picture"
        picture.write_bytes(png_header(width, height))
        with pytest.raises(images.ImageInputError) as caught:
            images.decode(str(picture), spec)
        assert caught.value.status == 413
        assert caught.value.message == (
            f"argument 'image': the picture is {size}, more than the "
            f"{images.MAX_UPLOAD_PIXELS} pixels deepaas decodes; send a smaller "
            "picture (it is resized to 8x8 anyway)"
        )


def test_arrange_pixels() -> None:
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    spec = images.ImageSpec("i", "FP32", 2, 3, 3, "NCHW", (0.5,) * 3, (0.5,) * 3)
    array = images.arrange(pixels, spec)
    assert array.shape == (3, 2, 3) and array.dtype == np.float32
    assert (
        array[0].tolist() == [[1.0] * 3] * 2 and array[1].tolist() == [[-1.0] * 3] * 2
    )
    raw = images.arrange(
        pixels, images.ImageSpec("i", "UINT8", 2, 3, 3, "NHWC", leading=1)
    )
    assert raw.shape == (1, 2, 3, 3) and raw.dtype == np.uint8


@pytest.mark.parametrize(
    ("datatype", "shape", "value", "expected"),
    [
        ("FP32", (4,), [1, 2.5, 3, 4], np.array([1, 2.5, 3, 4], np.float32)),
        ("FP32", (2, 2), [1, 2, 3, 4], np.array([[1, 2], [3, 4]], np.float32)),
        ("INT64", (-1, 2), [[1, 2], [3, 4]], np.array([[1, 2], [3, 4]])),
        ("BOOL", (), True, np.array(True)),
        ("BYTES", (-1,), ["a", "é"], np.array([b"a", "é".encode()], dtype=object)),
    ],
)
def test_to_input(datatype: str, shape: Any, value: Any, expected: np.ndarray) -> None:
    array = arguments.to_input("x", datatype, shape, value)
    assert array.dtype == expected.dtype and array.shape == expected.shape
    assert array.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("datatype", "shape", "value", "says"),
    [
        (
            "FP32",
            (4,),
            [1, 2, 3],
            "takes FP32 [4]: a list of 4 numbers; got a list of shape [3]",
        ),
        ("FP32", (-1, 2), [[1, 2], [3]], "data[1] has 1 values"),
        ("FP32", (-1,), [], "got a list of shape [0] (an empty axis)"),
        ("FP32", (4,), "1,2,3,4", "got str '1,2,3,4'"),
        ("INT8", (-1,), [1, 200], "element 1 is 200, outside INT8's range"),
        ("INT64", (-1,), [1.5], "element 0 is 1.5, but INT64 needs an integer"),
        ("FP16", (-1,), [1e6], "outside FP16's range"),
    ],
)
def test_to_input_refuses(datatype: str, shape: Any, value: Any, says: str) -> None:
    field = arguments.TensorArg("x", datatype, shape)
    with pytest.raises(marshmallow.ValidationError) as caught:
        field.deserialize(value)
    (message,) = caught.value.messages
    assert message.startswith("input 'x'") and says in message


def test_top_labels() -> None:
    logits = np.array([0.0, 2.0, 1.0])
    top = arguments.top_labels(logits, ["a", "b", "c"], 2)
    assert [t["label"] for t in top] == ["b", "c"]
    assert top[0]["probability"] == pytest.approx(np.exp(2) / np.exp([0, 2, 1]).sum())
    given = arguments.top_labels(np.array([[0.1, 0.7, 0.2]]), ["a", "b", "c"], 5)
    assert given[0] == {"label": "b", "probability": pytest.approx(0.7)}
    assert len(given) == 3


class FakeRuntime:
    """``x @ 1 + i``: scores of 3 per row; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = arrays["x"]
        self.calls.append(len(x))
        total = x.sum(axis=-1, keepdims=True)
        return {"scores": (total + np.arange(3, dtype=np.float32)).astype(np.float32)}


def file_model(**config: Any) -> FileModel:
    model = FileModel("m", "/models/m.onnx", ModelConfig(path=TOML, **config), DYNAMIC)
    model._runtime = FakeRuntime()  # type: ignore[assignment]
    return model


def test_a_file_model_is_a_tensor_native_plugin() -> None:
    wrapper = ModelWrapper("m", file_model(input_names=("features",)))
    assert wrapper.has_infer and wrapper.has_predict and wrapper.has_predict_batch
    assert wrapper.batching == {"max_batch_size": 16}  # no delay: adaptive
    assert list(wrapper.predict_args) == ["features"]
    assert wrapper.predict_args["features"].location == "json"
    assert wrapper.get_metadata()["framework"] == "onnxruntime"
    out = wrapper.infer({"features": np.ones((2, 4), np.float32)})
    assert out["scores"].tolist() == [[4, 5, 6], [4, 5, 6]]


def test_predict_batch_groups_requests_into_one_call(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    model = file_model(labels=str(labels), top_k=1)
    batch = [{"x": np.full(4, float(i), np.float32)} for i in range(3)]
    answers = model._predict_batch(batch)
    assert model._runtime.calls == [3]  # type: ignore[union-attr]
    assert answers[2]["predictions"]["scores"] == [8.0, 9.0, 10.0]
    assert answers[2]["predictions"]["labels"][0]["label"] == "c"
    assert model.predict(**batch[1])["predictions"]["scores"] == [4.0, 5.0, 6.0]


def test_fixed_models_have_no_predict_batch() -> None:
    model = FileModel("m", "/models/m.onnx", ModelConfig(path=TOML), FIXED)
    assert model.batching is None and not hasattr(model, "predict_batch")


def test_a_torchscript_output_unlike_its_declaration_names_the_toml() -> None:
    # The toml declares the outputs of a TorchScript archive; when the
    # model returned another shape, OIP infer blamed an infer() nobody
    # wrote and predict answered the wrong shape with a 200.
    declared = Described("torchscript", (X,), (TensorInfo("scores", "FP32", (-1, 2)),))
    model = FileModel("m", "/models/m.pt", ModelConfig(path=TOML), declared)
    runtime = FakeRuntime()
    runtime.outputs = declared.outputs  # type: ignore[attr-defined]
    model._runtime = runtime  # type: ignore[assignment]
    says = (
        "model 'm': m.toml declares output 'scores' as FP32 [-1, 2], but m.pt "
        "returned FP32 [1, 3]: correct its outputs in the toml"
    )
    with pytest.raises(InferOutputError, match=re.escape(says)):
        model.infer(x=np.ones((1, 4), np.float32))
    with pytest.raises(InferOutputError, match=re.escape(says)):
        model.predict(x=np.ones(4, np.float32))
    fine = FileModel(
        "m",
        "/models/m.pt",
        ModelConfig(path=TOML),
        Described("torchscript", (X,), (SCORES,)),
    )
    fine._runtime = runtime  # type: ignore[assignment]
    runtime.outputs = (SCORES,)  # type: ignore[attr-defined]
    assert fine.infer(x=np.ones((2, 4), np.float32))["scores"].shape == (2, 3)


class Found(FakeRuntime):
    """Answers 2 rows whatever it is given: the things found, not a batch."""

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"scores": np.zeros((2, 3), np.float32)}


def test_a_batched_model_answering_other_rows_says_to_unbatch() -> None:
    # A first axis that is dynamic but no batch axis was a 500 telling the
    # user to fix an infer() that deepaas wrote.
    model = file_model()
    model._runtime = Found()  # type: ignore[assignment]
    says = (
        "model 'm': m.onnx returned 2 rows in output 'scores' for 3 input rows, "
        "so its first axis is no batch axis; set max_batch_size = 0 in m.toml"
    )
    with pytest.raises(InferOutputError, match=re.escape(says)):
        model.infer(x=np.ones((3, 4), np.float32))
    with pytest.raises(InferOutputError, match="for 1 input rows"):
        model.predict(x=np.ones(4, np.float32))
    assert model.infer(x=np.ones((2, 4), np.float32))["scores"].shape == (2, 3)


class Words(FakeRuntime):
    """A BYTES output of one element per row (served shape [])."""

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        words = [f"row {i}".encode() for i in range(len(arrays["x"]))]
        return {"word": np.array(words, dtype=object)}


def test_predict_answers_a_bytes_element_per_row() -> None:
    # Row i of a 1-D object array is a bare bytes object: the answer was a
    # 500 (AttributeError: 'bytes' object has no attribute 'ravel').
    described = Described("onnxruntime", (X,), (TensorInfo("word", "BYTES", (-1,)),))
    model = FileModel("m", "/models/m.onnx", ModelConfig(path=TOML), described)
    model._runtime = Words()  # type: ignore[assignment]
    assert model.predict(x=np.ones(4, np.float32)) == {
        "status": "OK",
        "predictions": {"word": "row 0"},
    }
    answers = model.predict_batch([{"x": np.ones(4, np.float32)}] * 2)
    assert [a["predictions"]["word"] for a in answers] == ["row 0", "row 1"]


def test_a_file_replaced_under_a_running_server_is_a_503() -> None:
    # A worker started after the file was replaced (by a model of other
    # inputs) got requests checked against the old one: a 500, KeyError.
    model = file_model()  # the new file: input 'x'
    with pytest.raises(DeepaasError) as caught:
        model.infer(s=np.ones((1, 4), np.float32))
    assert caught.value.status == 503
    assert caught.value.message == (
        "model 'm': m.onnx changed since the server started (its inputs are now "
        "'x', not 's'); restart the server to serve the new file"
    )
    with pytest.raises(DeepaasError, match="changed since the server started"):
        model.predict(s=np.ones(4, np.float32))


class Picky(FakeRuntime):
    """Refuses a row whose first value is -6, as a runtime refuses an input."""

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (arrays["x"][:, 0] == -6).any():
            raise TensorInputError("input 'x': the model refuses -6")
        return super().run(arrays)


def test_predict_batch_fails_a_refused_request_alone() -> None:
    # A TensorInputError of one request (a torch.export Dim's bound) failed
    # every request of the predict batch.
    model = file_model()
    model._runtime = Picky()  # type: ignore[assignment]
    rows = [[1.0, 0, 0, 0], [-6.0, 0, 0, 0], [3.0, 0, 0, 0]]
    answers = model.predict_batch([{"x": np.array(r, np.float32)} for r in rows])
    assert isinstance(answers[1], TensorInputError)
    assert [a["predictions"]["scores"][0] for a in (answers[0], answers[2])] == [
        1.0,
        3.0,
    ]
    # The batch of 3 was refused, then the two others computed alone.
    assert model._runtime.calls == [1, 1]  # type: ignore[attr-defined]
