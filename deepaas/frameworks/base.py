"""What every framework runtime is: one model file, loaded on one device.

A :class:`Runtime` describes its model's inputs and outputs as
:class:`TensorInfo` (name, OIP datatype, shape with -1 for a dynamic axis)
and runs one batch: ``run({"x": array}) -> {"y": array}``. The framework
modules (:mod:`.onnx`, :mod:`.torch`, :mod:`.tensorflow`) implement
:meth:`Runtime._run`; the input checks are here, once, so that a wrong array
fails the same way whatever the framework (a
:class:`~deepaas.exceptions.TensorInputError` naming the input), before the
framework sees it and answers with its own, less readable, error.

Also here: :class:`ModelFileError`, the one error for a model file that
cannot be served (unknown kind, corrupt, framework absent), and the device
and logging helpers the framework modules share. Nothing here imports a
framework.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from deepaas.exceptions import TensorInputError
from deepaas.oip.datatypes import DATATYPES, datatype_of

LOG = logging.getLogger("deepaas.frameworks")

#: Set by the engine in every worker (``cuda:0`` or ``cpu``, see
#: :func:`deepaas.engine.process.device_env`); the device ``load`` uses
#: when it is given none.
DEVICE_ENV = "DEEPAAS_DEVICE"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output of a model, as the OIP metadata shows it.

    ``datatype`` is an OIP datatype name (``FP32``, ``INT64``, ``BYTES``,
    ...; see :data:`deepaas.oip.datatypes.DATATYPES`). ``shape`` is the full
    shape, batch axis included, with -1 for an axis of any size. Either is
    None when the model file does not say (a TorchScript model loaded
    without a ``signature``): ``run`` then accepts any datatype, or any
    shape, for that tensor.
    """

    name: str
    datatype: str | None
    shape: tuple[int, ...] | None

    def describe(self) -> str:
        """``FP32 [-1, 4]``, for messages; ``any datatype, any shape`` where
        the model does not say."""
        shape = "any shape" if self.shape is None else str(list(self.shape))
        if self.datatype is None:
            return f"any datatype, {shape}"
        return f"{self.datatype} {shape}"

    def as_dict(self) -> dict[str, Any]:
        """``{"name", "datatype", "shape"}`` (OIP metadata's form)."""
        return {
            "name": self.name,
            "datatype": self.datatype,
            "shape": None if self.shape is None else list(self.shape),
        }


class ModelFileError(Exception):
    """A model file that cannot be served: unknown kind, corrupt, not
    exportable as it is, or its framework is not installed.

    A start-up error (not an HTTP one). The message is one line naming the
    file, what is wrong and how to fix it; ``path`` is the file.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str, fix: str = ""):
        self.path = str(path)
        super().__init__(f"{self.path}: {problem}" + (f"; {fix}" if fix else ""))


class Runtime(abc.ABC):
    """One model file loaded on one device, run a batch at a time.

    Attributes (set by the framework module that loads it):

    - ``path``: the model file (or SavedModel directory).
    - ``framework``: ``onnxruntime``, ``torchscript``, ``torch.export``,
      ``tensorflow`` (a SavedModel) or ``keras``.
    - ``device``: where it runs, ``cpu`` or ``cuda:N``, after any fall-back
      (a GPU asked for but not usable is logged and becomes ``cpu``).
    - ``inputs``, ``outputs``: :class:`TensorInfo` in the model's order.
      ``outputs`` is empty when the file does not say what it returns (a
      TorchScript model returning a dict or list, loaded without a
      signature); ``run`` still returns them all.
    """

    framework: str = ""
    #: The most rows a batch may have, when the file bounds its batch axis
    #: (a torch.export ``Dim(max=)``); None: any number.
    max_rows: int | None = None

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[TensorInfo],
    ) -> None:
        self.path = str(path)
        self.device = device
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)

    @property
    def batch_axis_dynamic(self) -> bool:
        """Whether axis 0 of every input is dynamic (-1): the model takes a
        batch of any size, so requests can be stacked along it."""
        return bool(self.inputs) and all(
            t.shape is not None and len(t.shape) > 0 and t.shape[0] == -1
            for t in self.inputs
        )

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: an array per input, by name -> an array per output.

        The arrays are checked against :attr:`inputs` first (every input
        given, no other; its datatype exactly, no silent casts; its rank and
        fixed axes; one batch size across inputs when the batch axis is
        dynamic): a :class:`~deepaas.exceptions.TensorInputError` otherwise.
        Outputs are numpy arrays on the host, by output name.
        """
        return self._run(check_inputs(self.inputs, arrays, self.batch_axis_dynamic))

    @abc.abstractmethod
    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run checked, native-byte-order ``arrays`` (one per input)."""

    def describe(self) -> str:
        """One line for the log: file, framework, device and signature."""
        return (
            f"{self.path} ({self.framework} on {self.device}): inputs "
            f"{_list(self.inputs)}; outputs {_list(self.outputs) or 'unknown'}"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def _list(tensors: Iterable[TensorInfo]) -> str:
    return ", ".join(f"{t.name} {t.describe()}" for t in tensors)


# -- input checks -----------------------------------------------------------------


def check_inputs(
    inputs: Sequence[TensorInfo], arrays: Mapping[str, object], batched: bool
) -> dict[str, np.ndarray]:
    """``arrays`` checked against ``inputs``, in the inputs' order.

    Arrays of a non-native byte order are converted (the frameworks take
    native order only); others are passed as they are, views included.
    """
    names = {t.name for t in inputs}
    unknown = [name for name in arrays if name not in names]
    if unknown:
        raise TensorInputError(
            f"unknown input(s) {', '.join(map(repr, unknown))}; the model's "
            f"inputs are {_expected(inputs)}"
        )
    missing = [t for t in inputs if t.name not in arrays]
    if missing:
        raise TensorInputError(
            f"missing input(s) {_expected(missing)}; every input is required"
        )
    checked = {t.name: _check(t, arrays[t.name]) for t in inputs}
    if batched and len(checked) > 1:
        sizes = {name: len(array) for name, array in checked.items()}
        if len(set(sizes.values())) > 1:
            raise TensorInputError(
                "inputs have different batch sizes (axis 0): "
                + ", ".join(f"'{name}' {size}" for name, size in sizes.items())
                + "; give each input the same number of rows"
            )
    return checked


def _expected(tensors: Iterable[TensorInfo]) -> str:
    return ", ".join(f"'{t.name}' ({t.describe()})" for t in tensors)


def _check(info: TensorInfo, array: object) -> np.ndarray:
    where = f"input '{info.name}'"
    if not isinstance(array, np.ndarray):
        raise TensorInputError(
            f"{where}: expected a numpy array of {info.describe()}, got "
            f"{type(array).__name__}; convert it with numpy.asarray(...)"
        )
    datatype = datatype_of(array.dtype)
    got = f"{datatype or array.dtype} {list(array.shape)}"
    if info.datatype is not None and datatype != info.datatype:
        dtype = DATATYPES[info.datatype]
        fix = (
            "give an array of str or bytes objects"
            if info.datatype == "BYTES"
            else f"convert it with .astype(numpy.{dtype.name})"
        )
        raise TensorInputError(f"{where}: expected {info.describe()}, got {got}; {fix}")
    if datatype is None:
        raise TensorInputError(
            f"{where}: numpy dtype {array.dtype} has no OIP datatype; use bool, "
            f"(u)int8-64, float16/32/64, or str/bytes objects"
        )
    if info.shape is not None:
        bad = len(array.shape) != len(info.shape) or any(
            want not in (-1, have)
            for want, have in zip(info.shape, array.shape, strict=False)
        )
        if bad:
            raise TensorInputError(
                f"{where}: expected {info.describe()}, got {got} (-1 is an axis "
                f"of any size)"
            )
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


# -- what framework modules share -----------------------------------------------


def resolve_device(device: str | None) -> str:
    """``cpu`` or ``cuda:N`` from ``device``, or from ``DEEPAAS_DEVICE``.

    None means the worker's device, which the engine puts in
    ``DEEPAAS_DEVICE`` (the worker sees only its own GPUs, so that is
    ``cuda:0``), else ``cpu`` (a plugin run outside deepaas, a test).
    ``cuda`` means ``cuda:0``.
    """
    if device is None:
        device = os.environ.get(DEVICE_ENV) or "cpu"
    text = device.strip().lower()
    if text == "cuda":
        return "cuda:0"
    if text == "cpu" or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise ValueError(f"device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")


def gpu_index(device: str) -> int | None:
    """N of ``cuda:N``; None for ``cpu``."""
    return int(device[5:]) if device.startswith("cuda:") else None


_SAID: set[str] = set()


def say_once(level: int, key: str, message: str) -> None:
    """Log ``message`` the first time ``key`` is seen in this process: a
    fall-back (no CUDA provider, say) is worth one line, not one per model."""
    if key not in _SAID:
        _SAID.add(key)
        LOG.log(level, "%s", message)


def import_framework(module: str, extra: str, path: str | os.PathLike[str]) -> Any:
    """Import ``module`` for ``path``, or say which extra to install.

    Frameworks are imported here, when a file needs one, never when deepaas
    is imported: each costs seconds and memory, and a GPU build may take GPU
    memory as it starts.
    """
    try:
        imported: ModuleType = importlib.import_module(module)
    except ImportError as exc:
        problem = (
            f"needs {module}, which is not installed"
            if isinstance(exc, ModuleNotFoundError)
            else f"needs {module}, which cannot be imported ({exc})"
        )
        fix = f"pip install 'deepaas[{extra}]'" + _INSTALL_NOTES.get(extra, "")
        raise ModelFileError(path, problem, fix) from exc
    return imported


#: Said after the extra to install: a bare torch install is the CUDA build.
_INSTALL_NOTES = {
    "torch": "".join(
        (
            " (for the CPU build, first: ",
            "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu",
            ")",
        )
    ),
}


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``: frameworks' errors run to pages."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def info_of(
    name: str,
    dtype: np.dtype[Any] | None,
    shape: Iterable[Any] | None,
    path: str | os.PathLike[str],
) -> TensorInfo:
    """A :class:`TensorInfo` from a framework's numpy dtype and shape.

    Axes that are not a non-negative int (None, a symbol, a symbolic size)
    are dynamic: -1. A dtype with no OIP datatype (bfloat16, complex) is a
    :class:`ModelFileError`: requests could not carry it.
    """
    datatype = None if dtype is None else datatype_of(dtype)
    if dtype is not None and datatype is None:
        raise ModelFileError(
            path,
            f"tensor '{name}' is of dtype {dtype}, which has no OIP datatype",
            "export the model with float16/32/64, (u)int or bool tensors",
        )
    dims = None
    if shape is not None:
        dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)
    return TensorInfo(name, datatype, dims)


_TENSOR_DATATYPES = [name for name in DATATYPES if name != "BYTES"]


def tensor_infos(where: str, value: object) -> list[TensorInfo]:
    """Declared tensors (dicts of name, datatype, shape, or TensorInfo)
    checked: OIP datatypes other than BYTES, shapes of sizes or -1. A
    ``ValueError`` starting with ``where`` says what is wrong."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where} must be a list of {{'name', 'datatype', 'shape'}}")
    tensors = []
    for i, item in enumerate(value):
        if isinstance(item, TensorInfo):
            item = item.as_dict()
        if not isinstance(item, Mapping) or set(item) != {"name", "datatype", "shape"}:
            raise ValueError(
                f"{where}[{i}] must have exactly 'name', 'datatype' and 'shape'"
            )
        name, datatype, shape = item["name"], item["datatype"], item["shape"]
        if not isinstance(datatype, str) or datatype not in _TENSOR_DATATYPES:
            raise ValueError(
                f"{where}[{i}] ({name!r}): datatype {datatype!r} is not one a "
                f"PyTorch tensor holds; use one of "
                f"{', '.join(_TENSOR_DATATYPES)}"
            )
        if not isinstance(shape, (list, tuple)) or any(
            isinstance(d, bool) or not isinstance(d, int) or d < -1 for d in shape
        ):
            raise ValueError(
                f"{where}[{i}] ({name!r}): shape must be a list of axis sizes "
                f"(-1: any size), got {shape!r}"
            )
        tensors.append(TensorInfo(str(name), datatype, tuple(shape)))
    if len({t.name for t in tensors}) != len(tensors):
        raise ValueError(f"{where}: names must differ")
    return tensors


def file_of(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, which must exist, a file or a directory."""
    found = Path(path)
    if not found.exists():
        raise ModelFileError(path, "no such file or directory")
    if not (found.is_file() or found.is_dir()):
        # A FIFO would block the framework's read for good, a device such
        # as /dev/zero fill the memory.
        raise ModelFileError(
            path,
            "is not a regular file (a FIFO, socket or device)",
            "give the model file itself",
        )
    return found
