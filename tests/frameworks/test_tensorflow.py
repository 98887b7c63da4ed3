"""TensorFlow: one Keras MLP saved as a .keras file and exported as a
SavedModel, served and compared with the model itself. TensorFlow's import
takes seconds: every model is built once, by module-scoped fixtures."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.needs import needs

tf = needs("tensorflow")
keras = needs("keras")

from deepaas import frameworks  # noqa: E402
from deepaas.exceptions import TensorInputError  # noqa: E402
from deepaas.frameworks import ModelFileError, TensorInfo  # noqa: E402

# Keras' own np.array(tensor) under numpy 2 (keras/src/backend/tensorflow/core.py)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)

X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)


def build(batch_size: int | None = None) -> Any:
    keras.utils.set_random_seed(0)
    features = keras.Input(shape=(4,), batch_size=batch_size, name="features")
    hidden = keras.layers.Dense(16, activation="relu")(features)
    scores = keras.layers.Dense(3, name="scores")(hidden)
    return keras.Model(features, scores)


@pytest.fixture(scope="module")
def mlp() -> Any:
    return build()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, mlp: Any) -> Path:
    folder = tmp_path_factory.mktemp("tensorflow")
    mlp.save(folder / "mlp.keras")
    mlp.export(folder / "saved", verbose=False)
    build(batch_size=2).save(folder / "fixed.keras")
    a = keras.Input(shape=(2,), name="a")
    b = keras.Input(shape=(3,), name="b", dtype="int32")
    joined = keras.layers.Concatenate(name="joined")([a, keras.ops.cast(b, "float32")])
    total = keras.layers.Lambda(lambda t: keras.ops.sum(t, axis=1), name="total")
    keras.Model([a, b], [joined]).save(folder / "two.keras")
    keras.Model(a, total(a)).save(folder / "lambda.keras")
    tf.saved_model.save(tf.Module(), folder / "nosignature")
    return folder


def test_keras_signature(models: Path) -> None:
    runtime = frameworks.load(models / "mlp.keras", "cpu")
    assert runtime.framework == "keras"
    assert runtime.device == "cpu"
    assert runtime.inputs == (TensorInfo("features", "FP32", (-1, 4)),)
    assert runtime.outputs == (TensorInfo("scores", "FP32", (-1, 3)),)
    assert runtime.batch_axis_dynamic


def test_keras_run_matches_model(models: Path, mlp: Any) -> None:
    runtime = frameworks.load(models / "mlp.keras")
    for rows in (5, 1):
        out = runtime.run({"features": X[:rows]})
        assert list(out) == ["scores"]
        np.testing.assert_allclose(out["scores"], mlp(X[:rows]).numpy(), rtol=1e-5)


def test_keras_inputs_in_the_models_order(models: Path) -> None:
    runtime = frameworks.load(models / "two.keras")
    assert runtime.inputs == (
        TensorInfo("a", "FP32", (-1, 2)),
        TensorInfo("b", "INT32", (-1, 3)),
    )
    b = np.arange(6, dtype=np.int32).reshape(2, 3)
    out = runtime.run({"b": b, "a": X[:2, :2]})["joined"]
    np.testing.assert_allclose(out, np.concatenate([X[:2, :2], b], axis=1))
    with pytest.raises(TensorInputError, match=r"input 'b': expected INT32 .* INT64"):
        runtime.run({"a": X[:2, :2], "b": b.astype(np.int64)})


def test_keras_fixed_batch_axis(models: Path) -> None:
    runtime = frameworks.load(models / "fixed.keras")
    assert runtime.inputs == (TensorInfo("features", "FP32", (2, 4)),)
    assert not runtime.batch_axis_dynamic


def test_saved_model_signature(models: Path, mlp: Any) -> None:
    runtime = frameworks.load(models / "saved")
    assert runtime.framework == "tensorflow"
    assert runtime.inputs == (TensorInfo("features", "FP32", (-1, 4)),)
    assert runtime.outputs == (TensorInfo("output_0", "FP32", (-1, 3)),)
    assert runtime.batch_axis_dynamic
    out = runtime.run({"features": X})
    np.testing.assert_allclose(out["output_0"], mlp(X).numpy(), rtol=1e-5)
    with pytest.raises(TensorInputError, match=r"input 'features': expected FP32"):
        runtime.run({"features": X[:, :3]})


def test_saved_model_without_serving_default(models: Path) -> None:
    path = models / "nosignature"
    with pytest.raises(ModelFileError, match=f"^{path}: has no 'serving_default'"):
        frameworks.load(path)


def test_lambda_layer_refused(models: Path) -> None:
    """Keras' safe mode: a file cannot make deepaas run its pickled code."""
    path = models / "lambda.keras"
    with pytest.raises(ModelFileError, match=f"^{path}: keras.models.load_model"):
        frameworks.load(path)


def test_corrupt_files(tmp_path: Path) -> None:
    path = tmp_path / "broken.keras"
    with zipfile.ZipFile(path, "w") as archive:  # a zip, but no Keras model
        archive.writestr("config.json", "{not json")
    with pytest.raises(ModelFileError) as info:
        frameworks.load(path)
    assert str(info.value).startswith(f"{path}: keras.models.load_model cannot load")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(ModelFileError) as info:
        frameworks.load(saved)
    assert str(info.value).startswith(f"{saved}: tf.saved_model.load cannot load")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(
    not tf.config.list_physical_devices("GPU"), reason="needs a GPU TensorFlow sees"
)
def test_gpu(models: Path, mlp: Any) -> None:
    for name in ("mlp.keras", "saved"):
        runtime = frameworks.load(models / name, "cuda:0")
        assert runtime.device == "cuda:0"
        out = next(iter(runtime.run({"features": X}).values()))
        np.testing.assert_allclose(out, mlp(X).numpy(), rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(
    bool(tf.config.list_physical_devices("GPU")), reason="TensorFlow sees a GPU"
)
def test_gpu_falls_back_to_cpu(models: Path) -> None:
    assert frameworks.load(models / "mlp.keras", "cuda:0").device == "cpu"


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n", b"not a model"])
def test_a_keras_file_that_is_no_zip(tmp_path: Path, content: bytes) -> None:
    # Keras answered "File not found" of a file that is there; this is said
    # with the fix, as a corrupt PyTorch archive is.
    path = tmp_path / "m.keras"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as caught:
        frameworks.load(path)
    assert str(caught.value) == (
        f"{path}: is not a Keras archive (the zip file Keras 3's model.save "
        "writes): empty, corrupt, or saved another way; save it with Keras 3's "
        "model.save('model.keras')"
    )
