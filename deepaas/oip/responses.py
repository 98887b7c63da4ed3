"""Arrays -> infer response bodies, and OIP error bodies.

Sources: KServe's Open Inference Protocol (V2) REST spec, "Inference
Response JSON Object" and "Inference Response Error JSON Object"; Triton's
binary tensor data extension (``docs/protocol/extension_binary_data.md`` in
triton-inference-server/server): the JSON header, whose length the
``Inference-Header-Content-Length`` header gives, then each binary output's
bytes in the order the outputs appear in it.

Each binary output is copied once into the returned body; JSON outputs are
flat row-major ``data``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from deepaas.oip.binary import to_binary
from deepaas.oip.datatypes import to_array, to_json
from deepaas.oip.tensors import HEADER_LENGTH


def encode_response(
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: Mapping[str, Any],
    binary: Callable[[str], bool] | Collection[str] = frozenset(),
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """An infer response body and its headers.

    ``outputs`` maps each output's name to an array, a (nested) list or a
    scalar (see :func:`deepaas.oip.datatypes.to_array` for what becomes
    which datatype). Outputs for which ``binary`` holds (a predicate such as
    :meth:`InferRequest.wants_binary`, or a set of names) are sent as binary
    data; the others as flat row-major JSON ``data``. The headers are
    ``Content-Type: application/json`` for a JSON-only body, else
    ``application/octet-stream`` and ``Inference-Header-Content-Length``.
    Raises :class:`TensorError`: 500 for a value no datatype holds, 400 for
    non-UTF-8 BYTES the client asked as JSON.
    """
    wants = binary if callable(binary) else binary.__contains__
    documents: list[dict[str, Any]] = []
    buffers: list[memoryview | bytes] = []
    for name, value in outputs.items():
        where = f"output '{name}'"
        array, datatype = to_array(where, value)
        document: dict[str, Any] = {
            "name": name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        if wants(name):
            buffer = to_binary(where, datatype, array)
            document["parameters"] = {"binary_data_size": len(buffer)}
            buffers.append(buffer)
        else:
            document["data"] = to_json(where, datatype, array)
        documents.append(document)
    response: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        response["model_version"] = model_version
    if request_id is not None:
        response["id"] = request_id
    if parameters:
        response["parameters"] = dict(parameters)
    response["outputs"] = documents
    header = json.dumps(response, separators=(",", ":")).encode()
    if not buffers:
        return header, {"Content-Type": "application/json"}
    headers = {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }
    return b"".join([header, *buffers]), headers


def encode_error(message: str) -> bytes:
    """An OIP error body: ``{"error": message}``."""
    return json.dumps({"error": message}).encode()
