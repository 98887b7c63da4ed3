"""TensorFlow models (extra ``tensorflow``): SavedModels and ``.keras`` files.

- A SavedModel directory (``tf.saved_model.save``, or Keras'
  ``model.export(dir)``) runs its ``serving_default`` signature: inputs and
  outputs are the signature's names, dtypes and shapes (None axes -> -1).
- A ``.keras`` file (``model.save("m.keras")``) is loaded with
  ``keras.models.load_model(path, compile=False)`` in Keras' safe mode (no
  pickled Python code; a model with ``Lambda`` layers is refused) and run
  with ``predict_on_batch``; inputs are named after the model's ``Input``
  layers, outputs after its output layers.

Device: deepaas gives each worker only its GPUs (``CUDA_VISIBLE_DEVICES``),
so TensorFlow sees no other. GPU memory growth is turned on for every GPU
TensorFlow sees, so that TensorFlow takes memory as it needs it instead of
almost all of it at start: several workers (and other models) can then share
a GPU. That must happen before TensorFlow first touches a GPU; if a plugin
did so first, it is said once in the log and TensorFlow keeps the setting
the plugin left. The model is placed with ``tf.device("/GPU:N")`` (or
``/CPU:0``); with no GPU visible to TensorFlow (``tensorflow-cpu``), the
CPU, said once.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepaas.frameworks.base import (
    LOG,
    ModelFileError,
    Runtime,
    TensorInfo,
    first_line,
    gpu_index,
    import_framework,
    info_of,
    say_once,
)


class SavedModelRuntime(Runtime):
    """A SavedModel's ``serving_default`` signature."""

    framework = "tensorflow"

    def __init__(
        self,
        path: Path,
        device: str,
        placement: str,
        loaded: Any,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[TensorInfo],
    ) -> None:
        super().__init__(path, device, inputs, outputs)
        import tensorflow as tf

        self._tf = tf
        self._placement = placement
        self._loaded = loaded  # its variables live as long as it does
        self._function = loaded.signatures["serving_default"]

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the signature with one tensor per input, by name."""
        tf = self._tf
        with tf.device(self._placement):
            tensors = {name: tf.constant(array) for name, array in arrays.items()}
            result = self._function(**tensors)
        return {t.name: result[t.name].numpy() for t in self.outputs}


class KerasRuntime(Runtime):
    """A Keras model from a ``.keras`` file."""

    framework = "keras"

    def __init__(
        self,
        path: Path,
        device: str,
        placement: str,
        model: Any,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[TensorInfo],
    ) -> None:
        super().__init__(path, device, inputs, outputs)
        import tensorflow as tf

        self._tf = tf
        self._placement = placement
        self.model = model

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``predict_on_batch`` (one compiled call, no progress bar) of the
        inputs in the model's order; its outputs named as the model's."""
        values = list(arrays.values())
        with self._tf.device(self._placement):
            result = self.model.predict_on_batch(
                values[0] if len(values) == 1 else values
            )
        names = [t.name for t in self.outputs]
        if isinstance(result, Mapping):
            return {name: np.asarray(result[name]) for name in names}
        if isinstance(result, (list, tuple)):
            return {
                name: np.asarray(value)
                for name, value in zip(names, result, strict=True)
            }
        return {names[0]: np.asarray(result)}


def load(path: Path, device: str, *, threads: int | None = None) -> Runtime:
    """Load the SavedModel directory or ``.keras`` file ``path`` on ``device``."""
    tf = import_framework("tensorflow", "tensorflow", path)
    if not path.is_dir() and not zipfile.is_zipfile(path):
        # Keras says "File not found" of a file that is there, but no zip.
        raise ModelFileError(
            path,
            "is not a Keras archive (the zip file Keras 3's model.save writes): "
            "empty, corrupt, or saved another way",
            "save it with Keras 3's model.save('model.keras')",
        )
    device, placement = _setup(tf, device, threads)
    runtime: Runtime
    if path.is_dir():
        runtime = _saved_model(tf, path, device, placement)
    else:
        runtime = _keras(tf, path, device, placement)
    LOG.info("loaded %s", runtime.describe())
    return runtime


def _setup(tf: Any, device: str, threads: int | None) -> tuple[str, str]:
    """Memory growth and threads; the device and its ``tf.device`` name."""
    gpus = tf.config.list_physical_devices("GPU")
    try:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as exc:  # TensorFlow already started its devices
        say_once(
            logging.WARNING,
            "tf-initialised",
            f"TensorFlow was started before deepaas loaded a model, so GPU "
            f"memory growth or thread settings stay as they were ({exc})",
        )
    index = gpu_index(device)
    if index is None:
        return "cpu", "/CPU:0"
    if not gpus:
        say_once(
            logging.WARNING,
            "tf-no-gpu",
            f"TensorFlow {tf.__version__} sees no GPU (tensorflow-cpu, or no "
            f"CUDA libraries), so TensorFlow models run on the CPU, not {device}",
        )
        return "cpu", "/CPU:0"
    if index >= len(gpus):
        raise ValueError(f"device {device}: TensorFlow sees {len(gpus)} GPU(s)")
    return device, f"/GPU:{index}"


def _saved_model(tf: Any, path: Path, device: str, placement: str) -> Runtime:
    try:
        with tf.device(placement):
            loaded = tf.saved_model.load(os.fspath(path))
    except Exception as exc:  # TensorFlow's errors, whatever the damage
        raise ModelFileError(
            path,
            f"tf.saved_model.load cannot load it ({first_line(exc)})",
            "save it with tf.saved_model.save(model, DIR) or Keras' model.export(DIR)",
        ) from exc
    signatures = dict(loaded.signatures)
    if "serving_default" not in signatures:
        raise ModelFileError(
            path,
            f"has no 'serving_default' signature (it has "
            f"{', '.join(map(repr, signatures)) or 'none'})",
            "save it with signatures={'serving_default': "
            "function.get_concrete_function(tf.TensorSpec(...))}",
        )
    function = signatures["serving_default"]
    args, kwargs = function.structured_input_signature
    if args:
        raise ModelFileError(
            path,
            "its serving_default signature takes positional arguments",
            "save a signature whose inputs are named tensors",
        )
    outputs = function.structured_outputs
    if not isinstance(outputs, Mapping):
        raise ModelFileError(
            path,
            "its serving_default signature does not return named tensors",
            "return a dict of tensors",
        )
    return SavedModelRuntime(
        path,
        device,
        placement,
        loaded,
        [_spec(path, name, spec) for name, spec in kwargs.items()],
        [_spec(path, name, spec) for name, spec in outputs.items()],
    )


def _spec(path: Path, name: str, spec: Any) -> TensorInfo:
    """A ``tf.TensorSpec`` as a TensorInfo (unknown rank: shape None)."""
    dims = None if spec.shape.rank is None else spec.shape.as_list()
    return info_of(name, np.dtype(spec.dtype.as_numpy_dtype), dims, path)


def _keras(tf: Any, path: Path, device: str, placement: str) -> Runtime:
    keras = import_framework("keras", "tensorflow", path)
    try:
        with tf.device(placement):
            model = keras.models.load_model(os.fspath(path), compile=False)
    except Exception as exc:  # Keras' errors, whatever the damage
        raise ModelFileError(
            path,
            f"keras.models.load_model cannot load it ({first_line(exc)})",
            "save it with Keras 3's model.save('model.keras'), without Lambda "
            "layers of Python code (deepaas loads in Keras' safe mode)",
        ) from exc
    try:
        tensors, names = list(model.inputs), list(model.output_names)
    except (AttributeError, ValueError) as exc:
        raise ModelFileError(
            path,
            f"the model has no defined inputs ({first_line(exc)})",
            "build it before saving: start it with keras.Input(shape=...)",
        ) from exc
    inputs = [_keras_info(path, t.name, t) for t in tensors]
    outputs = [
        _keras_info(path, n, t) for n, t in zip(names, model.outputs, strict=True)
    ]
    return KerasRuntime(path, device, placement, model, inputs, outputs)


def _keras_info(path: Path, name: str, tensor: Any) -> TensorInfo:
    return info_of(name, np.dtype(tensor.dtype), tensor.shape, path)
