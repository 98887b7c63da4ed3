"""A tensor-native plugin's signature, and what conforms to it.

A plugin that wants numpy arrays in and out, rather than its predict
arguments mapped onto tensors (:mod:`deepaas.api.oip_mapping`), defines two
functions (methods, on a class-based plugin)::

    def get_infer_signature():
        return {
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [3, 224, 224]}],
            "outputs": [{"name": "scores", "datatype": "FP32", "shape": [1000]}],
            "max_batch_size": 8,  # optional; 0 (the default): no batch axis
        }

    def infer(**arrays):  # one numpy array per input, by name
        return {"scores": ...}  # one array per output, by name

The conventions are Triton's (its model configuration, and the metadata it
serves): datatypes are OIP's; -1 is an axis of any size; with
``max_batch_size`` > 0, axis 0 of every input and output is the batch axis,
**not listed** in the signature's shapes, shown as -1 in the OIP metadata
and present in every request (``[N, 3, 224, 224]``, 1 <= N <=
``max_batch_size``, which is at most 256). Every input is required. Plain
dicts, so that a plugin needs nothing from deepaas to declare them.

Here: :func:`parse_signature` (a malformed declaration is a
:class:`SignatureError`, a start-up error), :func:`check_inputs` (an infer
request's tensors against it: a 400 :class:`~deepaas.exceptions.TensorError`
saying what to change) and :func:`check_outputs` (what ``infer`` returned: an
:class:`InferOutputError`, a 500 naming the model). Batching calls together
is :mod:`deepaas.model.stacking`. Nothing here knows HTTP or processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from deepaas.exceptions import TensorError, echoed
from deepaas.oip.datatypes import DATATYPES, MAX_DIMS, to_array
from deepaas.options import MAX_BATCH_SIZE

_TOP_KEYS = ("inputs", "outputs", "max_batch_size")
_TENSOR_KEYS = ("name", "datatype", "shape")


class SignatureError(ValueError):
    """``get_infer_signature()`` returned something unusable; the message
    says what to fix (the wrapper reports it as the plugin's start-up error)."""


class InferOutputError(Exception):
    """What ``infer()`` returned does not match its signature: a 500 whose
    message names the model and says what to return instead."""


@dataclasses.dataclass(frozen=True)
class TensorSig:
    """One declared input or output. ``shape`` excludes the batch axis."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class InferSignature:
    """A plugin's declared inputs and outputs, in the order it gave them."""

    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    max_batch_size: int = 0

    @property
    def batched(self) -> bool:
        """Axis 0 of every tensor is the batch axis."""
        return self.max_batch_size > 0

    def full_shape(self, tensor: TensorSig) -> list[int]:
        """``tensor``'s shape as the OIP metadata shows it (and requests
        give it): the batch axis first, as -1, when there is one."""
        return [-1, *tensor.shape] if self.batched else list(tensor.shape)

    def metadata(self, tensors: Iterable[TensorSig]) -> list[dict[str, Any]]:
        """OIP model metadata ``inputs`` or ``outputs`` of ``tensors``."""
        return [
            {"name": t.name, "datatype": t.datatype, "shape": self.full_shape(t)}
            for t in tensors
        ]

    def describe(self, tensor: TensorSig) -> str:
        """``'x' (FP32 [-1, 3])``, for messages."""
        return f"'{tensor.name}' ({tensor.datatype} {self.full_shape(tensor)})"


# -- the declaration ------------------------------------------------------------


def parse_signature(value: object) -> InferSignature:
    """Check what ``get_infer_signature()`` returned and make it a
    :class:`InferSignature`; :class:`SignatureError` says what is wrong."""
    where = "get_infer_signature()"
    if not isinstance(value, Mapping):
        raise SignatureError(
            f"{where} must return a dict with 'inputs' and 'outputs' (lists of "
            f"{{'name', 'datatype', 'shape'}}), got {type(value).__name__}"
        )
    unknown = [key for key in value if key not in _TOP_KEYS]
    if unknown:
        raise SignatureError(
            f"{where} returned unknown key(s) {', '.join(map(repr, unknown))}; "
            f"its keys are {', '.join(_TOP_KEYS)}"
        )
    size = value.get("max_batch_size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise SignatureError(
            f"{where}: max_batch_size must be an integer >= 0 (0: no batch "
            f"axis), got {size!r}"
        )
    if size > MAX_BATCH_SIZE:
        # The cap of a plugin's ``batching`` and --max-batch-size: the queue
        # gathers rows from at most that many waiting calls.
        raise SignatureError(
            f"{where}: max_batch_size must be at most {MAX_BATCH_SIZE} (the "
            f"largest batch deepaas gathers), got {size!r}"
        )
    dims = MAX_DIMS - 1 if size else MAX_DIMS
    inputs = _tensors(f"{where} 'inputs'", value.get("inputs"), dims)
    outputs = _tensors(f"{where} 'outputs'", value.get("outputs"), dims)
    return InferSignature(inputs, outputs, size)


def _tensors(where: str, value: object, dims: int) -> tuple[TensorSig, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise SignatureError(
            f"{where} must be a non-empty list of {{'name': ..., 'datatype': "
            f"..., 'shape': [...]}}, got {_show(value)}"
        )
    tensors: list[TensorSig] = []
    for index, raw in enumerate(value):
        tensor = _tensor(f"{where}[{index}]", raw, dims)
        if any(t.name == tensor.name for t in tensors):
            raise SignatureError(f"{where}: name {tensor.name!r} is given twice")
        tensors.append(tensor)
    return tuple(tensors)


def _tensor(where: str, raw: object, dims: int) -> TensorSig:
    if not isinstance(raw, Mapping):
        raise SignatureError(
            f"{where} must be a dict with 'name', 'datatype' and 'shape', "
            f"got {_show(raw)}"
        )
    unknown = [key for key in raw if key not in _TENSOR_KEYS]
    if unknown:
        raise SignatureError(
            f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; a "
            f"tensor has {', '.join(_TENSOR_KEYS)}"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SignatureError(f"{where} needs a 'name', a non-empty string")
    where = f"{where} ({name!r})"
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        hint = ""
        if isinstance(datatype, str) and datatype.upper() in DATATYPES:
            hint = f" (upper case: {datatype.upper()!r})"
        raise SignatureError(
            f"{where}: datatype {datatype!r} is not an OIP datatype{hint}; use "
            f"one of {', '.join(DATATYPES)}"
        )
    shape = raw.get("shape")
    if not isinstance(shape, (list, tuple)) or any(
        isinstance(d, bool) or not isinstance(d, int) or (d < 1 and d != -1)
        for d in shape
    ):
        raise SignatureError(
            f"{where}: shape must be a list of axis sizes, each >= 1 or -1 (any "
            f"size), like [3, -1], got {shape!r}"
        )
    if len(shape) > dims:
        raise SignatureError(f"{where}: shape has {len(shape)} axes; at most {dims}")
    return TensorSig(name, datatype, tuple(shape))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- requests ---------------------------------------------------------------------


class Tensor(Protocol):
    """What :func:`check_inputs` reads of a decoded input
    (:class:`deepaas.oip.tensors.InputTensor`)."""

    @property
    def name(self) -> str: ...

    @property
    def datatype(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def data(self) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class CheckedInputs:
    """An infer request's inputs, checked: ``arrays`` by name, in the
    signature's order; ``rows`` their batch size (0 without a batch axis);
    ``group`` what calls must share to be batched together (their
    non-batch shapes)."""

    arrays: dict[str, np.ndarray]
    rows: int
    group: tuple[tuple[int, ...], ...]


def check_inputs(
    model: str, signature: InferSignature, tensors: Sequence[Tensor]
) -> CheckedInputs:
    """The arrays of ``tensors`` if they are exactly the model's inputs,
    of its datatypes and shapes; else a 400 saying what to change."""
    declared = {t.name: t for t in signature.inputs}
    given = {t.name: t for t in tensors}
    for name in given:
        if name not in declared:
            known = ", ".join(signature.describe(t) for t in signature.inputs)
            raise TensorError(
                f"model {model!r} has no input {echoed(name)}; its inputs: {known}"
            )
    missing = [t for t in signature.inputs if t.name not in given]
    if missing:
        raise TensorError(
            f"model {model!r} needs input(s) "
            + ", ".join(signature.describe(t) for t in missing)
        )
    arrays: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    for sig in signature.inputs:
        tensor = given[sig.name]
        where = f"input '{sig.name}'"
        if tensor.datatype != sig.datatype:
            raise TensorError(
                f"{where} is {sig.datatype}, not {tensor.datatype}; send it as "
                f"{sig.datatype}"
            )
        shape = tuple(tensor.shape)
        expected = signature.full_shape(sig)
        if not fits(shape, expected):
            raise TensorError(
                f"{where} must have shape {expected} (-1: any size), got "
                f"{list(shape)}"
                + (" (axis 0 is the batch)" if signature.batched else "")
            )
        if signature.batched:
            count = shape[0]
            if count < 1:
                raise TensorError(f"{where} has 0 rows; send at least one")
            if count > signature.max_batch_size:
                raise TensorError(
                    f"{where} has {count} rows (axis 0), more than the "
                    f"max_batch_size of model {model!r} ({signature.max_batch_size});"
                    f" send at most {signature.max_batch_size} rows per request"
                )
            rows[sig.name] = count
        arrays[sig.name] = tensor.data
    if len(set(rows.values())) > 1:
        counts = ", ".join(f"'{name}' {count}" for name, count in rows.items())
        raise TensorError(
            f"the inputs' batch sizes (axis 0) differ ({counts}); every input "
            "needs one row per item of the batch"
        )
    batch = next(iter(rows.values()), 0)
    group = tuple(tuple(a.shape[1:]) for a in arrays.values())
    return CheckedInputs(arrays, batch, group)


def fits(shape: Sequence[int], expected: Sequence[int]) -> bool:
    """``shape`` has ``expected``'s axes, each of its size or any (-1)."""
    return len(shape) == len(expected) and all(
        want in (-1, got) for got, want in zip(shape, expected, strict=True)
    )


# -- results ------------------------------------------------------------------------


def check_outputs(
    model: str, signature: InferSignature, value: object, rows: int
) -> dict[str, np.ndarray]:
    """What ``infer()`` returned, checked against the signature: a dict
    holding each declared output (nothing else), of its datatype and shape,
    with ``rows`` rows when the signature has a batch axis. Returns plain
    arrays (no subclass, BYTES elements ``bytes`` or ``str``): only what
    unpickles in the API process crosses the pipe."""
    who = f"model {model!r}: infer()"
    if not isinstance(value, Mapping):
        raise InferOutputError(
            f"{who} must return a dict of output name -> numpy array, got "
            f"{type(value).__name__}"
        )
    declared = [t.name for t in signature.outputs]
    extra = [str(key) for key in value if key not in declared]
    if extra:
        raise InferOutputError(
            f"{who} returned output(s) {', '.join(map(repr, extra))} that "
            f"get_infer_signature() does not declare (it declares: "
            f"{', '.join(declared)})"
        )
    outputs: dict[str, np.ndarray] = {}
    for sig in signature.outputs:
        if sig.name not in value:
            raise InferOutputError(
                f"{who} returned no output {signature.describe(sig)}; it returned: "
                f"{', '.join(map(str, value)) or 'nothing'}"
            )
        where = f"output '{sig.name}'"
        try:
            array, datatype = to_array(where, value[sig.name])
        except TensorError as exc:
            raise InferOutputError(f"{who}: {exc.message}") from None
        array = np.asarray(array)  # a subclass (np.matrix, memmap) as a plain array
        if datatype != sig.datatype:
            raise InferOutputError(
                f"{who} returned {where} as {datatype} (numpy {array.dtype}); its "
                f"signature says {sig.datatype}: convert it (e.g. "
                f"astype({DATATYPES[sig.datatype].name!r}))"
            )
        if datatype == "BYTES":
            _check_elements(who, where, array)
        expected = signature.full_shape(sig)
        if not fits(array.shape, expected):
            raise InferOutputError(
                f"{who} returned {where} of shape {list(array.shape)}; its "
                f"signature says {expected} (-1: any size)"
            )
        if signature.batched and array.shape[0] != rows:
            raise InferOutputError(
                f"{who} returned {array.shape[0]} rows in {where} for {rows} "
                "input rows; return one row per input row, in their order"
            )
        outputs[sig.name] = array
    return outputs


def _check_elements(who: str, where: str, array: np.ndarray) -> None:
    if array.dtype.kind in "SU":
        return
    for i, element in enumerate(array.ravel()):
        if not isinstance(element, (bytes, str)):
            raise InferOutputError(
                f"{who} returned {where} whose element {i} is "
                f"{type(element).__name__}; a BYTES output holds bytes or str"
            )
