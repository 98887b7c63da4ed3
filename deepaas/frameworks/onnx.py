"""ONNX models (``.onnx``) on ONNX Runtime (extra ``onnx``: ``onnxruntime``).

Device: on ``cuda:N`` the session uses the ``CUDAExecutionProvider`` (device
N, with the CPU provider for the operators CUDA lacks) when this onnxruntime
has it, which is the ``onnxruntime-gpu`` package's build; otherwise the CPU
provider, said once in the log. ``Runtime.device`` is where the session
really runs (``cpu`` when onnxruntime fell back).

Signature: ONNX graphs name and type their inputs and outputs; symbolic or
unknown axes (``"batch"``, ``None``) are -1, and a tensor whose type has no
shape at all (unknown rank) has shape None: any shape
(:mod:`.onnx_shapes`; onnxruntime shows it as a scalar). Tensor types map to OIP
datatypes (``tensor(float)`` -> FP32, ``tensor(string)`` -> BYTES);
sequences, maps and bfloat16 are refused at load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from deepaas.exceptions import TensorInputError
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
from deepaas.frameworks.onnx_shapes import unknown_rank

#: ONNX element types (as onnxruntime's ``NodeArg.type`` spells them) ->
#: numpy dtypes; their OIP datatypes come from :mod:`deepaas.oip.datatypes`.
_ELEMENTS = {
    "tensor(bool)": "bool",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(string)": "object",
}

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


class OnnxRuntime(Runtime):
    """An ``onnxruntime.InferenceSession`` over one ``.onnx`` file."""

    framework = "onnxruntime"

    def __init__(
        self,
        path: Path,
        device: str,
        session: Any,
        inputs: list[TensorInfo],
        outputs: list[TensorInfo],
    ) -> None:
        super().__init__(path, device, inputs, outputs)
        self.session = session
        self._output_names = [t.name for t in outputs]
        self._strings = [t.name for t in inputs if t.datatype == "BYTES"]

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One ``session.run`` of the batch; every output, by name."""
        for name in self._strings:
            arrays[name] = _text(name, arrays[name])
        results = self.session.run(self._output_names, arrays)
        return dict(zip(self._output_names, results, strict=True))


def _text(name: str, array: np.ndarray) -> np.ndarray:
    """A BYTES input as onnxruntime takes a string tensor: ``str`` elements.

    Given ``bytes``, onnxruntime stores their ``str()``, so ``b"cat"``
    would reach the model as the text ``b'cat'``: bytes are decoded as
    UTF-8 (an ONNX string is UTF-8 text) and anything else refused.
    """
    if not any(isinstance(item, bytes) for item in array.flat):
        return array
    text = np.empty(array.shape, dtype=object)
    for index, item in enumerate(array.flat):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise TensorInputError(
                    f"input '{name}': element {index} is not UTF-8 text, which "
                    "an ONNX string tensor holds; send UTF-8 text"
                ) from None
        text.flat[index] = item
    return text


def session_options(ort: Any, threads: int | None) -> Any:
    """Session options for one model in one deepaas worker.

    ``intra_op_num_threads`` is 1 unless ``threads`` says otherwise, and
    ``inter_op_num_threads`` 1 (operators run in sequence). Why: deepaas
    scales a CPU model out with worker processes (``--workers``, one per
    core), and each onnxruntime session by default starts a thread per
    physical core that spins while it waits for work; N workers would then
    run N x cores threads fighting for N cores, which is slower than one
    thread each. With batching, one thread per worker also keeps a batch's
    cost predictable. Give ``threads`` (``deepaas.frameworks.load(...,
    threads=4)``) when one worker owns several cores.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def providers_for(ort: Any, device: str) -> tuple[list[Any], str]:
    """The execution providers for ``device``, and the device they give."""
    index = gpu_index(device)
    if index is None:
        return [_CPU], "cpu"
    if _CUDA in ort.get_available_providers():
        return [(_CUDA, {"device_id": index}), _CPU], device
    say_once(
        logging.WARNING,
        "onnx-no-cuda",
        f"onnxruntime {ort.__version__} has no {_CUDA}, so ONNX models run on "
        f"the CPU, not {device}: install onnxruntime-gpu (instead of "
        f"onnxruntime) to use the GPU",
    )
    return [_CPU], "cpu"


def load(path: Path, device: str, *, threads: int | None = None) -> OnnxRuntime:
    """Open an inference session for ``path`` on ``device`` (see module)."""
    ort = import_framework("onnxruntime", "onnx", path)
    providers, where = providers_for(ort, device)
    try:
        session = ort.InferenceSession(
            os.fspath(path),
            sess_options=session_options(ort, threads),
            providers=providers,
        )
    except Exception as exc:  # onnxruntime's own error types, whatever they are
        raise ModelFileError(
            path,
            f"onnxruntime cannot load it ({first_line(exc)})",
            "check that it is an ONNX model that onnx.checker.check_model accepts",
        ) from exc
    if where != "cpu" and _CUDA not in session.get_providers():
        say_once(
            logging.WARNING,
            "onnx-cuda-failed",
            f"onnxruntime could not start {_CUDA} on {device} (see its log "
            f"above: CUDA or cuDNN libraries?), so ONNX models run on the CPU",
        )
        where = "cpu"
    inputs = [_info(path, arg) for arg in session.get_inputs()]
    outputs = [_info(path, arg) for arg in session.get_outputs()]
    if any(t.shape == () for t in (*inputs, *outputs)):
        # [] is a scalar, or a tensor of unknown rank: the file says which.
        unknown = unknown_rank(path)
        inputs = [_any_shape(t, unknown) for t in inputs]
        outputs = [_any_shape(t, unknown) for t in outputs]
    runtime = OnnxRuntime(path, where, session, inputs, outputs)
    LOG.info("loaded %s", runtime.describe())
    return runtime


def _any_shape(tensor: TensorInfo, unknown: set[str]) -> TensorInfo:
    """``tensor``, of any shape (None) when its type in the file has none."""
    if tensor.shape == () and tensor.name in unknown:
        return dataclasses.replace(tensor, shape=None)
    return tensor


def _info(path: Path, arg: Any) -> TensorInfo:
    """A session's ``NodeArg`` as a :class:`TensorInfo`."""
    element = _ELEMENTS.get(arg.type)
    if element is None:
        raise ModelFileError(
            path,
            f"tensor '{arg.name}' is of type {arg.type}, which has no OIP datatype",
            "export the model with tensors of bool, (u)int, float16/32/64 or "
            "string elements",
        )
    return info_of(arg.name, np.dtype(element), arg.shape, path)
