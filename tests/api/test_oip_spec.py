"""The OIP routes in ``/openapi.json`` (a tag of their own), never in
``/swagger.json``, which the Gradio UI reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_asyncio

from deepaas.api import oip
from deepaas.api.openapi import OPENAPI_TAGS
from deepaas.api.views import VIEWS
from deepaas.model import loading
from tests.needs import needs
from tests.support import DEMO, Client, MakeClient, plugin_spec, start_client

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

KINDS = plugin_spec("oip_kinds")
TAG = OPENAPI_TAGS[0]["name"]
INFER = "/v2/models/oip_kinds/infer"


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client([DEMO, KINDS])


async def document(client: Client, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status == 200
    return await response.json()


def oip_paths(doc: dict[str, Any]) -> set[str]:
    return {
        path
        for path, operations in doc["paths"].items()
        if any(TAG in op.get("tags", []) for op in operations.values())
    }


async def test_swagger_json_is_what_it_is_without_oip(client):
    """Byte for byte what an app without the OIP routes serves."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(oip, "setup", lambda *args, **kwargs: None)
        without = await start_client([DEMO, KINDS], {})
    try:
        theirs = await (await without.get("/swagger.json")).read()
        assert not oip_paths(await document(without, "/openapi.json"))
    finally:
        await without.close()
    ours = await (await client.get("/swagger.json")).read()
    assert ours == theirs
    swagger = json.loads(ours)
    assert TAG not in {tag["name"] for tag in swagger["tags"]}
    assert not oip_paths(swagger)
    for path in ("/v2", INFER, "/v2/models/demo/ready", "/v2/models/demo"):
        assert path not in swagger["paths"]
    assert not [name for name in swagger["definitions"] if name.startswith("Oip")]


async def test_openapi_json_describes_the_oip_routes(client):
    openapi = await document(client, "/openapi.json")
    assert TAG in {tag["name"] for tag in openapi["tags"]}
    expected = {"/v2"}
    for model in ("demo", "oip_kinds"):
        for prefix in (
            f"/v2/models/{model}",
            f"/v2/models/{model}/versions/{{version}}",
        ):
            expected |= {prefix, f"{prefix}/ready", f"{prefix}/infer"}
    assert oip_paths(openapi) == expected
    # the DEEPaaS routes are still there, under their tags
    assert "models" in openapi["paths"]["/v2/models/demo/predict/"]["post"]["tags"]
    infer = openapi["paths"][INFER]["post"]
    assert infer["operationId"] == "oip_model_infer_oip_kinds"
    header = [p for p in infer["parameters"] if p["in"] == "header"]
    assert header == [
        {
            "name": "Inference-Header-Content-Length",
            "in": "header",
            "required": False,
            "description": header[0]["description"],
            "schema": {"type": "integer", "minimum": 0},
        }
    ]
    content = infer["requestBody"]["content"]
    assert set(content) == {"application/json", "application/octet-stream"}
    assert content["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OipInferenceRequest"
    }
    assert "Inference-Header-Content-Length" in infer["description"]
    assert "| `fl` | FP64 | [-1] | no |" in infer["description"]
    assert "| `i` | INT64 | [1] | yes |" in infer["description"]
    errors = infer["responses"]["400"]["content"]["application/json"]["schema"]
    assert errors == {"$ref": "#/components/schemas/OipError"}
    schemas = openapi["components"]["schemas"]
    assert schemas["OipError"]["required"] == ["error"]
    request = schemas["OipInferenceRequest"]["properties"]
    assert set(request) == {"id", "parameters", "inputs", "outputs"}
    assert set(request["inputs"]["items"]["properties"]) == {
        "name",
        "shape",
        "datatype",
        "parameters",
        "data",
    }
    assert set(request["outputs"]["items"]["properties"]) == {"name", "parameters"}
    response = schemas["OipInferenceResponse"]["properties"]
    assert set(response) == {
        "model_name",
        "model_version",
        "id",
        "parameters",
        "outputs",
    }


async def test_openapi_json_passes_openapi_spec_validator(client):
    validator = needs("openapi_spec_validator")
    openapi = await document(client, "/openapi.json")
    assert list(validator.OpenAPIV31SpecValidator(openapi).iter_errors()) == []


def validate(openapi: dict[str, Any], name: str, value: Any) -> None:
    jsonschema = needs("jsonschema")
    root = {"$ref": f"#/components/schemas/{name}", "components": openapi["components"]}
    jsonschema.Draft202012Validator(root).validate(value)


async def test_the_answers_are_what_the_document_says(client):
    openapi = await document(client, "/openapi.json")
    metadata = openapi["paths"]["/v2/models/oip_kinds"]["get"]["responses"]["200"]
    example = metadata["content"]["application/json"]["example"]
    assert example == await document(client, "/v2/models/oip_kinds/versions/1")
    validate(openapi, "OipModelMetadata", await document(client, "/v2/models/demo"))
    validate(openapi, "OipServerMetadata", await document(client, "/v2"))
    request = openapi["paths"][INFER]["post"]["requestBody"]["content"]
    body = request["application/json"]["example"]
    validate(openapi, "OipInferenceRequest", body)
    response = await client.post(INFER, json=body)
    assert response.status == 200, await response.text()
    validate(openapi, "OipInferenceResponse", await response.json())
    response = await client.post(INFER, data=b"{")
    assert response.status == 400
    validate(openapi, "OipError", await response.json())


async def test_a_reload_refreshes_the_oip_operations(client):
    views = client.app[VIEWS]
    original = views.wrappers["oip_kinds"]
    views.refresh("oip_kinds", loading.load(plugin_spec("oip_kinds", "echo")))
    try:
        openapi = await document(client, "/openapi.json")
        infer = openapi["paths"][INFER]["post"]
        assert "| `x` | INT64 | [1] | no |" in infer["description"]
        assert "`fl`" not in infer["description"]
        body = infer["requestBody"]["content"]["application/json"]["example"]
        assert [i["name"] for i in body["inputs"]] == ["x"]
        metadata = openapi["paths"]["/v2/models/oip_kinds/versions/{version}"]["get"]
        example = metadata["responses"]["200"]["content"]["application/json"]
        assert [i["name"] for i in example["example"]["inputs"]] == ["x"]
        assert not oip_paths(await document(client, "/swagger.json"))
    finally:
        views.refresh("oip_kinds", original)
    infer = (await document(client, "/openapi.json"))["paths"][INFER]["post"]
    assert "`fl`" in infer["description"]
