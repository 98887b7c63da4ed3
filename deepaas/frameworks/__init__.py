"""Model files served by their framework: ONNX Runtime, PyTorch, TensorFlow.

``load(path, device=None)`` gives a :class:`Runtime` for one model file,
whatever its framework::

    from deepaas import frameworks

    model = frameworks.load("mlp.onnx")     # on DEEPAAS_DEVICE, else the CPU
    model.inputs                            # (TensorInfo('x', 'FP32', (-1, 4)),)
    model.run({"x": batch})                 # {"y": array of shape (N, 3)}

The file's kind picks the framework (:data:`KINDS`, :func:`kind_of`). Each
framework is an optional extra (``pip install 'deepaas[onnx]'``,
``[torch]``, ``[tensorflow]``) imported by its module's ``load`` only, so
importing deepaas, or this package, never imports one.

Every problem with the file itself (no such file, unknown kind, corrupt,
a full-model pickle, framework not installed) is a :class:`ModelFileError`
whose one-line message names the file and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from deepaas.frameworks.base import (
    ModelFileError,
    Runtime,
    TensorInfo,
    file_of,
    resolve_device,
)

__all__ = ["KINDS", "ModelFileError", "Runtime", "TensorInfo", "kind_of", "load"]

#: File kind -> what it is. A kind is a suffix, or ``savedmodel`` for a
#: directory holding ``saved_model.pb``.
KINDS: dict[str, str] = {
    ".onnx": "ONNX model (onnxruntime; extra 'onnx')",
    ".pt": "TorchScript archive from torch.jit.save (extra 'torch')",
    ".pth": "TorchScript archive from torch.jit.save (extra 'torch')",
    ".pt2": "torch.export program from torch.export.save (extra 'torch')",
    ".keras": "Keras model from model.save (extra 'tensorflow')",
    "savedmodel": "TensorFlow SavedModel directory (extra 'tensorflow')",
}

_SUPPORTED = ".onnx, .pt/.pth (TorchScript), .pt2 (torch.export), .keras, or a "
_SUPPORTED += "TensorFlow SavedModel directory (with saved_model.pb)"


def kind_of(path: str | os.PathLike[str]) -> str | None:
    """The kind of ``path`` (a key of :data:`KINDS`), or None if it is none.

    Cheap (no framework, no reading beyond a directory listing), so that a
    directory of models can be scanned with it.
    """
    if os.path.isdir(path):
        has_pb = any(
            os.path.isfile(os.path.join(path, name))
            for name in ("saved_model.pb", "saved_model.pbtxt")
        )
        return "savedmodel" if has_pb else None
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    return suffix if suffix in KINDS else None


def load(
    path: str | os.PathLike[str],
    device: str | None = None,
    *,
    signature: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> Runtime:
    """Load the model file ``path`` on ``device`` with its framework.

    ``device``: ``cpu``, ``cuda`` or ``cuda:N``; None means the worker's
    device (``DEEPAAS_DEVICE``, set by deepaas in each worker), else
    ``cpu``. A GPU the framework cannot use here (a CPU-only build) is said
    once in the log and the model runs on the CPU: ``runtime.device`` tells
    where it runs.

    ``signature`` (TorchScript only, whose files record no shapes or
    datatypes): ``{"inputs": [{"name", "datatype", "shape"}, ...],
    "outputs": [...]}`` with OIP datatypes and full shapes (-1: any size),
    inputs in ``forward``'s argument order; see :mod:`deepaas.frameworks.torch`.

    ``threads``: CPU threads for one model's computation. None: one thread
    for ONNX Runtime (deepaas runs a worker per core, see
    :mod:`deepaas.frameworks.onnx`), the framework's own setting for
    PyTorch and TensorFlow (process-wide settings a plugin may have set).

    Raises :class:`ModelFileError` for the file, ``ValueError`` for a bad
    ``device``, ``signature`` or ``threads``.
    """
    file = file_of(path)
    kind = kind_of(file)
    device = resolve_device(device)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if kind is None:
        what = "a directory without saved_model.pb" if file.is_dir() else "a file"
        raise ModelFileError(
            file,
            f"unknown model kind ({what} of kind '{file.suffix or file.name}')",
            f"deepaas loads {_SUPPORTED}",
        )
    if signature is not None and kind not in (".pt", ".pth", ".pt2"):
        raise ValueError(
            f"{file}: signature= is for TorchScript archives only; this file "
            f"describes its own inputs and outputs"
        )
    if kind == ".onnx":
        from deepaas.frameworks import onnx

        return onnx.load(file, device, threads=threads)
    if kind in (".pt", ".pth", ".pt2"):
        from deepaas.frameworks import torch

        return torch.load(file, device, signature=signature, threads=threads)
    from deepaas.frameworks import tensorflow

    return tensorflow.load(file, device, threads=threads)
