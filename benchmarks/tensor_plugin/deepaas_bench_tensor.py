"""DEEPaaS model plugin taking a tensor, for the OIP infer benchmark.

On the OIP infer route it is tensor-native: ``get_infer_signature()``
declares one FP32 input ``image`` of shape ``[-1, 3, 224, 224]`` (axis 0:
the batch, up to 8 rows) and one FP64 output ``mean`` (one per row), and
``infer(image)`` gets the numpy array itself. On the DEEPaaS predict route,
``predict`` takes the same tensor as the raw (little-endian, row-major)
bytes of the file argument ``image``, or as a flat list of floats in
``pixels``, and answers its mean and element count. The work is a
``numpy`` mean either way, so the throughput measured is what the server
costs to carry the tensor to the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from marshmallow import ValidationError, fields

__version__ = "0.2.0"

#: The tensor's shape, and its size in bytes as float32.
SHAPE = (1, 3, 224, 224)
NBYTES = int(np.prod(SHAPE)) * 4
#: Rows of concurrent infer requests the server may stack into one call.
MAX_BATCH_SIZE = 8


def get_metadata() -> dict[str, Any]:
    """Return the model's metadata."""
    return {
        "name": "bench_tensor",
        "version": __version__,
        "summary": "Mean of a 1x3x224x224 float32 tensor (benchmark model).",
        "author": "DEEPaaS developers",
        "license": "Apache-2.0",
    }


def get_infer_signature() -> dict[str, Any]:
    """The OIP inputs and outputs: shapes without the batch axis (axis 0)."""
    return {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": list(SHAPE[1:])}],
        "outputs": [{"name": "mean", "datatype": "FP64", "shape": [1]}],
        "max_batch_size": MAX_BATCH_SIZE,
    }


def infer(image: np.ndarray) -> dict[str, np.ndarray]:
    """The mean of each row of ``image`` (N x 3 x 224 x 224 float32)."""
    means = image.reshape(len(image), -1).mean(axis=1, dtype=np.float64)
    return {"mean": means.reshape(-1, 1)}


def get_predict_args() -> dict[str, fields.Field]:
    """Return the arguments accepted by ``predict``."""
    return {
        "image": fields.Raw(
            required=False,
            metadata={
                "type": "file",
                "location": "form",
                "description": "The tensor's raw float32 bytes (row-major).",
            },
        ),
        "pixels": fields.List(
            fields.Float(),
            required=False,
            metadata={"description": "The tensor as a flat list of floats."},
        ),
    }


def predict(**kwargs: Any) -> dict[str, float | int]:
    """Return ``{"mean": ..., "size": ...}`` of the tensor given."""
    image = kwargs.get("image")
    if image is not None:
        with open(image.filename, "rb") as fh:
            raw = fh.read()
        if len(raw) != NBYTES:
            raise ValidationError(f"image must be {NBYTES} bytes, not {len(raw)}")
        array = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    elif kwargs.get("pixels") is not None:
        array = np.asarray(kwargs["pixels"], dtype=np.float64)
    else:
        raise ValidationError("give image or pixels")
    return {"mean": float(array.mean()), "size": int(array.size)}
