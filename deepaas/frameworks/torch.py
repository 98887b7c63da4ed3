"""PyTorch models (extra ``torch``): TorchScript and ``torch.export`` programs.

Files: ``.pt``/``.pth`` and ``.pt2`` are PyTorch archives (zip files); what
is inside decides how they load, whatever the suffix:

- a TorchScript archive (``torch.jit.save``) is loaded with
  ``torch.jit.load``, whose unpickler builds only TorchScript's own types;
- a ``torch.export`` program (``torch.export.save``) with
  ``torch.export.load``;
- a pickle from ``torch.save(model)`` or ``torch.save(state_dict)`` is
  refused, saying how to export the model: unpickling a full model runs
  whatever code the file names, and a state_dict holds no model. (The
  refusal tells the two apart with ``torch.load(weights_only=True)``, which
  builds tensors and containers only.)

Names: TorchScript records no tensor names. Inputs are named after
``forward``'s arguments (``def forward(self, x)`` -> ``x``); arguments with
a default value are left to their default. Outputs are named ``output``
(one tensor), ``output__0``, ``output__1``, ... (a tuple or list, Triton's
PyTorch backend's convention) or by key (a dict). ``torch.export`` programs
use the same names, their inputs' names being the exported ``forward``'s.

Shapes and datatypes: a ``torch.export`` program records both: each input's
example dtype and shape, with -1 for the axes exported as dynamic
(``dynamic_shapes={"x": {0: torch.export.Dim("batch")}}``); without them,
every axis is fixed, the batch axis included. A TorchScript archive records
neither, so without a ``signature`` its inputs and outputs are
``TensorInfo(name, None, None)``: ``run`` accepts any array (a wrong one
fails inside the model, with PyTorch's message), ``batch_axis_dynamic`` is
False (deepaas will not stack requests) and a TorchScript model returning a
dict or list has no ``outputs`` until it runs. ``load(path,
signature={"inputs": [...], "outputs": [...]})`` declares them: a list per
side of ``{"name", "datatype", "shape"}`` (OIP datatypes, full shapes, -1
for any size); inputs in ``forward``'s order (their names replace the
argument names), outputs in the order the model returns them (or by key
for a dict). ``"outputs"`` may be left out.

Running: under ``torch.inference_mode()``, inputs moved to the model's
device, outputs copied back to the host as numpy arrays.
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    say_once,
    tensor_infos,
)

if TYPE_CHECKING:
    import torch

EXPORT_HOWTO = (
    "export the model: torch.jit.save(torch.jit.script(model), 'model.pt') "
    "(or torch.jit.trace(model, example)), or torch.export.save("
    "torch.export.export(model, (example,)), 'model.pt2')"
)


#: How a torch.export program's input check fails (an AssertionError).
GUARD = "Guard failed"


def _shapes(arrays: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"'{name}' {list(a.shape)}" for name, a in arrays.items())


class TorchRuntime(Runtime):
    """A TorchScript module or an exported program's module on a device."""

    def __init__(
        self,
        path: Path,
        device: str,
        module: Any,
        framework: str,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[TensorInfo],
    ) -> None:
        super().__init__(path, device, inputs, outputs)
        self.framework = framework
        self.module = module
        #: A torch.export program's largest size of each bounded axis
        #: (``Dim(max=)``), by input: ``{"x": ((0, 8), (1, 5))}``.
        self.bounds: dict[str, tuple[tuple[int, int], ...]] = {}
        import torch

        self._torch = torch

    @property
    def max_rows(self) -> int | None:  # type: ignore[override]
        """The largest batch every input takes (its axis 0's bound)."""
        rows = [
            most
            for name in (t.name for t in self.inputs)
            for axis, most in self.bounds.get(name, ())
            if axis == 0
        ]
        return min(rows) if rows else None

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``module(*inputs)`` in inference mode; outputs named (module doc)."""
        for name, bounded in self.bounds.items():
            shape = arrays[name].shape
            for axis, most in bounded:
                if shape[axis] > most:
                    # The program's guard would fail: an AssertionError, a 500.
                    raise TensorInputError(
                        f"input '{name}': axis {axis} is {shape[axis]}, but the "
                        f"model takes at most {most} there (shape "
                        f"{list(shape)}); send at most {most}"
                    )
        torch = self._torch
        with torch.inference_mode():
            args = [self._tensor(name, array) for name, array in arrays.items()]
            try:
                result = self.module(*args)
            except AssertionError as exc:
                text = str(exc)
                if self.framework != "torch.export" or not text.startswith(GUARD):
                    raise
                # A torch.export program checks its inputs' shapes first
                # (axes one Dim ties together, a Dim's min): the client's.
                raise TensorInputError(
                    f"the inputs' shapes {_shapes(arrays)} do not satisfy the "
                    f"model ({' '.join(text.split())[:200]})"
                ) from None
        return {name: _to_numpy(name, value) for name, value in self._named(result)}

    def _tensor(self, name: str, array: np.ndarray) -> torch.Tensor:
        if array.dtype.kind == "O":
            raise TensorInputError(
                f"input '{name}': a PyTorch model takes numbers or booleans, not BYTES"
            )
        if any(stride < 0 for stride in array.strides):
            # A reversed view (image[:, ::-1], BGR to RGB), which onnxruntime
            # and TensorFlow take; torch.from_numpy raises ValueError.
            array = np.ascontiguousarray(array)
        with warnings.catch_warnings():
            # A read-only array (an OIP binary body is one) is only read here.
            warnings.filterwarnings("ignore", "The given NumPy array is not writ")
            tensor = self._torch.from_numpy(array)
        return tensor.to(self.device)

    def _named(self, result: object) -> list[tuple[str, object]]:
        """The outputs of ``result`` with their names."""
        names = [t.name for t in self.outputs]
        if isinstance(result, Mapping):
            if not names:
                return [(str(key), value) for key, value in result.items()]
            missing = [name for name in names if name not in result]
            if missing:
                raise RuntimeError(
                    f"{self.path}: forward returned a dict without "
                    f"{', '.join(map(repr, missing))}; it has "
                    f"{', '.join(map(repr, result))}"
                )
            return [(name, result[name]) for name in names]
        values = list(result) if isinstance(result, (tuple, list)) else [result]
        if not names:
            names = output_names(len(values), isinstance(result, (tuple, list)))
        if len(values) != len(names):
            raise RuntimeError(
                f"{self.path}: forward returned {len(values)} output(s), but "
                f"the model declares {len(names)} ({', '.join(names)})"
            )
        return list(zip(names, values, strict=True))


def output_names(count: int, sequence: bool) -> list[str]:
    """``output`` for one tensor, ``output__0..`` for a tuple or list."""
    return [f"output__{i}" for i in range(count)] if sequence else ["output"]


def _to_numpy(name: str, value: object) -> np.ndarray:
    import torch

    if not isinstance(value, torch.Tensor):
        raise RuntimeError(
            f"output '{name}' is {type(value).__name__}, not a tensor; return "
            f"tensors (one, a tuple, a list or a dict of them)"
        )
    return value.detach().cpu().numpy()


# -- loading -----------------------------------------------------------------------


def load(
    path: Path,
    device: str,
    *,
    signature: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> TorchRuntime:
    """Load the PyTorch archive ``path`` on ``device`` (see the module doc)."""
    torch = import_framework("torch", "torch", path)
    kind = archive_kind(path)
    if kind == "pickle":
        _refuse_pickle(torch, path)
    if signature is not None and kind != "torchscript":
        raise ValueError(
            f"{path}: signature= is for TorchScript archives; this is a "
            f"torch.export program, which records its own"
        )
    if threads is not None:
        torch.set_num_threads(threads)
    device = _device(torch, device)
    if kind == "torchscript":
        runtime = _torchscript(torch, path, device, signature)
    else:
        from deepaas.frameworks.torch_export import load_program

        runtime = load_program(torch, path, device)
    LOG.info("loaded %s", runtime.describe())
    return runtime


def archive_kind(path: Path) -> str:
    """``torchscript``, ``export`` or ``pickle``, from the archive's entries."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(
            path,
            "is not a PyTorch archive (the zip file torch.jit.save and "
            f"torch.export.save write): corrupt, or saved another way ({exc})",
            EXPORT_HOWTO,
        ) from None
    entries = {name.split("/", 1)[-1] for name in names}  # under one folder
    if "archive_format" in entries or any(e.startswith("models/") for e in entries):
        return "export"
    if "constants.pkl" in entries and any(e.startswith("code/") for e in entries):
        return "torchscript"
    if "data.pkl" in entries:
        return "pickle"
    raise ModelFileError(path, "is a zip file, but not one PyTorch wrote", EXPORT_HOWTO)


def _refuse_pickle(torch: Any, path: Path) -> None:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # classes weights_only refuses: a pickled model
        content = None
    if isinstance(content, Mapping):
        problem = (
            "holds a state_dict (torch.save(model.state_dict())): weights "
            "without the model's code, which deepaas cannot rebuild"
        )
    else:
        problem = (
            "is a full-model pickle (torch.save(model)), which deepaas does not "
            "load: unpickling it could run any code"
        )
    raise ModelFileError(path, problem, f"load the model in Python and {EXPORT_HOWTO}")


def _device(torch: Any, device: str) -> str:
    """``device``, or ``cpu`` when this PyTorch cannot use CUDA (said once)."""
    index = gpu_index(device)
    if index is None:
        return "cpu"
    if not torch.cuda.is_available():
        say_once(
            logging.WARNING,
            "torch-no-cuda",
            f"PyTorch {torch.__version__} cannot use CUDA here (a CPU-only "
            f"build, or no driver), so PyTorch models run on the CPU, not "
            f"{device}",
        )
        return "cpu"
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device {device}: this process sees {count} GPU(s)")
    return device


def _torchscript(
    torch: Any, path: Path, device: str, signature: Mapping[str, Any] | None
) -> TorchRuntime:
    try:
        with warnings.catch_warnings():
            # PyTorch 2.10+ deprecates TorchScript in favour of torch.export;
            # serving the archives users have is still our job (docs say so).
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(os.fspath(path), map_location=device)
    except Exception as exc:  # torch's C++ errors, whatever the damage
        raise ModelFileError(
            path, f"torch.jit.load cannot load it ({first_line(exc)})", EXPORT_HOWTO
        ) from exc
    module.eval()
    schema = module.forward.schema
    names = []
    for arg in schema.arguments[1:]:  # [0] is self
        if arg.has_default_value():
            continue
        if arg.kwarg_only or not isinstance(arg.type, torch.TensorType):
            raise ModelFileError(
                path,
                f"forward's argument '{arg.name}' is {arg.type}"
                f"{' keyword-only' if arg.kwarg_only else ''}: deepaas passes "
                f"tensors, by position",
                "give forward positional tensor arguments (others need a default)",
            )
        names.append(arg.name)
    returns = schema.returns[0].type if schema.returns else None
    if isinstance(returns, torch.TensorType):
        derived = output_names(1, False)
    elif isinstance(returns, torch.TupleType) and all(
        isinstance(t, torch.TensorType) for t in returns.elements()
    ):
        derived = output_names(len(returns.elements()), True)
    else:  # a dict or list: named when it runs
        derived = []
    inputs = [TensorInfo(name, None, None) for name in names]
    outputs = [TensorInfo(name, None, None) for name in derived]
    if signature is not None:
        inputs, outputs = _declared(path, signature, names, outputs)
    return TorchRuntime(path, device, module, "torchscript", inputs, outputs)


def _declared(
    path: Path,
    signature: Mapping[str, Any],
    arg_names: list[str],
    derived: list[TensorInfo],
) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The ``signature=`` given for a TorchScript file, checked."""
    where = f"{path}: signature"
    if not isinstance(signature, Mapping) or "inputs" not in signature:
        raise ValueError(f"{where} must be a dict with 'inputs' (and 'outputs')")
    unknown = set(signature) - {"inputs", "outputs"}
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {sorted(unknown)}")
    inputs = tensor_infos(f"{where} 'inputs'", signature["inputs"])
    if len(inputs) != len(arg_names):
        raise ValueError(
            f"{where} gives {len(inputs)} input(s), but forward takes "
            f"{len(arg_names)} ({', '.join(arg_names)})"
        )
    outputs = derived
    if signature.get("outputs") is not None:
        outputs = tensor_infos(f"{where} 'outputs'", signature["outputs"])
    return inputs, outputs
