"""Schemas of the Open Inference Protocol's REST bodies, for ``/openapi.json``
(OpenAPI 3.1 only: ``/swagger.json``, the Gradio UI's view, has no OIP).

From KServe's "Open Inference Protocol (V2)" REST spec
(``required_api.md``) and Triton's binary tensor data extension. The
operations that refer to them are :mod:`deepaas.api.oip_spec`'s; the
DEEPaaS answers' schemas are :mod:`deepaas.api.response_schemas`'s.
"""

from __future__ import annotations

from typing import Any

from deepaas.oip.datatypes import DATATYPES

OIP_ERROR = "OipError"
OIP_SERVER_METADATA = "OipServerMetadata"
OIP_MODEL_METADATA = "OipModelMetadata"
OIP_MODEL_READY = "OipModelReady"
OIP_INFER_REQUEST = "OipInferenceRequest"
OIP_INFER_RESPONSE = "OipInferenceResponse"


def to(name: str) -> dict[str, str]:
    """A reference to the schema ``name`` (OpenAPI 3.1)."""
    return {"$ref": "#/components/schemas/" + name}


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def schemas() -> dict[str, dict[str, Any]]:
    """The KServe Open Inference Protocol v2 REST bodies (its
    ``required_api.md``), with the binary tensor data extension's
    parameters; OpenAPI 3.1 only."""
    parameters = {
        "type": "object",
        "description": (
            "$parameters: values are strings, numbers or booleans "
            "(binary_data_output, binary_data, binary_data_size of the "
            "binary tensor data extension)"
        ),
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    }
    datatype = {"type": "string", "enum": list(DATATYPES)}
    shape = _array({"type": "integer", "minimum": -1})
    data = {
        "type": "array",
        "description": (
            "$tensor_data: the elements in row-major order, flat or nested "
            "as the shape; BYTES elements are strings. Left out when the "
            "tensor is binary data (parameters.binary_data_size)"
        ),
    }
    tensor_metadata = {
        "type": "object",
        "properties": {
            "name": _string("The tensor's name"),
            "datatype": datatype,
            "shape": {**shape, "description": "-1 for a dimension of any size"},
        },
        "required": ["name", "datatype", "shape"],
    }
    return {
        OIP_ERROR: {
            "type": "object",
            "description": "Every error of the Open Inference Protocol routes",
            "properties": {"error": _string("What went wrong")},
            "required": ["error"],
        },
        OIP_SERVER_METADATA: {
            "type": "object",
            "properties": {
                "name": _string("deepaas"),
                "version": _string("deepaas's version"),
                "extensions": _array({"type": "string"}),
            },
            "required": ["name", "version", "extensions"],
        },
        OIP_MODEL_METADATA: {
            "type": "object",
            "description": (
                "$metadata_model_response; the unversioned route adds the "
                "keys of the model's DEEPaaS document (ModelMeta)"
            ),
            "properties": {
                "name": _string("The model's name"),
                "versions": _array({"type": "string"}),
                "platform": _string("deepaas"),
                "inputs": _array(tensor_metadata),
                "outputs": _array(tensor_metadata),
            },
            "required": ["name", "platform", "inputs", "outputs"],
            "additionalProperties": True,
        },
        OIP_MODEL_READY: {
            "type": "object",
            "properties": {
                "name": _string("The model's name"),
                "ready": {"type": "boolean"},
            },
            "required": ["name", "ready"],
        },
        OIP_INFER_REQUEST: {
            "type": "object",
            "description": "$inference_request",
            "properties": {
                "id": _string("Echoed in the response"),
                "parameters": parameters,
                "inputs": _array(
                    {
                        "type": "object",
                        "properties": {
                            "name": _string("The input's name"),
                            "shape": shape,
                            "datatype": datatype,
                            "parameters": parameters,
                            "data": data,
                        },
                        "required": ["name", "shape", "datatype"],
                    }
                ),
                "outputs": _array(
                    {
                        "type": "object",
                        "properties": {
                            "name": _string("The output's name"),
                            "parameters": parameters,
                        },
                        "required": ["name"],
                    }
                ),
            },
            "required": ["inputs"],
        },
        OIP_INFER_RESPONSE: {
            "type": "object",
            "description": "$inference_response",
            "properties": {
                "model_name": _string("The model's name"),
                "model_version": _string("The model's version"),
                "id": _string("The request's id"),
                "parameters": parameters,
                "outputs": _array(
                    {
                        "type": "object",
                        "properties": {
                            "name": _string("The output's name"),
                            "shape": shape,
                            "datatype": datatype,
                            "parameters": parameters,
                            "data": data,
                        },
                        "required": ["name", "shape", "datatype"],
                    }
                ),
            },
            "required": ["model_name", "outputs"],
        },
    }
