"""``torch.export`` programs (``.pt2``): their inputs, outputs and bounds.

A program records each input's and output's example dtype and shape, with
-1 for the axes exported as dynamic, and the bounds given to them
(``torch.export.Dim("batch", max=8)``), which the runtime checks before it
runs (:attr:`TorchRuntime.bounds`): past one, the program's own guard fails
inside torch. See :mod:`deepaas.frameworks.torch` for the archive kinds
and the names of inputs and outputs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from deepaas.frameworks.base import ModelFileError, TensorInfo, first_line, info_of
from deepaas.frameworks.torch import TorchRuntime, output_names


def load_program(torch: Any, path: Path, device: str) -> TorchRuntime:
    """The ``torch.export`` program saved at ``path`` on ``device``, as a
    :class:`~deepaas.frameworks.torch.TorchRuntime`; raises
    :class:`~deepaas.frameworks.base.ModelFileError` saying what to change."""
    try:
        program = torch.export.load(os.fspath(path))
    except Exception as exc:  # torch's errors, whatever the damage
        raise ModelFileError(
            path,
            f"torch.export.load cannot load it ({first_line(exc)})",
            "save it with torch.export.save(torch.export.export(model, "
            "(example,)), 'model.pt2')",
        ) from exc
    user_inputs = list(program.graph_signature.user_inputs)
    spec = program.call_spec.in_spec
    if spec.child(1).num_children or spec.child(0).num_children != len(user_inputs):
        raise ModelFileError(
            path,
            "its forward takes keyword or nested arguments",
            "export a module whose forward takes tensors positionally",
        )
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    inputs = [_spec(torch, path, name, nodes[name]) for name in user_inputs]
    out_spec = program.call_spec.out_spec
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    values = list(out_node.args[0])
    if out_spec.is_leaf():
        names = output_names(1, False)
    elif out_spec.type is dict and out_spec.num_leaves == out_spec.num_children:
        names = [str(key) for key in out_spec.context]
    elif out_spec.num_leaves == out_spec.num_children:
        names = output_names(len(values), True)
    else:
        raise ModelFileError(
            path,
            "its forward returns nested outputs",
            "return a tensor, or a flat tuple, list or dict of tensors",
        )
    outputs = [_spec(torch, path, n, v) for n, v in zip(names, values, strict=True)]
    if device != "cpu":
        # Moves the weights and the devices written in the graph (tensors
        # created inside forward); Module.to would move the weights only.
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    module = program.module()
    runtime = TorchRuntime(path, device, module, "torch.export", inputs, outputs)
    for name in user_inputs:
        bounded = _bounds(program, nodes[name])
        if bounded:
            runtime.bounds[name] = bounded
    return runtime


def _bounds(program: Any, node: Any) -> tuple[tuple[int, int], ...]:
    """The axes of an input that a ``Dim(max=)`` bounds, with their bound."""
    found = []
    for axis, size in enumerate(node.meta["val"].shape):
        expr = getattr(getattr(size, "node", None), "expr", None)
        limits = program.range_constraints.get(expr) if expr is not None else None
        if limits is None:
            continue
        try:
            most = int(limits.upper)
        except Exception:  # unbounded: int_oo (sympy's errors vary)
            continue
        if most < sys.maxsize - 1:
            found.append((axis, most))
    return tuple(found)


def _spec(torch: Any, path: Path, name: str, node: Any) -> TensorInfo:
    """A graph node's example value (a fake tensor) as a TensorInfo."""
    value = node.meta.get("val") if hasattr(node, "meta") else None
    if not isinstance(value, torch.Tensor):
        raise ModelFileError(
            path,
            f"'{name}' is {type(value).__name__}, not a tensor",
            "export a module whose forward takes and returns tensors",
        )
    try:
        dtype = torch.empty(0, dtype=value.dtype).numpy().dtype
    except TypeError:  # no numpy dtype: bfloat16, ...
        raise ModelFileError(
            path,
            f"tensor '{name}' is {value.dtype}, which has no OIP datatype",
            "export the model with float16/32/64, (u)int or bool tensors",
        ) from None
    return info_of(name, dtype, value.shape, path)
