"""Sample tensors of every OIP datatype, and tritonclient doing the client's
half: building request bodies and reading response bodies exactly as
``tritonclient.http.InferenceServerClient.infer`` does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tritonclient.http as triton

from deepaas.oip import DATATYPES, HEADER_LENGTH

INT_TYPES = ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
FP_TYPES = ["FP16", "FP32", "FP64"]
ALL_TYPES = ["BOOL", *INT_TYPES, *FP_TYPES, "BYTES"]


def sample(datatype: str, shape: Sequence[int] = (2, 3)) -> np.ndarray:
    """An array of ``shape`` with the datatype's edge values in it."""
    count = int(np.prod(shape))
    if datatype == "BOOL":
        values: Any = [i % 3 == 0 for i in range(count)]
        return np.array(values, dtype=bool).reshape(shape)
    if datatype == "BYTES":
        texts = ["", "a", "héllo", "\x00nul", "日本", "z" * 300]
        data = np.empty(count, dtype=object)
        data[:] = [texts[i % len(texts)].encode() for i in range(count)]
        return data.reshape(shape)
    dtype = DATATYPES[datatype]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        edges: list[float] = [info.min, info.max, 0, 1, info.max - 1, info.min + 1]
    else:
        info_f = np.finfo(dtype)
        edges = [float(info_f.max), float(info_f.min), 0.1, -2.5, 1e-3]
        edges.append(float(info_f.tiny))
    return np.array([edges[i % len(edges)] for i in range(count)], dtype=dtype).reshape(
        shape
    )


def request_body(
    arrays: dict[str, np.ndarray],
    binary: bool,
    outputs: Sequence[triton.InferRequestedOutput] | None = None,
    request_id: str = "",
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The body and ``Inference-Header-Content-Length`` tritonclient sends."""
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else _triton_type(array)
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, header_length = triton.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id=request_id, parameters=parameters
    )
    return body, header_length


def _triton_type(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(array.dtype))


def parse(body: bytes, headers: dict[str, str]) -> triton.InferResult:
    """Our response read by tritonclient, as ``infer()`` reads it."""
    length = headers.get(HEADER_LENGTH)
    return triton.InferenceServerClient.parse_response_body(
        body, header_length=None if length is None else int(length)
    )


def same(expected: np.ndarray, got: np.ndarray) -> bool:
    """Equal in shape, dtype kind and values (NaN equal to NaN)."""
    if expected.shape != got.shape:
        return False
    if expected.dtype == object or got.dtype == object:
        return [_as_bytes(v) for v in expected.ravel()] == [
            _as_bytes(v) for v in got.ravel()
        ]
    if expected.dtype != got.dtype:
        return False
    return bool(np.array_equal(expected, got, equal_nan=expected.dtype.kind == "f"))


def _as_bytes(value: object) -> bytes:
    """A BYTES element as bytes (tritonclient reads JSON ones as str)."""
    if isinstance(value, str):
        return value.encode()
    assert isinstance(value, bytes)
    return value
