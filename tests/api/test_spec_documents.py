"""``/swagger.json`` (Swagger 2.0) and ``/openapi.json`` (3.1): contract section 5."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from tests.needs import needs
from tests.support import DEMO_SPECS, Client, MakeClient, plugin_spec

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

PLUGINS = [
    *DEMO_SPECS,
    plugin_spec("argkinds"),
    plugin_spec("outcomes"),
    plugin_spec("schema_check"),
    plugin_spec("bare"),
]
ROUTES = {
    "/",
    "/v2/",
    "/v2/debug/",
    "/v2/models/",
    "/v2/models/demo/",
    "/v2/models/demo_class/",
    "/v2/models/demo/predict/",
    "/v2/models/demo_class/predict/",
}


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client(PLUGINS)


async def document(client: Client, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status == 200
    assert response.content_type == "application/json"
    return await response.json()


@pytest_asyncio.fixture(loop_scope="module")
async def swagger(client: Client) -> dict[str, Any]:
    return await document(client, "/swagger.json")


@pytest_asyncio.fixture(loop_scope="module")
async def openapi(client: Client) -> dict[str, Any]:
    return await document(client, "/openapi.json")


def params_of(spec: dict[str, Any], model: str) -> dict[str, dict[str, Any]]:
    post = spec["paths"][f"/v2/models/{model}/predict/"]["post"]
    return {p["name"]: p for p in post.get("parameters", [])}


def meta_validator(version: str) -> Any:
    """The official meta-schema validator schemathesis bundles, if installed."""
    definitions = needs("schemathesis.specs.openapi.definitions")
    name = {"2.0": "SWAGGER_20_VALIDATOR", "3.1": "OPENAPI_31_VALIDATOR"}[version]
    return getattr(definitions, name)


# -- validity ---------------------------------------------------------------------


async def test_swagger_is_valid_swagger_2(swagger):
    assert swagger["swagger"] == "2.0"
    errors = [e.message for e in meta_validator("2.0").iter_errors(swagger)]
    assert errors == []


async def test_openapi_is_valid_openapi_3_1(openapi):
    assert openapi["openapi"].startswith("3.1.")
    errors = [e.message for e in meta_validator("3.1").iter_errors(openapi)]
    assert errors == []


@pytest.mark.parametrize("settings", [{"base_path": "/bp"}, {"doc_endpoint": False}])
async def test_other_configurations_valid(make_client: MakeClient, settings):
    client = await make_client(DEMO_SPECS, **settings)
    bp = settings.get("base_path", "")
    swagger = await document(client, f"{bp}/swagger.json")
    openapi = await document(client, f"{bp}/openapi.json")
    assert list(meta_validator("2.0").iter_errors(swagger)) == []
    assert list(meta_validator("3.1").iter_errors(openapi)) == []
    assert {f"{bp}{path}" for path in ROUTES} <= set(swagger["paths"])


# -- Swagger 2.0 ------------------------------------------------------------------


async def test_paths_keep_trailing_slashes(swagger, openapi):
    assert set(swagger["paths"]) >= ROUTES
    # Probes keep the names platforms expect (/healthz, Open Inference Protocol).
    probes = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}
    for path in swagger["paths"]:
        assert path.endswith("/") or "{" in path or path in probes, path
    # and /openapi.json the OIP routes too (tests/api/test_oip_spec.py)
    oip = {
        path
        for path, operations in openapi["paths"].items()
        if all(op["tags"] == ["Open Inference Protocol"] for op in operations.values())
    }
    assert set(openapi["paths"]) - oip == set(swagger["paths"])


async def test_tags(swagger, openapi):
    for spec in (swagger, openapi):
        names = [tag["name"] for tag in spec["tags"]]
        assert {"versions", "debug", "models"} <= set(names)
        for path, operations in spec["paths"].items():
            for operation in operations.values():
                assert set(operation["tags"]) <= set(names), path
    paths = swagger["paths"]
    assert paths["/"]["get"]["tags"] == ["versions"]
    assert paths["/v2/"]["get"]["tags"] == ["versions"]
    assert paths["/v2/debug/"]["get"]["tags"] == ["debug"]
    assert paths["/v2/models/"]["get"]["tags"] == ["models"]
    assert paths["/v2/models/demo/predict/"]["post"]["tags"] == ["models"]


# Each parameter exactly as DEEPaaS 2.6.0 wrote it for the same plugin
# (apispec 3: "format" on numbers, "default": null and "x-nullable" for
# missing=None). 2.6.0 also wrote a "body" parameter for the JSON-body field
# "options" beside the form fields, which Swagger 2.0 forbids: left out here.
EXPECTED_DEMO_PARAMS: dict[str, dict[str, Any]] = {
    "text": {
        "in": "query",
        "type": "string",
        "default": "hello",
        "description": "A string",
    },
    "number": {
        "in": "query",
        "type": "integer",
        "format": "int32",
        "default": 1,
        "minimum": 0,
        "maximum": 100,
        "description": "An integer between 0 and 100",
    },
    "flag": {
        "in": "query",
        "type": "boolean",
        "default": False,
        "description": "A boolean",
    },
    "choice": {
        "in": "query",
        "type": "string",
        "default": "a",
        "enum": ["a", "b", "c"],
        "description": "One of a, b or c",
    },
    "file": {
        "in": "formData",
        "default": None,
        "x-nullable": True,
        "type": "file",
        "description": "An optional file",
    },
    "ratio": {
        "in": "query",
        "type": "number",
        "format": "float",
        "default": 0.5,
        "minimum": 0.0,
        "maximum": 1.0,
        "description": "A number between 0 and 1",
    },
    "numbers": {
        "in": "query",
        "collectionFormat": "multi",
        "type": "array",
        "default": [1, 2],
        "description": "A list of integers (repeat the key)",
        "items": {"type": "integer", "format": "int32"},
    },
    "secret": {
        "in": "query",
        "type": "string",
        "description": "A password-like string",
        "format": "password",
    },
    "demo-str": {
        "in": "query",
        "type": "string",
        "default": "x",
        "description": "A name with a dash",
    },
    "x-demo-header": {
        "in": "header",
        "type": "string",
        "description": "Read from a request header",
    },
    "class": {
        "in": "query",
        "type": "string",
        "default": "cat",
        "description": "Sent as 'class' (a Python keyword)",
    },
    "image": {
        "in": "formData",
        "description": "An optional image file",
        "type": "file",
    },
    "accept": {
        "in": "header",
        "type": "string",
        "default": "application/json",
        "enum": ["application/json", "image/png", "text/plain", "*/*"],
        "description": "The type of the response",
    },
}


@pytest.mark.parametrize("name", list(EXPECTED_DEMO_PARAMS))
async def test_demo_predict_parameters(swagger, name):
    params = params_of(swagger, "demo")
    expected = {"name": name, "required": False, **EXPECTED_DEMO_PARAMS[name]}
    assert params[name] == expected


async def test_demo_parameters_in_declaration_order(swagger):
    # every argument, nothing else, in the plugin's order (as forms show them)
    assert list(params_of(swagger, "demo")) == list(EXPECTED_DEMO_PARAMS)


async def test_demo_predict_consumes_and_produces(swagger):
    post = swagger["paths"]["/v2/models/demo/predict/"]["post"]
    assert post["consumes"] == ["multipart/form-data"]
    assert post["produces"] == ["application/json", "image/png", "text/plain", "*/*"]
    post = swagger["paths"]["/v2/models/demo_class/predict/"]["post"]
    assert post["produces"] == ["application/json", "application/octet-stream", "*/*"]
    post = swagger["paths"]["/v2/models/outcomes/predict/"]["post"]
    assert post["produces"] == ["application/json"]


async def test_demo_class_parameters(swagger):
    params = params_of(swagger, "demo_class")
    assert params["data"]["required"] is True
    assert params["data"]["in"] == "query"
    assert params["data"]["description"] == "Some text"
    assert params["accept"]["in"] == "query"  # no location: not a header
    assert params["accept"]["enum"] == [
        "application/json",
        "application/octet-stream",
        "*/*",
    ]


async def test_argkinds_parameters(swagger):
    params = params_of(swagger, "argkinds")
    where = {name: p["in"] for name, p in params.items()}
    assert where["q"] == where["qs"] == where["anywhere"] == "query"
    assert where["f"] == where["legacy_file"] == where["modern_file"] == "formData"
    assert where["X-Token"] == "header"  # the data_key is the header name
    assert params["legacy_file"]["type"] == params["modern_file"]["type"] == "file"
    assert params["ints"]["type"] == "array"
    assert params["ints"]["items"] == {"type": "integer", "format": "int32"}
    assert params["ints"]["collectionFormat"] == "multi"
    assert params["csv"]["type"] == "array"
    assert params["csv"]["collectionFormat"] == "csv"  # DelimitedList
    assert params["colour"]["enum"] == ["red", "green"]  # legacy enum= keyword
    assert params["pw"]["format"] == "password"  # legacy format= keyword
    assert params["legacy_default"]["default"] == "legacy"
    assert params["modern_default"]["default"] == "modern"
    assert "klass" not in params and params["class"]["type"] == "string"
    assert params["dashed-name"]["type"] == "integer"
    assert params["flag"]["type"] == "boolean"
    assert params["q"]["description"] == "query only"


async def test_model_prediction_response_definition(swagger):
    definitions = swagger["definitions"]
    response = definitions["ModelPredictionResponse"]
    assert response["type"] == "object"
    properties = response["properties"]
    assert properties["model"]["type"] == "string"
    assert properties["warmed"]["type"] == "boolean"
    assert properties["score"]["type"] == "number"
    assert properties["received"] == {"type": "array", "items": {"type": "string"}}
    assert properties["args"]["type"] == "object"
    assert set(response["required"]) == {"model", "warmed", "score", "received", "args"}
    assert set(definitions["PredictResponse"]["properties"]) == {
        "data",
        "upper",
        "length",
        "warmed",
    }


def resolve(spec: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


async def test_response_schemas_point_at_each_model(swagger, openapi):
    def swagger_200(model: str) -> dict[str, Any]:
        post = swagger["paths"][f"/v2/models/{model}/predict/"]["post"]
        return resolve(swagger, post["responses"]["200"]["schema"]["$ref"])

    def openapi_200(model: str) -> dict[str, Any]:
        post = openapi["paths"][f"/v2/models/{model}/predict/"]["post"]
        content = post["responses"]["200"]["content"]["application/json"]
        return resolve(openapi, content["schema"]["$ref"])

    for schema_of in (swagger_200, openapi_200):
        # two dict schemas: each model's own definition, both documented
        assert set(schema_of("demo")["properties"]) >= {"model", "score"}
        assert set(schema_of("schema_check")["properties"]) == {"value", "label"}
        assert set(schema_of("demo_class")["properties"]) >= {"upper", "length"}
    # no schema: the wrapper; in 2.0 its untyped "predictions" is left to
    # additionalProperties (openapi-generator reads an untyped 2.0 value as
    # an object, and would reject a list of predictions)
    assert set(openapi_200("outcomes")["properties"]) == {"status", "predictions"}
    assert openapi_200("outcomes")["required"] == ["status", "predictions"]
    wrapper = swagger_200("outcomes")
    assert set(wrapper["properties"]) == {"status"}
    assert wrapper["additionalProperties"] is True
    assert "predictions (The model's output)" in wrapper["description"]


async def test_error_responses_documented(swagger):
    post = swagger["paths"]["/v2/models/demo/predict/"]["post"]
    for status in ("400", "413", "500"):
        failure = resolve(swagger, post["responses"][status]["schema"]["$ref"])
        assert failure["properties"]["message"]["type"] == "string"
        assert failure["required"] == ["message"]


async def test_plugin_without_predict_documented(swagger):
    # the route answers 501; it is documented with no parameters
    post = swagger["paths"]["/v2/models/bare/predict/"]["post"]
    assert "parameters" not in post
    assert post["produces"] == ["application/json"]


# -- OpenAPI 3.1 ------------------------------------------------------------------


async def test_openapi_demo_predict(openapi):
    post = openapi["paths"]["/v2/models/demo/predict/"]["post"]
    params = {p["name"]: p for p in post["parameters"]}
    assert params["number"]["in"] == "query"
    assert params["number"]["schema"] == {
        "type": "integer",
        "default": 1,
        "minimum": 0,
        "maximum": 100,
    }
    assert params["x-demo-header"]["in"] == "header"
    assert params["accept"]["in"] == "header"
    assert params["secret"]["schema"]["format"] == "password"
    assert params["numbers"]["schema"]["items"] == {"type": "integer"}
    body = post["requestBody"]["content"]
    form = body["multipart/form-data"]["schema"]["properties"]
    assert form["file"] == {
        "type": "string",
        "format": "binary",
        "description": "An optional file",
    }
    assert form["image"]["format"] == "binary"
    # the form alone: with a JSON body beside it, openapi-generator's clients
    # send JSON and drop the files; the JSON-body field is a part of JSON text
    assert set(body) == {"multipart/form-data"}
    assert form["options"]["type"] == "object"
    assert body["multipart/form-data"]["encoding"] == {
        "options": {"contentType": "application/json"}
    }
    # each type an answer can have (no "*/*": no answer is of that type),
    # binary and text ones as strings, so clients do not decode them as JSON
    content = post["responses"]["200"]["content"]
    assert list(content) == ["application/json", "image/png", "text/plain"]
    assert content["image/png"]["schema"] == {"type": "string", "format": "binary"}
    assert content["text/plain"]["schema"] == {"type": "string"}


async def test_openapi_required_form_and_json_fields(openapi):
    post = openapi["paths"]["/v2/models/argkinds/predict/"]["post"]
    body = post["requestBody"]["content"]
    form = body["multipart/form-data"]
    assert set(form["schema"]["properties"]) == {
        "f",
        "legacy_file",
        "modern_file",
        "j",
        "jd",
    }
    assert set(body) == {"multipart/form-data"}
    assert form["encoding"] == {
        "j": {"contentType": "application/json"},
        "jd": {"contentType": "application/json"},
    }
    assert "description" not in post
    params = {p["name"]: p["in"] for p in post["parameters"]}
    assert params["X-Token"] == "header"
    explode = {p["name"]: p.get("explode") for p in post["parameters"]}
    assert explode["ints"] is True and explode["csv"] is False
    assert "f" not in params and "j" not in params
