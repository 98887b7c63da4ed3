"""One OIP infer request, from its body to its response.

The body is read within the limits and decoded (:mod:`deepaas.oip`; big
ones off the event loop), then run one of two ways:

- **tensor-native** (the plugin declares ``get_infer_signature()`` and
  ``infer(**arrays)``, :mod:`deepaas.model.signature`): the inputs are
  checked against the signature (a 400 says what to change) and their
  arrays go to a worker as they are, with no temporary file and no Python
  list (:meth:`~deepaas.engine.runtime.ModelRuntime.infer`; a binary tensor
  is a view of the body, pickled as raw bytes). The worker's output arrays
  come back the same way and are encoded here.
- **mapped** (any other DEEPaaS plugin): the inputs become the plugin's
  predict arguments (:mod:`deepaas.api.oip_mapping`), loaded with the same
  schema as the DEEPaaS predict route, and run by ``runtime.predict``
  exactly as that route does; a 422 of that route is a 400 here, with the
  same message. The result maps to outputs.

Both go through the model's queue, batching, deadlines, ``--max-queue``
and metrics (under ``(model, "infer")``). The response is JSON or binary,
output by output, as the request asks; a big one is encoded off the loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import marshmallow
from aiohttp import web

from deepaas.api import oip_mapping as mapping
from deepaas.api.args import OFFLOAD_LOAD_SIZE
from deepaas.api.body import OFFLOAD_PARSE_SIZE, BodyReader
from deepaas.api.limits import BodyLimits
from deepaas.api.v2.responses import remove_result
from deepaas.engine.runtime import ModelRuntime
from deepaas.exceptions import DeepaasError, TensorError, echoed
from deepaas.model.signature import check_inputs
from deepaas.model.v2.fields import load_args
from deepaas.model.v2.results import PredictResult
from deepaas.oip import (
    HEADER_LENGTH,
    decode_request,
    encode_response,
    parse_header_length,
)
from deepaas.oip.tensors import InferRequest
from deepaas.scratch import owner

if TYPE_CHECKING:
    from deepaas.api.oip import OipView

#: Outputs whose JSON holds more elements than this, or whose binary data
#: is larger than ``ENCODE_INLINE_BYTES``, are encoded in the executor.
ENCODE_INLINE_ELEMENTS = 8192
ENCODE_INLINE_BYTES = 4 << 20


async def infer_response(
    request: web.Request,
    view: OipView,
    runtime: ModelRuntime,
    version: str,
    tmp_dir: str,
    limits: BodyLimits,
) -> web.Response:
    """Read, decode and run one infer request; its response."""
    error = limits.declared_over(request, in_memory=True)
    if error is not None:  # not read at all
        raise error
    scratch = owner(tmp_dir)  # None for an app the server did not build
    if scratch is not None:
        await scratch.ready()
    header_length = parse_header_length(request.headers.get(HEADER_LENGTH))
    reader = BodyReader(request, tmp_dir, limits)
    # A binary body is held once (its tensors are views of it, never copied).
    body = await reader.read_bytes(into_one=header_length is not None)
    json_size = len(body) if header_length is None else header_length
    # Binary tensors are views of the body: writable ones when it was read
    # into one buffer, which the worker then gets writable too (pickle keeps
    # a buffer's read-only flag, and the worker copies read-only arrays).
    if json_size > OFFLOAD_PARSE_SIZE or _many_bytes_elements(body, header_length):
        decoded = await reader.offload(decode_request, body, header_length, True)
    else:
        decoded = decode_request(body, header_length)
    model = view.model
    if view.signature is not None:
        del body  # the arrays hold what they need of it
        outputs = await _native(view, decoded, runtime)
        decoded.inputs.clear()  # the body goes before the response is made
    else:
        mapping.check_inputs(model.name, view.inputs, decoded.inputs)
        uploads = _file_elements(view, decoded, limits.max_parts)
        files = reader.files  # the uploads, removed by the reader
        try:
            big = len(body) > OFFLOAD_LOAD_SIZE
            if big or uploads:
                kwargs = await reader.offload(_kwargs, view, decoded, tmp_dir, files)
            else:
                kwargs = _kwargs(view, decoded, tmp_dir, files)
            del body
            model.resolve_accept(kwargs)  # */* -> a type it knows
            result = await runtime.predict(kwargs, files, big)
        finally:
            # Emptied by the runtime when a worker may read them.
            await reader.remove_files()
        value = await _result_value(result, model.response_schema is not None)
        outputs = mapping.to_outputs(value)
    outputs = _requested(model.name, decoded, outputs)
    args = (model.name, version, decoded.id, outputs, decoded.wants_binary)
    if _heavy(outputs, decoded):
        payload, headers = await reader.offload(encode_response, *args)
    else:
        payload, headers = encode_response(*args)
    return web.Response(body=payload, headers=headers)


async def _native(
    view: OipView, decoded: InferRequest, runtime: ModelRuntime
) -> dict[str, Any]:
    """A tensor-native plugin's outputs for ``decoded``: its inputs checked
    against the signature, and the outputs asked for known, before a worker
    is bothered."""
    signature = view.signature
    assert signature is not None
    name = view.model.name
    declared = [t.name for t in signature.outputs]
    for requested in decoded.outputs:
        if requested.name not in declared:
            raise TensorError(
                f"model {name!r} has no output {echoed(requested.name)}; its outputs: "
                + ", ".join(signature.describe(t) for t in signature.outputs)
            )
    checked = check_inputs(name, signature, decoded.inputs)
    return await runtime.infer(checked.arrays, max(1, checked.rows), checked.group)


def _file_elements(view: OipView, decoded: InferRequest, limit: int) -> int:
    """How many temporary files the file inputs of ``decoded`` are written
    to (one per element); a 413 past ``limit`` (``--max-form-parts``, the
    parts a multipart form may have), before any is written."""
    count = sum(
        tensor.data.size
        for tensor in decoded.inputs
        if view.inputs[tensor.name].kind == "file"
    )
    if count > limit:
        raise DeepaasError(
            413,
            f"the request's file inputs have {count} elements, each written to a "
            f"file, more than the limit of {limit} (--max-form-parts): send at "
            f"most {limit}",
        )
    return count


def _many_bytes_elements(body: bytes | bytearray, header_length: int | None) -> bool:
    """Whether ``body``'s binary data is big and may hold BYTES tensors,
    whose elements are decoded one by one in Python (a fixed-size tensor is
    a view: no work). The JSON header is searched, not parsed."""
    return (
        header_length is not None
        and len(body) - header_length > OFFLOAD_PARSE_SIZE
        and body.find(b'"BYTES"', 0, header_length) >= 0
    )


def _heavy(outputs: dict[str, Any], decoded: InferRequest) -> bool:
    """Whether encoding ``outputs`` would hold the event loop for long."""
    elements = 0
    size = 0
    for name, value in outputs.items():
        if decoded.wants_binary(name):
            size += getattr(value, "nbytes", 0)
        else:
            elements += getattr(value, "size", 0)
    return elements > ENCODE_INLINE_ELEMENTS or size > ENCODE_INLINE_BYTES


def _kwargs(
    view: OipView, decoded: InferRequest, tmp_dir: str, files: list[str]
) -> dict[str, Any]:
    values = mapping.to_values(view.inputs, decoded.inputs, tmp_dir, files)
    try:
        return load_args(view.schema, values)
    except marshmallow.ValidationError as exc:
        messages = exc.messages
        if not isinstance(messages, dict):
            messages = {"_schema": messages}
        raise TensorError(json.dumps(messages)) from None


async def _result_value(result: PredictResult, has_schema: bool) -> Any:
    """What predict returned, from the result the worker rendered for the
    DEEPaaS route: JSON (``predictions`` of ``{"status": "OK", ...}`` when
    the model has no schema), else the bytes of the body or result file."""
    if result.path is not None:
        try:
            data = await asyncio.get_running_loop().run_in_executor(
                None, _read_file, result.path
            )
        finally:
            remove_result(result)
    else:
        data = result.body or b""
    if result.content_type.split(";")[0].strip() != "application/json":
        return data
    document = json.loads(data)
    if not has_schema and isinstance(document, dict) and "predictions" in document:
        return document["predictions"]
    return document


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise DeepaasError(
            500, f"the model's result file cannot be read: {exc.strerror}"
        ) from None


def _requested(
    model: str, decoded: InferRequest, outputs: dict[str, Any]
) -> dict[str, Any]:
    """The outputs the request named (all when it named none)."""
    if not decoded.outputs:
        return outputs
    chosen = {}
    for requested in decoded.outputs:
        if requested.name not in outputs:
            known = ", ".join(outputs)
            raise TensorError(
                f"model {model!r} has no output {echoed(requested.name)}; "
                f"this request's outputs: {known}"
            )
        chosen[requested.name] = outputs[requested.name]
    return chosen
