"""How a described model file is served: names, batch axis, image, labels.

:func:`plan` puts together what the file says (:class:`Described`: its
tensors) and what its NAME.toml adds (:class:`ModelConfig`), checks that
they agree, and gives the :class:`Serving`: the tensor-native signature
(:mod:`deepaas.model.signature`) the engine batches by, the names the
clients use, and how the predict route turns uploads and scores into
arrays and labels. The API process plans from a probe's description, each
worker from the model it loaded: the same function, so they agree.

Batching: a model whose inputs' axis 0 is dynamic (-1) is batched, up to
:data:`DEFAULT_MAX_BATCH_SIZE` rows unless the config says otherwise;
axis 0 is then the batch axis, left out of the signature's shapes as
Triton does. A model with a fixed axis 0 is run as it is, one request per
call. Anything that cannot work is a :class:`ConfigFileError` whose one
line names the file and what to change.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

from deepaas.frameworks.base import TensorInfo
from deepaas.frameworks.images import IMAGE_DATATYPES, MAX_INPUT_PIXELS, ImageSpec
from deepaas.frameworks.model_config import ConfigFileError, ImageConfig, ModelConfig
from deepaas.frameworks.probe import Described

#: Rows per batch of a model with a dynamic batch axis, when its config does
#: not say. Measured on the MLP of benchmarks/batching.py as ONNX (one
#: thread, a 2-core VM): a row costs 2.85 ms alone, 0.54 ms in a batch of 8,
#: 0.29 in one of 16 and 0.33 in one of 32, and served at 32 connections
#: (OIP binary) the model answers 1,500 requests/s with batches of up to 8,
#: 2,350 with 16, 1,700 with 32: on a CPU the gain stops at about 16. A GPU
#: gains further, but a batch's memory (its inputs and activations) is 16
#: times one request's already: a config asks for more where it fits. Idle
#: latency does not depend on it (no delay: a lone request is a batch of 1).
DEFAULT_MAX_BATCH_SIZE = 16

#: The predict argument that chooses the answer's content type
#: (:mod:`deepaas.model.v2.wrapper`): no input may be served under it.
ACCEPT = "accept"

#: Suffixes of TorchScript archives (the kind that records no tensors).
TORCHSCRIPT = "torchscript"


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One input or output as served: ``shape`` without the batch axis
    when the model is batched; ``file_name`` is the model's own name."""

    name: str
    file_name: str
    datatype: str
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclasses.dataclass(frozen=True)
class Serving:
    """A repository model as it is served (see the module)."""

    framework: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    max_batch_size: int  # 0: no batch axis
    max_delay_ms: float | None
    image: ImageSpec | None
    labels: tuple[str, ...] | None
    top_k: int

    def signature(self) -> dict[str, Any]:
        """What ``get_infer_signature()`` returns."""
        return {
            "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
            "max_batch_size": self.max_batch_size,
        }


def plan(path: str, toml: str, config: ModelConfig, described: Described) -> Serving:
    """The :class:`Serving` of the model file ``path`` whose config is (or
    would be) ``toml``; see the module."""
    _check_declared(path, toml, described)
    size = config.max_batch_size
    dynamic = described.batch_axis_dynamic
    bound = described.max_rows if dynamic else None
    if size is None:
        size = DEFAULT_MAX_BATCH_SIZE if dynamic else 0
        if bound is not None:
            size = min(size, bound)
    elif bound is not None and size > bound:
        raise ConfigFileError(
            f"{toml}: max_batch_size = {size}, but {path} takes at most "
            f"{bound} rows (its batch axis is bounded): give at most {bound}"
        )
    elif size > 0 and not dynamic:
        fixed = next(t for t in described.inputs if not _dynamic_first(t))
        raise ConfigFileError(
            f"{toml}: max_batch_size = {size}, but input '{fixed.name}' of "
            f"{path} has a fixed first axis ({fixed.describe()}): it cannot be "
            "batched; leave max_batch_size out (or 0)"
        )
    if size > 0:
        for out in described.outputs:
            if not _dynamic_first(out):
                raise ConfigFileError(
                    f"{path}: output '{out.name}' ({out.describe()}) has no "
                    f"dynamic first axis, so results cannot be split per request; "
                    f"set max_batch_size = 0 in {toml} (no batching)"
                )
    if config.max_delay_ms is not None and size == 0:
        raise ConfigFileError(
            f"{toml}: max_delay_ms is for a batched model; this one has no "
            "batch axis (max_batch_size 0): leave it out"
        )
    inputs = _served(toml, "inputs", described.inputs, config.input_names, size)
    outputs = _served(toml, "outputs", described.outputs, config.output_names, size)
    for tensor in inputs:
        if tensor.name == ACCEPT:
            raise ConfigFileError(
                f"{toml}: the model has an input named '{ACCEPT}', which the "
                "DEEPaaS predict route takes as the answer's content type: "
                "rename it with inputs = [...]"
            )
    labels = _labels(toml, config, outputs, size)
    image = _image(toml, config.image, inputs, size) if config.image else None
    return Serving(
        framework=described.framework,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=size,
        max_delay_ms=config.max_delay_ms,
        image=image,
        labels=labels,
        top_k=config.top_k,
    )


def _dynamic_first(tensor: TensorInfo) -> bool:
    return bool(tensor.shape) and tensor.shape is not None and tensor.shape[0] == -1


def _check_declared(path: str, toml: str, described: Described) -> None:
    """Every tensor has a datatype and shape (TorchScript: from the config)."""
    unknown = [
        t
        for t in (*described.inputs, *described.outputs)
        if t.datatype is None or t.shape is None
    ]
    if described.framework != TORCHSCRIPT:
        for key, tensors in (
            ("inputs", described.inputs),
            ("outputs", described.outputs),
        ):
            if not tensors:
                raise ConfigFileError(
                    f"{path}: the model has no {key}; deepaas serves a model "
                    "that takes at least one tensor and returns at least one: "
                    f"export it with its {key}"
                )
    if not described.outputs or (unknown and described.framework == TORCHSCRIPT):
        raise ConfigFileError(
            f"{path}: a TorchScript archive records no datatypes or shapes; declare "
            f'them in {toml}: inputs = [{{name = "x", datatype = "FP32", shape = '
            f'[-1, 4]}}] and outputs = [{{name = "y", datatype = "FP32", shape = '
            "[-1, 3]}] (-1: any size; see docs/model-files.md), or export it with "
            "torch.export (.pt2), which records them"
        )
    if unknown:
        tensor = unknown[0]
        kind = "input" if tensor in described.inputs else "output"
        raise ConfigFileError(
            f"{path}: {kind} '{tensor.name}' has no known datatype or rank in "
            f"the file; export the model with the rank of each input and output "
            "(an axis of any size may stay unknown: None, -1)"
        )


def _served(
    toml: str,
    key: str,
    tensors: Sequence[TensorInfo],
    names: Sequence[str] | None,
    size: int,
) -> tuple[Tensor, ...]:
    if names is not None and len(names) != len(tensors):
        own = ", ".join(f"'{t.name}'" for t in tensors)
        raise ConfigFileError(
            f"{toml}: {key} gives {len(names)} name(s), but the model has "
            f"{len(tensors)} ({own}): give one name per tensor, in this order"
        )
    served = []
    for index, tensor in enumerate(tensors):
        assert tensor.shape is not None and tensor.datatype is not None
        shape = tensor.shape[1:] if size > 0 else tensor.shape
        name = names[index] if names is not None else tensor.name
        served.append(Tensor(name, tensor.name, tensor.datatype, tuple(shape)))
    return tuple(served)


def _labels(
    toml: str, config: ModelConfig, outputs: Sequence[Tensor], size: int
) -> tuple[str, ...] | None:
    """The labels file's lines, checked against the first output."""
    if config.labels is None:
        return None
    if os.path.exists(config.labels) and not (
        os.path.isfile(config.labels) or os.path.isdir(config.labels)
    ):  # a FIFO's read would block start-up for good
        raise ConfigFileError(
            f"{toml}: labels file {config.labels} is not a regular file (a FIFO "
            "or device)"
        )
    try:
        # utf-8-sig: a byte order mark is not part of the first label.
        with open(config.labels, encoding="utf-8-sig") as fh:
            lines = [line.rstrip("\r\n") for line in fh]
    except OSError as exc:
        raise ConfigFileError(
            f"{toml}: labels file {config.labels} cannot be read ({exc.strerror})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigFileError(
            f"{toml}: labels file {config.labels} is not UTF-8 text"
        ) from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ConfigFileError(f"{toml}: labels file {config.labels} is empty")
    first = outputs[0]
    if first.datatype == "BYTES":
        raise ConfigFileError(
            f"{toml}: labels name the top scores of the model's first output, "
            f"but output '{first.name}' is BYTES, not numbers: leave labels out"
        )
    if any(out.name == "labels" for out in outputs):
        raise ConfigFileError(
            f"{toml}: the model has an output named 'labels', where the predict "
            "answer puts the top labels: rename it with outputs = [...]"
        )
    count = 1
    for axis in first.shape:
        count = -1 if axis == -1 or count == -1 else count * axis
    if count not in (-1, len(lines)):
        raise ConfigFileError(
            f"{toml}: labels file {config.labels} has {len(lines)} lines, but "
            f"output '{first.name}' has {count} scores per answer "
            f"({first.datatype} {list(first.shape)}): one label per score"
        )
    return tuple(lines)


def _image(
    toml: str, image: ImageConfig, inputs: Sequence[Tensor], size: int
) -> ImageSpec:
    names = [t.name for t in inputs]
    if image.input is None and len(inputs) != 1:
        raise ConfigFileError(
            f"{toml}: image.input must say which input is the image "
            f"(one of {', '.join(names)})"
        )
    tensor = next((t for t in inputs if t.name == (image.input or names[0])), None)
    if tensor is None:
        raise ConfigFileError(
            f"{toml}: image.input {image.input!r} is not an input of the model "
            f"(its inputs: {', '.join(names)})"
        )
    if importlib.util.find_spec("PIL") is None:
        raise ConfigFileError(
            f"{toml}: image needs Pillow, which is not installed; pip install "
            "'deepaas[image]'"
        )
    where = f"{toml}: image input '{tensor.name}'"
    if tensor.datatype not in IMAGE_DATATYPES:
        raise ConfigFileError(
            f"{where} is {tensor.datatype}; an image input is one of "
            f"{', '.join(IMAGE_DATATYPES)}"
        )
    if tensor.datatype == "UINT8" and (image.mean or image.std):
        raise ConfigFileError(
            f"{where} is UINT8 (pixels 0-255): mean and std are for float inputs"
        )
    shape = list(tensor.shape)
    leading = 0
    while len(shape) > 3 and shape[0] in (1, -1):
        shape.pop(0)
        leading += 1
    if len(shape) != 3:
        raise ConfigFileError(
            f"{where} has shape {list(tensor.shape)}; an image is 3 axes "
            f"(channels, height, width for NCHW; height, width, channels for NHWC)"
        )
    channels_first = image.layout == "NCHW"
    channels = shape[0] if channels_first else shape[2]
    height, width = shape[1:] if channels_first else shape[:2]
    if channels not in (1, 3, -1):
        raise ConfigFileError(
            f"{where} has {channels} channels on the {image.layout} channel axis "
            f"(shape {list(tensor.shape)}); an image has 1 or 3: is layout right?"
        )
    channels = 3 if channels == -1 else channels
    if image.size is not None:
        for axis, fixed, given in (
            ("height", height, image.size[0]),
            ("width", width, image.size[1]),
        ):
            if fixed != -1 and fixed != given:
                raise ConfigFileError(
                    f"{toml}: image.size gives {axis} {given}, but input "
                    f"'{tensor.name}' takes {fixed} ({list(tensor.shape)})"
                )
        height, width = image.size
    elif height == -1 or width == -1:
        raise ConfigFileError(
            f"{toml}: image.size = [height, width] is needed: input "
            f"'{tensor.name}' takes any size ({list(tensor.shape)})"
        )
    if height * width > MAX_INPUT_PIXELS:  # the input's own fixed axes
        raise ConfigFileError(
            f"{where} takes {height}x{width} pixels ({list(tensor.shape)}), more "
            f"than the {MAX_INPUT_PIXELS} (4096 x 4096) deepaas makes of a "
            "picture: serve it from a plugin, or leave image out (the input "
            "then takes a list)"
        )
    for key, values in (("mean", image.mean), ("std", image.std)):
        if values is not None and len(values) != channels:
            raise ConfigFileError(
                f"{toml}: image.{key} has {len(values)} value(s); the image has "
                f"{channels} channel(s)"
            )
    return ImageSpec(
        input=tensor.name,
        datatype=tensor.datatype,
        height=height,
        width=width,
        channels=channels,
        layout=image.layout,
        mean=image.mean,
        std=image.std,
        leading=leading,
    )
