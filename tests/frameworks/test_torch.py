"""PyTorch: one MLP as TorchScript (scripted and traced) and as a
torch.export program, served and compared with the module itself; the
archives deepaas refuses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.needs import needs

torch = needs("torch")

from deepaas import frameworks  # noqa: E402
from deepaas.exceptions import TensorInputError  # noqa: E402
from deepaas.frameworks import ModelFileError, TensorInfo  # noqa: E402
from deepaas.frameworks.torch import EXPORT_HOWTO  # noqa: E402

# PyTorch 2.10+ deprecates TorchScript; the tests still make archives with it.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
}


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Pair(torch.nn.Module):
    """Two inputs, two outputs (a tuple), an argument left to its default."""

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, scale: float = 2.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return a.sum(dim=1), b * scale


class Named(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"double": x * 2, "half": x / 2}


@pytest.fixture(scope="module")
def mlp() -> MLP:
    return MLP().eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, mlp: MLP) -> Path:
    folder = tmp_path_factory.mktemp("torch")
    example = torch.randn(2, 4)
    torch.jit.save(torch.jit.script(mlp), folder / "scripted.pt")
    torch.jit.save(torch.jit.trace(mlp, example), folder / "traced.pth")
    torch.jit.save(torch.jit.script(Pair()), folder / "pair.pt")
    torch.jit.save(torch.jit.script(Named()), folder / "named.pt")
    batch = torch.export.Dim("batch")
    program = torch.export.export(mlp, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, folder / "dynamic.pt2")
    torch.export.save(torch.export.export(mlp, (example,)), folder / "fixed.pt2")
    program = torch.export.export(Named(), (example,))
    torch.export.save(program, folder / "named.pt2")
    torch.save(mlp, folder / "pickled.pt")
    torch.save(mlp.state_dict(), folder / "weights.pth")
    return folder


def direct(mlp: MLP, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return mlp(torch.from_numpy(x)).numpy()


X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)


@pytest.mark.parametrize("name", ["scripted.pt", "traced.pth"])
def test_torchscript_without_signature(models: Path, mlp: MLP, name: str) -> None:
    runtime = frameworks.load(models / name, "cpu")
    assert runtime.framework == "torchscript"
    assert runtime.device == "cpu"
    assert runtime.inputs == (TensorInfo("x", None, None),)  # forward's argument
    assert runtime.outputs == (TensorInfo("output", None, None),)
    assert not runtime.batch_axis_dynamic  # not known: not batched
    out = runtime.run({"x": X})
    assert list(out) == ["output"]
    np.testing.assert_allclose(out["output"], direct(mlp, X), rtol=1e-6)


def test_torchscript_with_signature(models: Path, mlp: MLP) -> None:
    runtime = frameworks.load(models / "scripted.pt", signature=SIGNATURE)
    assert runtime.inputs == (TensorInfo("features", "FP32", (-1, 4)),)
    assert runtime.outputs == (TensorInfo("scores", "FP32", (-1, 3)),)
    assert runtime.batch_axis_dynamic
    out = runtime.run({"features": X})
    np.testing.assert_allclose(out["scores"], direct(mlp, X), rtol=1e-6)
    with pytest.raises(TensorInputError, match="input 'features': expected FP32"):
        runtime.run({"features": X.astype(np.float64)})


def test_signature_checked_against_forward(models: Path) -> None:
    x = SIGNATURE["inputs"][0]
    two = {"inputs": [x, {**x, "name": "y"}]}
    with pytest.raises(ValueError, match=r"gives 2 input\(s\), but forward takes 1"):
        frameworks.load(models / "scripted.pt", signature=two)
    with pytest.raises(ValueError, match="unknown key"):
        frameworks.load(models / "scripted.pt", signature={**SIGNATURE, "batch": 8})
    with pytest.raises(ValueError, match="TorchScript archives"):
        frameworks.load(models / "dynamic.pt2", signature=SIGNATURE)


def test_tuple_and_dict_outputs(models: Path) -> None:
    pair = frameworks.load(models / "pair.pt")
    assert [t.name for t in pair.inputs] == ["a", "b"]  # scale has a default
    assert [t.name for t in pair.outputs] == ["output__0", "output__1"]
    out = pair.run({"a": X, "b": X[:, 0]})
    np.testing.assert_allclose(out["output__0"], X.sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(out["output__1"], X[:, 0] * 2)
    named = frameworks.load(models / "named.pt")
    assert named.outputs == ()  # a dict's keys are known when it runs
    assert sorted(named.run({"x": X})) == ["double", "half"]


def test_export_signature(models: Path) -> None:
    runtime = frameworks.load(models / "dynamic.pt2")
    assert runtime.framework == "torch.export"
    assert runtime.inputs == (TensorInfo("x", "FP32", (-1, 4)),)
    assert runtime.outputs == (TensorInfo("output", "FP32", (-1, 3)),)
    assert runtime.batch_axis_dynamic
    named = frameworks.load(models / "named.pt2")
    assert [t.name for t in named.outputs] == ["double", "half"]
    assert named.outputs[0] == TensorInfo("double", "FP32", (2, 4))


def test_export_fixed_batch_axis(models: Path, mlp: MLP) -> None:
    runtime = frameworks.load(models / "fixed.pt2")
    assert runtime.inputs == (TensorInfo("x", "FP32", (2, 4)),)
    assert not runtime.batch_axis_dynamic
    out = runtime.run({"x": X[:2]})
    np.testing.assert_allclose(out["output"], direct(mlp, X[:2]), rtol=1e-6)
    with pytest.raises(TensorInputError, match=r"input 'x': expected FP32 \[2, 4\]"):
        runtime.run({"x": X})


class Bounded(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_export_bounded_axes(tmp_path: Path) -> None:
    # Past a Dim(max=), the program's guard failed inside torch (an
    # AssertionError, a 500), and a batch of 16 rows (the repository's
    # default) failed every request batched into it.
    batch = torch.export.Dim("batch", max=8)
    width = torch.export.Dim("width", max=5)
    program = torch.export.export(
        Bounded(), (torch.zeros(2, 3),), dynamic_shapes={"x": {0: batch, 1: width}}
    )
    torch.export.save(program, str(tmp_path / "bounded.pt2"))
    runtime = frameworks.load(tmp_path / "bounded.pt2")
    assert runtime.inputs == (TensorInfo("x", "FP32", (-1, -1)),)
    assert runtime.max_rows == 8
    assert runtime.run({"x": np.ones((8, 5), np.float32)})["output"].shape == (8, 5)
    with pytest.raises(TensorInputError) as caught:
        runtime.run({"x": np.ones((9, 3), np.float32)})
    assert str(caught.value) == (
        "input 'x': axis 0 is 9, but the model takes at most 8 there (shape "
        "[9, 3]); send at most 8"
    )
    with pytest.raises(TensorInputError, match=r"axis 1 is 6, but the model takes"):
        runtime.run({"x": np.ones((2, 6), np.float32)})


class Sum(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


def test_export_guards_are_input_errors(tmp_path: Path) -> None:
    # x and y share their Dims: inputs of other widths failed the program's
    # guard, an AssertionError (a 500) for the client's shapes.
    batch, width = torch.export.Dim("batch"), torch.export.Dim("width")
    program = torch.export.export(
        Sum(),
        (torch.zeros(2, 3), torch.zeros(2, 3)),
        dynamic_shapes={"x": {0: batch, 1: width}, "y": {0: batch, 1: width}},
    )
    torch.export.save(program, str(tmp_path / "pair.pt2"))
    runtime = frameworks.load(tmp_path / "pair.pt2")
    ones = np.ones((2, 3), np.float32)
    assert runtime.run({"x": ones, "y": ones})["output"].tolist() == [[2.0] * 3] * 2
    with pytest.raises(TensorInputError) as caught:
        runtime.run({"x": ones, "y": np.ones((2, 4), np.float32)})
    message = str(caught.value)
    assert message.startswith(
        "the inputs' shapes 'x' [2, 3], 'y' [2, 4] do not satisfy the model "
        "(Guard failed: "
    ), message


def test_a_reversed_view_is_taken(models: Path, mlp: MLP) -> None:
    # torch.from_numpy refuses negative strides (ValueError, a 500), where
    # the other frameworks take such a view: x[:, ::-1] of BGR pixels.
    flipped = X[:, ::-1]
    out = frameworks.load(models / "dynamic.pt2").run({"x": flipped})
    np.testing.assert_allclose(out["output"], direct(mlp, flipped.copy()), rtol=1e-6)


def test_export_unbounded_axes(models: Path) -> None:
    assert frameworks.load(models / "dynamic.pt2").max_rows is None


@pytest.mark.parametrize("rows", [1, 5])
def test_export_run_matches_module(models: Path, mlp: MLP, rows: int) -> None:
    out = frameworks.load(models / "dynamic.pt2").run({"x": X[:rows]})
    np.testing.assert_allclose(out["output"], direct(mlp, X[:rows]), rtol=1e-6)


def test_wrong_input_names_the_input(models: Path) -> None:
    runtime = frameworks.load(models / "dynamic.pt2")
    with pytest.raises(
        TensorInputError, match=r"input 'x': expected FP32 .* got INT64"
    ):
        runtime.run({"x": np.zeros((2, 4), np.int64)})
    with pytest.raises(TensorInputError, match="missing input"):
        runtime.run({})


def test_content_decides_not_the_suffix(models: Path, tmp_path: Path) -> None:
    shutil.copy(models / "scripted.pt", tmp_path / "scripted.pt2")
    shutil.copy(models / "dynamic.pt2", tmp_path / "exported.pt")
    assert frameworks.load(tmp_path / "scripted.pt2").framework == "torchscript"
    assert frameworks.load(tmp_path / "exported.pt").framework == "torch.export"


def test_full_model_pickle_refused(models: Path) -> None:
    path = models / "pickled.pt"
    with pytest.raises(ModelFileError) as info:
        frameworks.load(path)
    assert str(info.value) == (
        f"{path}: is a full-model pickle (torch.save(model)), which deepaas does "
        f"not load: unpickling it could run any code; load the model in Python "
        f"and {EXPORT_HOWTO}"
    )
    assert "torch.jit.save(torch.jit.script(model)" in EXPORT_HOWTO
    assert "torch.export.save(torch.export.export(model" in EXPORT_HOWTO


def test_state_dict_refused(models: Path) -> None:
    with pytest.raises(ModelFileError, match=r"holds a state_dict .* torch\.jit\.save"):
        frameworks.load(models / "weights.pth")


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04 truncated"])
def test_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as info:
        frameworks.load(path)
    assert str(info.value).startswith(f"{path}: is not a PyTorch archive")
    assert "\n" not in str(info.value)


def test_damaged_archive(models: Path, tmp_path: Path) -> None:
    """A zip with TorchScript's entries whose code is damaged."""
    import zipfile

    path = tmp_path / "damaged.pt"
    with (
        zipfile.ZipFile(models / "scripted.pt") as src,
        zipfile.ZipFile(path, "w") as dst,
    ):
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, b"garbage(" if item.filename.endswith(".py") else data)
    with pytest.raises(ModelFileError, match=f"^{path}: torch.jit.load cannot load"):
        frameworks.load(path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["scripted.pt", "dynamic.pt2"])
def test_gpu(models: Path, mlp: MLP, name: str) -> None:
    runtime = frameworks.load(models / name, "cuda:0")
    assert runtime.device == "cuda:0"
    out = next(iter(runtime.run({"x": X}).values()))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, direct(mlp, X), rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this PyTorch has CUDA")
def test_gpu_falls_back_to_cpu(models: Path) -> None:
    assert frameworks.load(models / "scripted.pt", "cuda:0").device == "cpu"
