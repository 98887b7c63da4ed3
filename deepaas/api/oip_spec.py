"""The OIP routes (:mod:`deepaas.api.oip`) in ``/openapi.json``.

OpenAPI 3.1 operation objects, written whole (:attr:`Operation.openapi_document`),
under a tag of their own; ``/swagger.json`` leaves them out, so that the
Gradio UI, which reads it, sees the DEEPaaS routes alone. The bodies are the
KServe Open Inference Protocol v2 REST ones
(:func:`deepaas.api.oip_schemas.schemas`); a model's inputs and
outputs (:mod:`deepaas.api.oip_mapping`, or a tensor-native plugin's
signature) are in its operations' descriptions and examples, rebuilt when
the model reloads.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from deepaas.api.oip_mapping import TensorSpec
from deepaas.api.oip_schemas import (
    OIP_ERROR,
    OIP_INFER_REQUEST,
    OIP_INFER_RESPONSE,
    OIP_MODEL_METADATA,
    OIP_MODEL_READY,
    OIP_SERVER_METADATA,
)
from deepaas.api.openapi import OPENAPI_TAGS, Operation
from deepaas.api.response_schemas import ref
from deepaas.oip import HEADER_LENGTH

if TYPE_CHECKING:
    from deepaas.api.oip import OipView

TAG = OPENAPI_TAGS[0]["name"]

#: An example value of one element, by TensorSpec kind.
_EXAMPLES: dict[str, list[Any]] = {
    "int": [1, 2],
    "float": [0.5, 1.5],
    "bool": [True, False],
    "str": ["text", "more text"],
    "json": ["{}", "{}"],
    "file": ["the file's bytes", "another file's bytes"],
}

BINARY = (
    "Binary tensor data extension: send the JSON request followed by the "
    "inputs' raw bytes (row-major, little-endian; each BYTES element "
    "prefixed by its 4-byte little-endian length), with the JSON part's "
    f"length in the `{HEADER_LENGTH}` header and `binary_data_size` in each "
    "binary input's parameters. Ask for binary outputs with "
    '`"binary_data": true` in an output\'s parameters, or '
    '`"binary_data_output": true` in the request\'s: the response is then '
    f"the JSON part followed by the outputs' bytes, its length in the "
    f"response's `{HEADER_LENGTH}` header."
)


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": ref(name, False)}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "A malformed request or an invalid input",
        402: "The predict endpoint is disabled",
        404: "No such model, or version",
        413: "The body is over --client-max-size",
        500: "The model failed",
        501: "The model does not implement predict",
        503: "Draining, or the queue is full (--max-queue)",
        504: "The prediction ran past --predict-timeout",
    }
    return {
        str(status): {"description": texts[status], "content": _json(OIP_ERROR)}
        for status in statuses
    }


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    parameters: list[dict[str, Any]] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "tags": [TAG],
        "summary": summary,
        "operationId": operation_id,
    }
    if description:
        doc["description"] = description
    if parameters:
        doc["parameters"] = parameters
    doc["responses"] = responses
    return doc


def _as_operation(method: str, path: str, document: dict[str, Any]) -> Operation:
    return Operation(
        method,
        path,
        document["summary"],
        TAG,
        {},
        operation_id=document["operationId"],
        openapi_document=document,
    )


def server_operation(bp: str) -> Operation:
    """``GET <bp>/v2``."""
    return _as_operation(
        "get",
        f"{bp}/v2",
        _operation(
            "oip_server_metadata",
            "Server metadata (Open Inference Protocol)",
            {
                "200": {
                    "description": "The server",
                    "content": _json(OIP_SERVER_METADATA),
                }
            },
        ),
    )


def _table(specs: list[TensorSpec], required: bool) -> str:
    head = "| name | datatype | shape |" + (" required |" if required else "")
    rule = "|---|---|---|" + ("---|" if required else "")
    rows = [
        f"| `{s.name}` | {s.datatype} | {s.shape} |"
        + ((" yes |" if s.required else " no |") if required else "")
        for s in specs
    ]
    return "\n".join([head, rule, *rows])


def _example_input(spec: TensorSpec) -> dict[str, Any]:
    values = _EXAMPLES[spec.kind][: 2 if spec.many else 1]
    return {
        "name": spec.name,
        "datatype": spec.datatype,
        "shape": [len(values)],
        "data": values,
    }


def infer_example(view: OipView) -> dict[str, Any]:
    """A request with the model's required inputs (its first input when
    none is required), of made-up values; every input of a tensor-native
    model, of zeros (one row, and a size of 1 for each axis of any size)."""
    signature = view.signature
    if signature is not None:
        inputs = []
        for tensor in signature.inputs:
            shape = [1 if size == -1 else size for size in signature.full_shape(tensor)]
            value: Any = {"BOOL": False, "BYTES": ""}.get(tensor.datatype, 0)
            inputs.append(
                {
                    "name": tensor.name,
                    "datatype": tensor.datatype,
                    "shape": shape,
                    "data": [value] * math.prod(shape),
                }
            )
        return {"id": "1", "inputs": inputs}
    specs = list(view.inputs.values())
    chosen = [s for s in specs if s.required] or specs[:1]
    return {"id": "1", "inputs": [_example_input(s) for s in chosen]}


def _infer_text(view: OipView) -> str:
    """The infer operation's description: what it runs, and the tensors."""
    name = view.model.name
    signature = view.signature
    if signature is not None:
        metadata = view.metadata()
        batch = (
            f" Axis 0 is the batch: 1 to {signature.max_batch_size} rows per "
            "request (concurrent requests are batched together)."
            if signature.batched
            else ""
        )
        return "\n\n".join(
            [
                f"Runs model `{name}`'s infer() on the inputs (numpy arrays), "
                "as declared by its get_infer_signature(); -1: an axis of any "
                f"size.{batch}",
                "Inputs (all required):\n\n" + _rows(metadata["inputs"]),
                "Outputs:\n\n" + _rows(metadata["outputs"]),
                BINARY,
            ]
        )
    inputs = list(view.inputs.values())
    return "\n\n".join(
        [
            f"Runs model `{name}`'s predict() on the inputs, as its DEEPaaS "
            "predict route does (the same arguments, validation, queue and "
            "timeouts).",
            "Inputs (its predict arguments; -1: a list of any length):\n\n"
            + (_table(inputs, True) if inputs else "none"),
            "Outputs (one per key of a dict result; the datatype and shape "
            "are the result's):\n\n" + _table(view.outputs, False),
            BINARY,
        ]
    )


def _rows(tensors: list[dict[str, Any]]) -> str:
    rows = [f"| `{t['name']}` | {t['datatype']} | {t['shape']} |" for t in tensors]
    return "\n".join(["| name | datatype | shape |", "|---|---|---|", *rows])


def model_operations(bp: str, view: OipView, enabled: bool) -> list[Operation]:
    """The model's metadata, ready and infer operations, unversioned and
    under ``/versions/{version}``, for ``view`` (rebuilt on a reload)."""
    name = view.model.name
    metadata = view.metadata()
    version_param = {
        "name": "version",
        "in": "path",
        "required": True,
        "description": "The model's version",
        "schema": {"type": "string", "enum": metadata["versions"]},
    }
    header_param = {
        "name": HEADER_LENGTH,
        "in": "header",
        "required": False,
        "description": (
            "The length of the JSON part of a body with binary tensor data "
            "(without it the body is JSON alone)"
        ),
        "schema": {"type": "integer", "minimum": 0},
    }
    infer_text = _infer_text(view)
    infer_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": ref(OIP_INFER_REQUEST, False),
                "example": infer_example(view),
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": (
                        f"An inference request of {HEADER_LENGTH} bytes of "
                        "JSON, then the binary inputs' bytes"
                    ),
                },
            },
        },
    }
    infer_ok = {
        "description": "The outputs",
        "headers": {
            HEADER_LENGTH: {
                "description": "With binary outputs: the JSON part's length",
                "schema": {"type": "integer", "minimum": 0},
            }
        },
        "content": {
            "application/json": {"schema": ref(OIP_INFER_RESPONSE, False)},
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": (
                        "An inference response, then the binary outputs' bytes"
                    ),
                }
            },
        },
    }
    infer_errors = (400, 404, 413, 500, 501, 503, 504) if enabled else (402, 404)
    operations = []
    for suffix, prefix, params in (
        ("", f"{bp}/v2/models/{name}", []),
        ("_version", f"{bp}/v2/models/{name}/versions/{{version}}", [version_param]),
    ):
        where = " of a version" if suffix else ""
        meta_ok = {
            "description": "The model's inputs and outputs",
            "content": {
                "application/json": {
                    "schema": ref(OIP_MODEL_METADATA, False),
                    "example": metadata,
                }
            },
        }
        ready_content = _json(OIP_MODEL_READY)
        operations += [
            _as_operation(
                "get",
                prefix,
                _operation(
                    f"oip_model{suffix}_metadata_{name}",
                    f"Model metadata{where} (Open Inference Protocol)",
                    {"200": meta_ok, **_errors(404, 500)},
                    params,
                ),
            ),
            _as_operation(
                "get",
                f"{prefix}/ready",
                _operation(
                    f"oip_model{suffix}_ready_{name}",
                    f"Model readiness{where} (Open Inference Protocol)",
                    {
                        "200": {"description": "Ready", "content": ready_content},
                        "503": {
                            "description": "Not ready (no warm worker, or draining)",
                            "content": ready_content,
                        },
                        **_errors(404),
                    },
                    params,
                ),
            ),
        ]
        infer = _operation(
            f"oip_model{suffix}_infer_{name}",
            f"Inference{where} (Open Inference Protocol)",
            {"200": infer_ok, **_errors(*infer_errors)},
            [*params, header_param],
            infer_text,
        )
        infer["requestBody"] = infer_body
        operations.append(_as_operation("post", f"{prefix}/infer", infer))
    return operations
