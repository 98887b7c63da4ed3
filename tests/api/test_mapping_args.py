"""Mapping arguments (Dict, Nested, a List of them) with no location: JSON
text in the query string or a form field, objects in a JSON body.
/swagger.json describes them as query parameters of JSON text (as ever),
/openapi.json in the JSON body; both are valid (openapi-spec-validator)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.needs import needs
from tests.support import Client, MakeClient, plugin_spec, predict

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

D = {"s": 1, "t": [1, "a"]}
P = {"x": 3, "y": 4}
DL = [{"a": 1}, {"b": 2}]
PL = [{"x": 1, "y": 0}, {"x": 2, "y": 5}]
ROUTE = "/v2/models/mapping_args/predict/"


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client([plugin_spec("mapping_args")])


async def got(client: Client, expect: int = 200, **request: Any) -> dict[str, Any]:
    body = await predict(client, "mapping_args", expect=expect, **request)
    if expect != 200:
        return body
    return {k: v["value"] for k, v in body["predictions"].items() if k != "n"}


def texts() -> list[tuple[str, str]]:
    return [
        ("d", json.dumps(D)),
        ("p", json.dumps(P)),
        ("dl", json.dumps(DL[0])),
        ("dl", json.dumps(DL[1])),
        ("pl", json.dumps(PL)),
    ]


EXPECTED = {"d": D, "p": P, "dl": DL, "pl": PL}


async def test_query_string_json_text(client):
    assert await got(client, params=texts()) == EXPECTED


async def test_list_of_mappings_as_one_json_array(client):
    assert await got(client, params={"dl": json.dumps(DL)}) == {"dl": DL}


async def test_urlencoded_form_json_text(client):
    assert await got(client, data=texts()) == EXPECTED


async def test_multipart_form_json_text(client):
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in texts():
        form.add_field(name, value)
    assert await got(client, data=form) == EXPECTED


async def test_json_body_objects(client):
    assert await got(client, json=EXPECTED) == EXPECTED


async def test_empty_text_is_no_value(client):
    assert await got(client, params={"d": "", "dl": ""}) == {}


@pytest.mark.parametrize(
    "request_kw",
    [
        {"params": {"d": "{'s': 1}"}},
        {"data": {"d": "{nope"}},
        {"params": [("dl", "{}"), ("dl", "[1,")]},
    ],
)
async def test_invalid_json_text_is_a_422_naming_the_field(client, request_kw):
    body = await got(client, expect=422, **request_kw)
    (name,) = body
    assert name in ("d", "dl")
    assert body[name][0].startswith("Not valid JSON:"), body


async def test_json_text_of_the_wrong_kind_is_marshmallows_422(client):
    body = await got(client, expect=422, params={"d": "5", "p": '{"y": 1}'})
    assert body == {
        "d": ["Not a valid mapping type."],
        "p": {"x": ["Missing data for required field."]},
    }


async def test_a_file_for_a_mapping_is_a_422(client):
    form = aiohttp.FormData()
    form.add_field("d", b"{}", filename="d.json", content_type="application/json")
    body = await got(client, expect=422, data=form)
    assert list(body) == ["d"]


# -- the documents ---------------------------------------------------------------


async def document(client: Client, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status == 200
    return await response.json()


def params(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    post = doc["paths"][ROUTE]["post"]
    return {p["name"]: p for p in post["parameters"]}


async def test_swagger_json_text_parameters(client):
    found = params(await document(client, "/swagger.json"))
    for name in ("d", "p", "pl"):
        assert found[name]["in"] == "query"
        assert found[name]["type"] == "string"
        assert "$ref" not in json.dumps(found[name])
    assert "JSON text of an object" in found["d"]["description"]
    assert "JSON text of an object" in found["p"]["description"]
    assert json.loads(found["p"]["x-example"]) == {"x": 0, "y": 0}
    assert found["dl"]["items"] == {"type": "string"}
    assert found["dl"]["collectionFormat"] == "multi"


async def test_openapi_describes_them_in_the_json_body(client):
    """A query string cannot carry an object for a generated client (issue
    15): /openapi.json puts them in the JSON body, scalars stay in the
    query."""
    doc = await document(client, "/openapi.json")
    assert set(params(doc)) == {"n"}
    body = doc["paths"][ROUTE]["post"]["requestBody"]
    assert list(body["content"]) == ["application/json"]
    schema = body["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"d", "p", "dl", "pl"}
    assert schema["properties"]["p"]["$ref"] == "#/components/schemas/Point"
    assert "required" not in schema and "required" not in body


def _deliberate(error: Any) -> bool:
    """DEEPaaS 2.6.0's ``"default": null`` with ``x-nullable`` (Swagger 2.0,
    docs/compatibility.md) on the train route's ``deepaas_gpus``: the
    validator does not know that extension, and checks the null default
    against the type."""
    return error.instance is None


async def test_both_documents_pass_openapi_spec_validator(client):
    validator = needs("openapi_spec_validator")
    swagger = await document(client, "/swagger.json")
    errors = validator.OpenAPIV2SpecValidator(swagger).iter_errors()
    assert [e.message for e in errors if not _deliberate(e)] == []
    openapi = await document(client, "/openapi.json")
    assert list(validator.OpenAPIV31SpecValidator(openapi).iter_errors()) == []
