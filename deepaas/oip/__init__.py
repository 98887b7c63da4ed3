"""The Open Inference Protocol (OIP, "KServe v2"): its tensor codec.

OIP is the inference API that Triton, KServe, MLServer and Seldon speak and
that ``tritonclient`` and KServe's clients call: ``POST
/v2/models/{m}/infer`` with a JSON object of named, typed, shaped input
tensors, answered by one of output tensors. References: KServe's "Open
Inference Protocol (V2)" REST spec, and Triton's binary tensor data
extension (``docs/protocol/extension_binary_data.md`` in
triton-inference-server/server), which lets tensors follow the JSON header
as raw little-endian bytes.

Implemented here (no HTTP: the routes live in :mod:`deepaas.api`):

- :mod:`deepaas.oip.datatypes`: the datatypes BOOL, UINT8-64, INT8-64,
  FP16/32/64 and BYTES <-> numpy dtypes (:data:`DATATYPES`), and one
  tensor's values in JSON (flat or nested row-major ``data``).
- :mod:`deepaas.oip.binary`: one tensor's values as binary tensor data
  (FP16 and length-prefixed BYTES included).
- :mod:`deepaas.oip.tensors`: :func:`decode_request` (body and
  ``Inference-Header-Content-Length`` -> :class:`InferRequest` of numpy
  arrays; binary tensors are views over the body, never Python lists).
- :mod:`deepaas.oip.responses`: :func:`encode_response` (arrays -> body and
  headers, JSON or binary per output as ``binary_data`` /
  ``binary_data_output`` ask) and :func:`encode_error` (``{"error": ...}``).

Every malformed request raises :class:`~deepaas.exceptions.TensorError`
(status 400) saying what to change.

Choices where the spec is silent: NaN and ±Infinity in JSON are the
literals ``NaN``, ``Infinity``, ``-Infinity``, read and written, as Triton
does (strict JSON parsers refuse them; ask for binary data to avoid them).
JSON BYTES are UTF-8 strings; there is no base64.

Not implemented: BF16 (a Triton datatype, not in the KServe spec), the
shared-memory extensions (system and CUDA: the client must share the
server's host or GPU), the classification extension, gRPC, and
compressed bodies (``Content-Encoding`` is for the HTTP layer). The first
three are refused with a message naming the parameter.
"""

from __future__ import annotations

from deepaas.exceptions import TensorError
from deepaas.oip.datatypes import DATATYPES, datatype_of
from deepaas.oip.responses import encode_error, encode_response
from deepaas.oip.tensors import (
    HEADER_LENGTH,
    InferRequest,
    InputTensor,
    RequestedOutput,
    decode_request,
    parse_header_length,
)

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "InferRequest",
    "InputTensor",
    "RequestedOutput",
    "TensorError",
    "datatype_of",
    "decode_request",
    "encode_error",
    "encode_response",
    "parse_header_length",
]
