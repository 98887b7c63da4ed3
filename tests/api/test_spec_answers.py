"""What the spec documents say of bodies and answers (issue 8, points 2-5).

Each route's answers are validated against the schema both documents give
them, so a client generated from either decodes them into typed objects;
binary answers are strings, not JSON; Swagger 2.0 parameters and dicts are
written as DEEPaaS 2.6.0 wrote them; a route with files describes its form
alone (openapi-generator's clients pick a JSON body when one is offered, and
drop the files).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.needs import needs
from tests.support import DEMO, DEMO_SPECS, Client, MakeClient, plugin_spec, wait_for

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

PLUGINS = [*DEMO_SPECS, plugin_spec("outcomes"), plugin_spec("spec_shapes")]
SHAPES_PREDICT = "/v2/models/spec_shapes/predict/"
SHAPES_TRAIN = "/v2/models/spec_shapes/train/"


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client(PLUGINS)


async def get_json(client: Client, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status == 200
    return await response.json()


@pytest_asyncio.fixture(loop_scope="module")
async def swagger(client: Client) -> dict[str, Any]:
    return await get_json(client, "/swagger.json")


@pytest_asyncio.fixture(loop_scope="module")
async def openapi(client: Client) -> dict[str, Any]:
    return await get_json(client, "/openapi.json")


def meta_validator(version: str) -> Any:
    definitions = needs("schemathesis.specs.openapi.definitions")
    name = {"2.0": "SWAGGER_20_VALIDATOR", "3.1": "OPENAPI_31_VALIDATOR"}[version]
    return getattr(definitions, name)


def _x_nullable_as_null(node: Any) -> Any:
    """Swagger 2.0's ``x-nullable`` as JSON Schema's null type."""
    if isinstance(node, list):
        return [_x_nullable_as_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _x_nullable_as_null(value) for key, value in node.items()}
    if node.pop("x-nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    return node


def errors_against(spec: dict[str, Any], schema: dict[str, Any], value: Any) -> list:
    """Where ``value`` breaks ``schema`` (refs resolved in ``spec``)."""
    jsonschema_rs = needs("jsonschema_rs")
    if "swagger" in spec:
        root = {"definitions": _x_nullable_as_null(spec["definitions"])}
        validator = jsonschema_rs.Draft4Validator({**root, **schema})
    else:
        root = {"components": spec["components"]}
        validator = jsonschema_rs.Draft202012Validator({**root, **schema})
    return [error.message for error in validator.iter_errors(value)]


def answer_schema(spec: dict[str, Any], path: str, method: str, status: int) -> Any:
    response = spec["paths"][path][method]["responses"][str(status)]
    if "swagger" in spec:
        return response["schema"]
    return response["content"]["application/json"]["schema"]


def resolve(spec: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def params_of(spec: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in spec["paths"][path]["post"].get("parameters", [])}


def walk(node: Any) -> Any:
    """Every dict in a document."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


# -- both documents stay valid with these shapes ----------------------------------


async def test_documents_valid(swagger, openapi):
    assert list(meta_validator("2.0").iter_errors(swagger)) == []
    assert list(meta_validator("3.1").iter_errors(openapi)) == []


# -- point 4: every route's answer has its schema, and the answers match it -------


LISTING_ROUTES = {
    "/": "Versions",
    "/v2/": "Version",
    "/v2/models/": "Models",
    "/v2/models/demo/": "ModelMeta",
    "/v2/models/spec_shapes/": "ModelMeta",
}


@pytest.mark.parametrize("path", list(LISTING_ROUTES))
async def test_listing_answers_match_their_schemas(client, swagger, openapi, path):
    answer = await get_json(client, path)
    name = LISTING_ROUTES[path]
    for spec in (swagger, openapi):
        schema = answer_schema(spec, path, "get", 200)
        assert schema["$ref"].endswith(f"/{name}")
        assert errors_against(spec, schema, answer) == []


async def test_listing_schemas_are_typed(swagger, openapi):
    for spec in (swagger, openapi):
        schemas = spec["definitions"] if "swagger" in spec else spec["components"]
        schemas = schemas if "swagger" in spec else schemas["schemas"]
        models = schemas["Models"]
        assert models["required"] == ["models"]
        assert models["properties"]["models"]["items"]["$ref"].endswith("/ModelMeta")
        meta = schemas["ModelMeta"]
        assert meta["properties"]["id"]["type"] == "string"
        assert meta["properties"]["name"]["type"] == "string"
        assert meta["required"] == ["id", "name", "links"]
        assert meta["additionalProperties"] is True  # metadata keys pass through
        # a model link has no "type": not required (2.6.0 required it)
        assert schemas["Location"]["required"] == ["rel", "href"]
        assert schemas["Versions"]["required"] == ["versions", "links"]
        assert schemas["Version"]["properties"]["links"]["type"] == "array"
    # 3.1: metadata values of any JSON type (the AI4OS template's author is a
    # list); 2.0 names them in the description, since openapi-generator reads
    # an untyped 2.0 value as an object and rejects a string there
    meta = openapi["components"]["schemas"]["ModelMeta"]["properties"]
    assert meta["author"] == {"description": "Who made it: a string, or a list"}
    meta = swagger["definitions"]["ModelMeta"]
    assert set(meta["properties"]) == {"id", "name", "links"}
    assert "author (Who made it: a string, or a list)" in meta["description"]


async def test_metadata_of_any_type_validates(swagger, openapi):
    document = {
        "id": "m",
        "name": "m",
        "links": [{"rel": "self", "href": "/v2/models/m"}],
        "author": ["A", "B"],
        "license": None,
        "description": {"short": "x"},
    }
    for spec in (swagger, openapi):
        schema = {"$ref": answer_schema(spec, "/v2/models/demo/", "get", 200)["$ref"]}
        assert errors_against(spec, schema, document) == []


async def test_training_answers_match_their_schemas(client, swagger, openapi):
    response = await client.post(SHAPES_TRAIN, json={"config": {"k": 1}})
    assert response.status == 200
    started = await response.json()
    one = f"{SHAPES_TRAIN}{{uuid}}"
    url = f"{SHAPES_TRAIN}{started['uuid']}"

    async def done() -> bool:
        return (await get_json(client, url))["status"] == "done"

    assert await wait_for(done, 30)
    finished = await get_json(client, url)
    assert finished["result"]["output"] == {
        "trained": {"config": {"k": 1}, "epochs": 1}
    }
    listed = await (await client.get(SHAPES_TRAIN)).json()
    deleted = await (await client.delete(url)).json()
    curves = await get_json(client, url + "/metrics")
    answers = [
        (SHAPES_TRAIN, "post", "Training", started),
        (SHAPES_TRAIN, "get", "TrainingList", listed),
        (one, "get", "Training", finished),
        (one, "delete", "Training", deleted),
        (one + "/metrics", "get", "TrainingMetrics", curves),
        # one that reported: numbers, a gap, text, an ETA
        (
            one + "/metrics",
            "get",
            "TrainingMetrics",
            {
                **curves,
                "status": "running",
                "x": "step",
                "series": {"loss": [[1, 0.5], [2, None]], "lr": [[None, 0.1]]},
                "text": {"phase": [[1, "warmup"]]},
                "cursor": 2,
                "reports": 2,
                "eta_seconds": 12.5,
            },
        ),
    ]
    for spec in (swagger, openapi):
        for path, method, name, answer in answers:
            schema = answer_schema(spec, path, method, 200)
            assert schema["$ref"].endswith(f"/{name}"), (path, method)
            assert errors_against(spec, schema, answer) == [], (path, method)
        training = resolve(spec, answer_schema(spec, one, "get", 200)["$ref"])
        assert training["required"] == ["uuid", "date", "args", "status"]
        assert training["properties"]["status"]["enum"] == [
            "queued",
            "running",
            "done",
            "error",
            "cancelled",
        ]
    # a queued record has no start date yet
    assert started["start_time"].endswith("Z")  # the instant, in UTC
    queued = {**started, "status": "queued", "start_date": None, "start_time": None}
    for spec in (swagger, openapi):
        schema = answer_schema(spec, one, "get", 200)
        assert errors_against(spec, schema, queued) == []


async def test_plugin_schema_named_like_ours_keeps_both(swagger, openapi):
    # the plugin's schema class is called Training: deepaas's Training stays
    for spec in (swagger, openapi):
        schema = answer_schema(spec, SHAPES_TRAIN + "{uuid}", "get", 200)
        assert "uuid" in resolve(spec, schema["$ref"])["properties"]
    # the plugin's under another name (documented, though this model answers
    # binary types only)
    theirs = swagger["definitions"]["predict_spec_shapes_Training"]
    assert set(theirs["properties"]) == {"counts", "free", "anything"}
    theirs = openapi["components"]["schemas"]["predict_spec_shapes_Training"]
    assert set(theirs["properties"]) == {"counts", "free", "anything"}


async def test_422_is_marshmallows_messages(client, swagger, openapi):
    response = await client.post("/v2/models/demo/predict/?number=1000")
    assert response.status == 422
    answer = await response.json()
    assert answer == {
        "number": ["Must be greater than or equal to 0 and less than or equal to 100."]
    }
    for spec in (swagger, openapi):
        for path in ("/v2/models/demo/predict/", "/v2/models/demo/train/"):
            schema = answer_schema(spec, path, "post", 422)
            assert schema["$ref"].endswith("/ValidationErrors"), path
            assert errors_against(spec, schema, answer) == []
            assert resolve(spec, schema["$ref"])["example"] == {
                "data": ["Missing data for required field."]
            }
            # other errors: {"message": ...}
            schema = answer_schema(
                spec, path, "post", 500 if "predict" in path else 503
            )
            assert schema["$ref"].endswith("/Failure")


async def test_other_errors_match_failure(client, swagger, openapi):
    response = await client.get(f"{SHAPES_TRAIN}{'0' * 32}")
    assert response.status == 404
    answer = await response.json()
    for spec in (swagger, openapi):
        schema = answer_schema(spec, SHAPES_TRAIN + "{uuid}", "get", 404)
        assert errors_against(spec, schema, answer) == []
        assert resolve(spec, schema["$ref"])["required"] == ["message"]


async def test_predictions_match_their_schemas(client, swagger, openapi):
    # the wrapper, with predictions of any type (here a list)
    response = await client.post("/v2/models/outcomes/predict/")
    assert response.status == 200
    wrapped = await response.json()
    assert set(wrapped) == {"status", "predictions"}
    for spec in (swagger, openapi):
        schema = answer_schema(spec, "/v2/models/outcomes/predict/", "post", 200)
        assert errors_against(spec, schema, wrapped) == []
        for value in ([1, 2], "text", None, {"k": "v"}):
            answer = {"status": "OK", "predictions": value}
            assert errors_against(spec, schema, answer) == []


async def test_binary_and_text_answers_are_not_json(client, swagger, openapi):
    content = openapi["paths"][SHAPES_PREDICT]["post"]["responses"]["200"]["content"]
    assert content == {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "application/zip": {"schema": {"type": "string", "format": "binary"}},
    }
    # Swagger 2.0 has one 200 schema: a file when no JSON can come back
    response = swagger["paths"][SHAPES_PREDICT]["post"]["responses"]["200"]
    assert response["schema"] == {"type": "file"}
    assert swagger["paths"][SHAPES_PREDICT]["post"]["produces"] == [
        "image/png",
        "application/zip",
        "*/*",
    ]
    # text: the debug output and a training's log
    logs = SHAPES_TRAIN + "{uuid}/logs"
    for path in ("/v2/debug/", logs):
        answer = openapi["paths"][path]["get"]["responses"]["200"]["content"]
        assert answer == {"text/plain": {"schema": {"type": "string"}}}
        answer = swagger["paths"][path]["get"]["responses"]["200"]
        assert answer["schema"] == {"type": "string"}
    # and the answer is indeed the PNG
    form = aiohttp.FormData()
    form.add_field("image", b"img", filename="a.png")
    response = await client.post(SHAPES_PREDICT, data=form)
    assert response.status == 200
    assert response.content_type == "image/png"


async def test_unused_schemas_left_out(make_client: MakeClient):
    # both demo models have a schema: no wrapper; training off: no records
    client = await make_client([DEMO], train_endpoint=False)
    for path, key in (("/swagger.json", "definitions"), ("/openapi.json", None)):
        spec = await get_json(client, path)
        schemas = spec[key] if key else spec["components"]["schemas"]
        assert "Prediction" not in schemas
        assert not {"Training", "TrainingList", "TrainingResult"} & set(schemas)
        assert {"Models", "ModelMeta", "Location", "Failure"} <= set(schemas)


# -- point 2: dicts in Swagger 2.0 ------------------------------------------------


async def test_swagger_dicts_are_plain_objects(swagger, openapi):
    demo = swagger["definitions"]["ModelPredictionResponse"]["properties"]
    assert demo["args"] == {"type": "object"}  # as 2.6.0 wrote it
    shapes = swagger["definitions"]["predict_spec_shapes_Training"]["properties"]
    assert shapes["free"] == {"type": "object"}
    # a dict with typed values keeps them
    assert shapes["counts"] == {
        "type": "object",
        "additionalProperties": {"type": "integer", "format": "int32"},
    }
    # nowhere an empty additionalProperties (openapi-generator reads it as
    # "every value is an object" and rejects the answers)
    for node in walk(swagger):
        assert node.get("additionalProperties") != {}, node
    # 3.1 tools read {} as "any value": kept there
    demo = openapi["components"]["schemas"]["ModelPredictionResponse"]["properties"]
    assert demo["args"] == {"type": "object", "additionalProperties": {}}


# -- point 5: Swagger 2.0 parameters as 2.6.0 wrote them --------------------------


async def test_swagger_parameters_as_deepaas_2_6(swagger, openapi):
    params = params_of(swagger, SHAPES_PREDICT)
    assert params["scale"]["format"] == "double"  # the plugin's own format wins
    assert params["limit"] == {
        "name": "limit",
        "in": "query",
        "required": False,
        "type": "integer",
        "format": "int32",
        "default": None,
        "x-nullable": True,
    }
    assert params["label"]["default"] is None
    assert params["label"]["x-nullable"] is True
    # a file without missing=None: no default, not nullable
    assert params["image"] == {
        "name": "image",
        "in": "formData",
        "required": False,
        "type": "file",
    }
    # the demo's train arguments as 2.6.0 wrote them, plus deepaas_gpus
    train = params_of(swagger, "/v2/models/demo/train/")
    assert train["epochs"] == {
        "name": "epochs",
        "in": "query",
        "required": False,
        "type": "integer",
        "format": "int32",
        "default": 1,
        "minimum": 1,
        "description": "Number of epochs",
    }
    assert train["lr"]["format"] == "float"
    assert "default" not in train["deepaas_gpus"]  # no null: not Swagger 2.0
    # 3.1: no formats added, and missing=None is "optional", not a null default
    post = openapi["paths"][SHAPES_PREDICT]["post"]
    params = {p["name"]: p for p in post["parameters"]}
    assert params["limit"]["schema"] == {"type": ["integer", "null"]}
    assert "default" not in params["label"]["schema"]


# -- point 3: a body with files is the form alone ----------------------------------


async def test_form_alone_when_files_and_json_fields(swagger, openapi):
    post = openapi["paths"][SHAPES_PREDICT]["post"]
    assert set(post["requestBody"]["content"]) == {"multipart/form-data"}
    media = post["requestBody"]["content"]["multipart/form-data"]
    # the JSON-body field is a part of the form, holding JSON text
    assert media["schema"]["properties"]["image"] == {
        "type": "string",
        "format": "binary",
    }
    assert media["schema"]["properties"]["options"]["type"] == "object"
    assert media["encoding"] == {"options": {"contentType": "application/json"}}
    assert "description" not in post
    # Swagger 2.0 cannot describe it: left out, named in the description
    description = swagger["paths"][SHAPES_PREDICT]["post"]["description"]
    assert "(options)" in description
    assert "form field holding its value as JSON text" in description
    assert "options" not in params_of(swagger, SHAPES_PREDICT)
    assert swagger["paths"][SHAPES_PREDICT]["post"]["consumes"] == [
        "multipart/form-data"
    ]


async def test_json_field_sent_as_a_form_part_beside_a_file(client):
    """What the 3.1 document describes, as generated clients send it."""
    form = aiohttp.FormData()
    form.add_field("image", b"\x89PNG fake", filename="a.png")
    form.add_field("options", '{"a": [1, 2]}', content_type="application/json")
    response = await client.post(SHAPES_PREDICT, data=form)
    assert response.status == 200, await response.text()
    for bad, message in [
        ('{"a": ', "Not valid JSON: Expecting value"),
        ('{"a": NaN}', "Not valid JSON: this JSON text contains NaN"),
        ('"a string"', "Not a valid mapping type."),
    ]:
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("options", bad)
        response = await client.post(SHAPES_PREDICT, data=form)
        assert response.status == 422, bad
        [got] = (await response.json())["options"]
        assert got.startswith(message), (bad, got)
    form = aiohttp.FormData()
    form.add_field("options", b"{}", filename="options.json")
    response = await client.post(SHAPES_PREDICT, data=form)
    assert response.status == 422
    assert (await response.json())["options"][0].startswith("Not JSON text")


async def test_json_body_when_no_form(swagger, openapi):
    # train of spec_shapes: a JSON-body field and no form field
    post = openapi["paths"][SHAPES_TRAIN]["post"]
    content = post["requestBody"]["content"]
    assert list(content) == ["application/json"]
    assert set(content["application/json"]["schema"]["properties"]) == {"config"}
    assert "description" not in post
    params = params_of(swagger, SHAPES_TRAIN)
    assert params["body"]["in"] == "body"
    assert set(params["body"]["schema"]["properties"]) == {"config"}


async def test_json_field_sent_without_files_reaches_the_model(client):
    # what the description tells a client to do: the field is read (and
    # validated) from a JSON body
    response = await client.post(SHAPES_PREDICT, json={"options": "no dict"})
    assert response.status == 422
    assert await response.json() == {"options": ["Not a valid mapping type."]}
    response = await client.post(SHAPES_PREDICT, json={"options": {"a": 1}})
    assert response.status == 200
    assert (await response.read()).startswith(b"\x89PNG")
