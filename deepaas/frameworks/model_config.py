"""A repository model's optional ``NAME.toml``: what its file cannot say.

``deepaas-run --model-repository DIR`` serves ``DIR/NAME.onnx`` (or any
model file, :mod:`deepaas.frameworks.repository`) as model ``NAME``; a
``DIR/NAME.toml`` beside it may add a description, names for its tensors,
batching, labels, an image input, and where it runs. Every key is optional
and documented in docs/model-files.md; an unknown key, or a value of the
wrong type, stops start-up with one line naming the file and the key, so a
typo never silently does nothing.

Here the file is read and each value checked on its own
(:func:`read_config`). What depends on the model itself (does the input
named by ``image.input`` exist, does a batch axis allow ``max_batch_size``)
is checked once the model is described (:mod:`deepaas.frameworks.served`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from typing import Any

from deepaas.frameworks.images import MAX_INPUT_PIXELS
from deepaas.options import MAX_BATCH_SIZE, MAX_PROCESSES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (the tomli dependency)
    import tomli as tomllib

#: The most CPU threads ``threads`` gives one worker: a typo such as
#: ``threads = 100000`` would have each worker start that many threads.
MAX_THREADS = 1024

#: The keys of NAME.toml and what each takes (for the unknown-key message).
KEYS = {
    "description": "a string",
    "inputs": "a list of names, or (TorchScript) of {name, datatype, shape}",
    "outputs": "a list of names, or (TorchScript) of {name, datatype, shape}",
    "max_batch_size": f"an integer from 0 to {MAX_BATCH_SIZE}",
    "max_delay_ms": "a number >= 0",
    "labels": "the path of a text file, one label per line",
    "top_k": "an integer >= 1",
    "image": "a table: input, size, mean, std, layout",
    "threads": f"an integer from 1 to {MAX_THREADS}",
    "workers": f"an integer from 1 to {MAX_PROCESSES}",
    "devices": "a string: cpu, or GPU indices or UUIDs",
}
IMAGE_KEYS = {
    "input": "the name of the image input",
    "size": "[height, width], at most 4096 x 4096 pixels",
    "mean": "a number per channel",
    "std": "a number per channel",
    "layout": "NCHW or NHWC",
}
LAYOUTS = ("NCHW", "NHWC")
TOP_K = 5  # labels shown when top_k is not given


class ConfigFileError(ValueError):
    """A NAME.toml that cannot be used; the message names the file and key."""


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """``image = {...}``: an input that takes an uploaded picture."""

    input: str | None = None  # None: the model's only input
    size: tuple[int, int] | None = None  # (height, width); None: the input's
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What NAME.toml says (all None when there is none)."""

    path: str | None = None  # the toml file, for messages
    description: str | None = None
    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    #: ``{"inputs": [...], "outputs": [...]}`` with datatypes and shapes, for
    #: ``frameworks.load(signature=)`` (TorchScript archives).
    signature: dict[str, Any] | None = None
    max_batch_size: int | None = None
    max_delay_ms: float | None = None
    labels: str | None = None  # an absolute path
    top_k: int = TOP_K
    image: ImageConfig | None = None
    threads: int | None = None
    workers: int | None = None
    devices: str | None = None

    def where(self, key: str) -> str:
        """``DIR/NAME.toml: key`` for messages."""
        return f"{self.path}: {key}" if self.path else key


def config_path(model_path: str, name: str) -> str:
    """Where the model ``name`` at ``model_path`` has its config: beside it."""
    return os.path.join(os.path.dirname(os.path.abspath(model_path)), name + ".toml")


def read_config(path: str) -> ModelConfig:
    """``path`` read and checked key by key; an empty config if it does not
    exist. :class:`ConfigFileError` says what is wrong."""
    if not os.path.exists(path):
        return ModelConfig()
    if not os.path.isfile(path) and not os.path.isdir(path):
        # A FIFO's read would block start-up for good.
        raise ConfigFileError(f"{path}: is not a regular file (a FIFO or device)")
    try:
        # utf-8-sig: a file saved with a byte order mark (Windows editors)
        # is still TOML; tomllib refuses the mark at line 1, column 1.
        with open(path, encoding="utf-8-sig") as fh:
            data = tomllib.loads(fh.read())
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: is not valid TOML ({exc})") from None
    return parse_config(path, data)


def parse_config(path: str, data: Mapping[str, Any]) -> ModelConfig:
    """The checked :class:`ModelConfig` of TOML ``data`` read from ``path``."""
    unknown = [key for key in data if key not in KEYS]
    if unknown:
        raise ConfigFileError(
            f"{path}: unknown key {unknown[0]!r}; the keys are "
            f"{', '.join(KEYS)} (docs/model-files.md)"
        )

    def fail(key: str, text: str) -> ConfigFileError:
        return ConfigFileError(f"{path}: {key} {text}")

    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise fail("description", "must be a string")
    input_names, input_sig = _tensors(fail, "inputs", data.get("inputs"))
    output_names, output_sig = _tensors(fail, "outputs", data.get("outputs"))
    signature = None
    if input_sig is not None or output_sig is not None:
        if input_sig is None or output_sig is None:
            raise fail(
                "inputs" if input_sig is None else "outputs",
                "must be declared with datatypes and shapes too, as the other "
                "one is ({name, datatype, shape} each)",
            )
        signature = {"inputs": input_sig, "outputs": output_sig}
    labels = data.get("labels")
    if labels is not None:
        if not isinstance(labels, str) or not labels:
            raise fail("labels", "must be the path of a text file (one label a line)")
        labels = os.path.join(os.path.dirname(os.path.abspath(path)), labels)
    devices = data.get("devices")
    if devices is not None and (not isinstance(devices, str) or not devices.strip()):
        raise fail("devices", 'must be a string: "cpu", or GPU indices like "0,1"')
    return ModelConfig(
        path=path,
        description=description,
        input_names=input_names,
        output_names=output_names,
        signature=signature,
        max_batch_size=_integer(fail, data, "max_batch_size", 0, MAX_BATCH_SIZE),
        max_delay_ms=_number(fail, data, "max_delay_ms"),
        labels=labels,
        top_k=_integer(fail, data, "top_k", 1) or TOP_K,
        image=_image(fail, data.get("image")),
        threads=_integer(fail, data, "threads", 1, MAX_THREADS),
        # As --workers: a typo such as 1000000 would start processes until
        # the kernel killed the server for want of memory.
        workers=_integer(fail, data, "workers", 1, MAX_PROCESSES),
        devices=devices.strip() if devices is not None else None,
    )


def _integer(
    fail: Any, data: Mapping[str, Any], key: str, least: int, most: int | None = None
) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise fail(key, f"must be an integer >= {least}, got {value!r}")
    if most is not None and value > most:
        raise fail(key, f"must be an integer from {least} to {most}, got {value!r}")
    return value


def _number(fail: Any, data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise fail(key, f"must be a number >= 0, got {value!r}")
    return float(value)


def _tensors(
    fail: Any, key: str, value: Any
) -> tuple[tuple[str, ...] | None, list[dict[str, Any]] | None]:
    """``inputs``/``outputs``: names (strings), or tables with a datatype
    and shape each (checked in full by ``frameworks.load``)."""
    if value is None:
        return None, None
    if not isinstance(value, list) or not value:
        raise fail(key, f"must be a non-empty list ({KEYS[key]})")
    if all(isinstance(item, str) for item in value):
        if any(not item for item in value) or len(set(value)) != len(value):
            raise fail(key, f"must be distinct, non-empty names, got {value!r}")
        return tuple(value), None
    if all(isinstance(item, dict) for item in value):
        for index, item in enumerate(value):
            unknown = set(item) - {"name", "datatype", "shape"}
            if unknown or not {"name", "datatype", "shape"} <= set(item):
                raise fail(
                    f"{key}[{index}]",
                    "must have exactly name, datatype and shape, e.g. "
                    '{name = "x", datatype = "FP32", shape = [-1, 4]}',
                )
        return None, [dict(item) for item in value]
    raise fail(key, f"must be {KEYS[key]}, not a mix")


def _image(fail: Any, value: Any) -> ImageConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail("image", f"must be a table ({KEYS['image']})")
    unknown = [key for key in value if key not in IMAGE_KEYS]
    if unknown:
        raise fail(
            "image",
            f"has unknown key {unknown[0]!r}; its keys are {', '.join(IMAGE_KEYS)}",
        )
    name = value.get("input")
    if name is not None and (not isinstance(name, str) or not name):
        raise fail("image.input", "must be the name of an input")
    size = value.get("size")
    if size is not None and not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size)
        and size[0] * size[1] <= MAX_INPUT_PIXELS
    ):
        raise fail(
            "image.size",
            f"must be [height, width] in pixels, at most {MAX_INPUT_PIXELS} "
            f"pixels (4096 x 4096), got {size!r}",
        )
    stats = {}
    for key in ("mean", "std"):
        numbers = value.get(key)
        if numbers is not None and not (
            isinstance(numbers, list)
            and numbers
            and all(
                isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers
            )
        ):
            raise fail(f"image.{key}", f"must be a list of numbers, got {numbers!r}")
        if key == "std" and numbers is not None and any(n == 0 for n in numbers):
            raise fail("image.std", "may not hold 0 (pixels are divided by it)")
        stats[key] = tuple(float(n) for n in numbers) if numbers is not None else None
    layout = value.get("layout", "NCHW")
    if layout not in LAYOUTS:
        raise fail("image.layout", f"must be {' or '.join(LAYOUTS)}, got {layout!r}")
    return ImageConfig(
        input=name,
        size=(size[0], size[1]) if size is not None else None,
        mean=stats["mean"],
        std=stats["std"],
        layout=layout,
    )
