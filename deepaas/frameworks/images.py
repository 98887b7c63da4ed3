"""An uploaded picture as a repository model's image input.

A model declared with ``image = {...}`` in its NAME.toml takes a file
upload on the DEEPaaS predict route for that input. In the worker, the file
is decoded with Pillow (imported here only), turned to RGB (or grey for one
channel), resized to the model's size when it is another, scaled to [0, 1]
and normalised with ``mean``/``std`` for a float input (raw 0-255 pixels
for a UINT8 one), and laid out as the input wants (channels first, NCHW,
or last, NHWC). A file that is no picture Pillow reads is a 422 naming the
argument, never a 500; a picture of more than :data:`MAX_UPLOAD_PIXELS` is
a 413, refused from its header before it is decoded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from deepaas.exceptions import DeepaasError
from deepaas.oip.datatypes import DATATYPES

#: Input datatypes an image can be.
IMAGE_DATATYPES = ("UINT8", "FP16", "FP32", "FP64")

#: The most pixels (height x width) an image input may take, whether
#: ``image.size`` or the input's fixed axes say it: 4096 x 4096. Each
#: request's picture becomes an array of that size (FP32 RGB: 192 MiB at
#: the bound), and a batch holds ``max_batch_size`` of them: a typo such as
#: ``size = [224000, 224000]`` would have every request allocate 600 GB.
#: Vision models take far less (224 to 1024 a side).
MAX_INPUT_PIXELS = 4096 * 4096

#: The most pixels of an uploaded picture that a worker decodes: Pillow's
#: own ``MAX_IMAGE_PIXELS`` default (89.5 million, a 256 MiB RGB picture),
#: past which Pillow only warns of a decompression bomb (and refuses at
#: twice as many). A small PNG can say 40000 x 40000 pixels: decoding it
#: would take 4.5 GB before the resize. Phone photos are 12 to 50 million.
MAX_UPLOAD_PIXELS = 1024 * 1024 * 1024 // 4 // 3


class ImageInputError(DeepaasError):
    """An upload that is not a picture (422), or one too large to decode
    (413): the message names the argument."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(status, message)


def _too_large(spec: ImageSpec, size: str) -> ImageInputError:
    return ImageInputError(
        f"argument '{spec.input}': the picture is {size}, more than the "
        f"{MAX_UPLOAD_PIXELS} pixels deepaas decodes; send a smaller picture "
        f"(it is resized to {spec.width}x{spec.height} anyway)",
        413,
    )


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """How to make the array of one image input (checked at start-up)."""

    input: str
    datatype: str  # one of IMAGE_DATATYPES
    height: int
    width: int
    channels: int  # 1 (grey) or 3 (RGB)
    layout: str  # NCHW (channels first) or NHWC (channels last)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    leading: int = 0  # axes of size 1 before the image's (an unbatched model)

    def describe(self) -> str:
        """For the argument's description."""
        text = (
            f"An image file (JPEG, PNG, ... anything Pillow reads), resized to "
            f"{self.width}x{self.height} pixels"
        )
        if self.channels == 1:
            text += ", in grey"
        return text + f"; the input '{self.input}' of the model."


def decode(path: str, spec: ImageSpec) -> np.ndarray:
    """The array of the image in file ``path`` for ``spec``'s input."""
    try:
        from PIL import Image, ImageOps
    except ImportError:  # checked at start-up; a worker's environment changed
        raise DeepaasError(
            500, "Pillow is not installed: pip install 'deepaas[image]'"
        ) from None
    try:
        with Image.open(path) as opened:  # reads the header only
            width, height = opened.size
            if width * height > MAX_UPLOAD_PIXELS:  # before it is decoded
                raise _too_large(spec, f"{width}x{height} pixels")
            image: Any = ImageOps.exif_transpose(opened)
            image = image.convert("RGB" if spec.channels == 3 else "L")
            if image.size != (spec.width, spec.height):
                image = image.resize(
                    (spec.width, spec.height), Image.Resampling.BILINEAR
                )
            pixels = np.asarray(image)
    except (MemoryError, ImageInputError):
        raise
    except Image.DecompressionBombError:  # past twice Pillow's own bound
        raise _too_large(spec, "too large for Pillow") from None
    except Exception as exc:  # Pillow's errors for what is not an image
        # Pillow's messages name the file: a temporary one, meaningless to
        # the client (and none of its business).
        text = str(exc).replace(f"'{path}'", "").replace(path, "the file")
        reason = " ".join(text.split())[:200] or type(exc).__name__
        raise ImageInputError(
            f"argument '{spec.input}': the upload is not an image Pillow can "
            f"read ({reason}); send a JPEG, PNG or other image file"
        ) from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return arrange(pixels, spec)


def arrange(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """``pixels`` (height, width, channels; uint8) as the input's array."""
    dtype = DATATYPES[spec.datatype]
    if spec.datatype == "UINT8":
        array = pixels
    else:
        array = pixels.astype(np.float32) / np.float32(255)
        if spec.mean is not None:
            array = array - np.asarray(spec.mean, dtype=np.float32)
        if spec.std is not None:
            array = array / np.asarray(spec.std, dtype=np.float32)
    if spec.layout == "NCHW":
        array = array.transpose(2, 0, 1)
    array = np.ascontiguousarray(array, dtype=dtype)
    return array.reshape((1,) * spec.leading + array.shape)
