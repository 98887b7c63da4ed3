"""Structured arguments with no location (issue 15): a nested list, a Dict,
a Nested, a list of Nested. /openapi.json describes them in the request
body (JSON; with a file, a multipart form whose parts hold JSON text);
requests built from that document reach the plugin whole; bad JSON is a
4xx naming the argument. /swagger.json stays as DEEPaaS 2.6.0 wrote it.

The plugin is the documented example, ``deepaas_example.structured``
(docs/plugins.md), and ``structured_json``, the same without its file.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from deepaas.model.loading import PluginSpec
from tests.needs import needs
from tests.support import Client, MakeClient, plugin_spec, predict

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

WITH_FILE = "/v2/models/structured/predict/"
JSON_ONLY = "/v2/models/structured_json/predict/"
STRUCTURED = {"matrix", "options", "roi", "boxes"}

VALUES: dict[str, Any] = {
    "matrix": [[1.0, 2.0], [3.0, 4.5]],
    "options": {"mode": "fast", "levels": [1, 2], "nested": {"ok": True}},
    "roi": {"x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0},
    "boxes": [{"x": 0, "y": 0, "w": 1, "h": 2}, {"x": 5, "y": 5, "w": 2, "h": 2}],
    "scale": 2.0,
}
IMAGE = b"\x89PNG not really"
MISSING = "Missing data for required field."
EXPECTED = {
    "rows": 2,
    "sum": 21.0,
    "options": VALUES["options"],
    "roi_area": 12.0,
    "box_areas": [2.0, 4.0],
}


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client(
        [
            PluginSpec("structured", "deepaas_example.structured"),
            plugin_spec("structured_json"),
        ]
    )


@pytest_asyncio.fixture(loop_scope="module")
async def openapi(client: Client) -> dict[str, Any]:
    return await (await client.get("/openapi.json")).json()


@pytest_asyncio.fixture(loop_scope="module")
async def swagger(client: Client) -> dict[str, Any]:
    return await (await client.get("/swagger.json")).json()


# -- the documents -----------------------------------------------------------------


async def test_openapi_is_valid(openapi):
    validator = needs("openapi_spec_validator")
    assert list(validator.OpenAPIV31SpecValidator(openapi).iter_errors()) == []


async def test_with_a_file_they_are_json_parts_of_the_form(openapi):
    post = openapi["paths"][WITH_FILE]["post"]
    assert [p["name"] for p in post["parameters"]] == ["scale"]
    body = post["requestBody"]
    assert list(body["content"]) == ["multipart/form-data"]
    media = body["content"]["multipart/form-data"]
    assert set(media["schema"]["properties"]) == {*STRUCTURED, "image"}
    assert media["schema"]["required"] == ["matrix"]
    assert body["required"] is True
    assert media["encoding"] == {
        name: {"contentType": "application/json"} for name in STRUCTURED
    }
    props = media["schema"]["properties"]
    assert props["matrix"]["items"] == {"type": "array", "items": {"type": "number"}}
    assert props["roi"]["$ref"] == "#/components/schemas/Box"
    assert props["boxes"]["items"] == {"$ref": "#/components/schemas/Box"}
    assert props["image"]["format"] == "binary"


async def test_without_a_file_they_are_the_json_body(openapi):
    post = openapi["paths"][JSON_ONLY]["post"]
    assert [p["name"] for p in post["parameters"]] == ["scale"]
    content = post["requestBody"]["content"]
    assert list(content) == ["application/json"]
    assert set(content["application/json"]["schema"]["properties"]) == STRUCTURED


async def test_swagger_json_keeps_deepaas_2_parameters(swagger):
    """The Gradio UI reads /swagger.json: every argument stays a parameter
    of its own, as DEEPaaS 2.6.0 wrote it (no body parameter)."""
    post = swagger["paths"][WITH_FILE]["post"]
    where = {p["name"]: p["in"] for p in post["parameters"]}
    assert where == {
        "matrix": "query",
        "options": "query",
        "roi": "query",
        "boxes": "query",
        "scale": "query",
        "image": "formData",
    }
    matrix = next(p for p in post["parameters"] if p["name"] == "matrix")
    assert matrix["collectionFormat"] == "multi"
    assert matrix["items"]["type"] == "array"


# -- requests built from the document ------------------------------------------------


def request_from(
    openapi: dict[str, Any], path: str, values: dict[str, Any], files: dict[str, bytes]
) -> dict[str, Any]:
    """What a generated client sends: each value where the document puts
    it, encoded as its media type (and a part's encoding) says."""
    post = openapi["paths"][path]["post"]
    params = {
        p["name"]: str(values[p["name"]])
        for p in post.get("parameters", [])
        if p["name"] in values
    }
    content = post["requestBody"]["content"]
    placed = set(params)
    if "multipart/form-data" in content:
        media = content["multipart/form-data"]
        form = aiohttp.FormData()
        for name, prop in media["schema"]["properties"].items():
            if prop.get("format") == "binary" and name in files:
                form.add_field(name, files[name], filename=f"{name}.png")
            elif name in values:
                encoding = media.get("encoding", {}).get(name, {})
                assert encoding.get("contentType") == "application/json", name
                form.add_field(
                    name, json.dumps(values[name]), content_type="application/json"
                )
            else:
                continue
            placed.add(name)
        body: dict[str, Any] = {"data": form}
    else:
        schema = content["application/json"]["schema"]
        body = {"json": {k: values[k] for k in schema["properties"] if k in values}}
        placed |= set(body["json"])
    assert placed == set(values) | set(files), "the document left some out"
    return {"params": params, **body}


@pytest.mark.parametrize("with_file", [True, False])
async def test_a_request_built_from_the_document_reaches_the_plugin(
    client, openapi, with_file
):
    path = WITH_FILE if with_file else JSON_ONLY
    files = {"image": IMAGE} if with_file else {}
    got = await predict(
        client, path.split("/")[3], **request_from(openapi, path, VALUES, files)
    )
    image = {"name": "image.png", "bytes": len(IMAGE)} if with_file else None
    assert got["predictions"] == {**EXPECTED, "image": image}


async def test_json_body_with_a_file_form_alternative_is_the_same(client):
    """Without a file, the JSON body (the document's) and a form of JSON
    texts (curl -F) give the plugin the same values."""
    json_body = await predict(client, "structured", json=VALUES)
    form = aiohttp.FormData(default_to_multipart=True)
    for name in STRUCTURED:
        form.add_field(name, json.dumps(VALUES[name]))
    by_form = await predict(client, "structured", params={"scale": "2"}, data=form)
    assert json_body == by_form
    assert json_body["predictions"] == {**EXPECTED, "image": None}


@pytest.mark.parametrize(
    "texts",
    [
        ["[[1, 2], [3, 4.5]]"],  # one text: the whole matrix
        ["[1, 2]", "[3, 4.5]"],  # one row per text
        ["[[1, 2]]", "[3, 4.5]"],  # an array of rows, then a row
        ["1,2", "3,4.5"],  # /swagger.json's form (inner arrays are csv)
        ["1, 2", "[3, 4.5]"],
    ],
)
async def test_matrix_rows_in_a_query_string_or_form(client, texts):
    want = {"rows": 2, "sum": 10.5}
    for request in (
        {"params": [("matrix", text) for text in texts]},
        {"data": [("matrix", text) for text in texts]},
    ):
        got = (await predict(client, "structured_json", **request))["predictions"]
        assert {k: got[k] for k in want} == want, request


async def test_one_row_alone_is_a_matrix_of_one_row(client):
    for text in ("[1, 2]", "1,2", "3"):
        got = await predict(client, "structured_json", params={"matrix": text})
        assert got["predictions"]["rows"] == 1, text


async def test_a_row_that_is_no_numbers_is_marshmallows_422(client):
    body = await predict(client, "structured", expect=422, params={"matrix": "1,x"})
    assert body == {"matrix": {"0": {"1": ["Not a valid number."]}}}


async def test_requests_generated_from_the_document_by_schemathesis(client, openapi):
    """Schemathesis (a real client, hypothesis-driven) builds requests from
    the document's request bodies: multipart parts of JSON per the
    encoding, or a JSON body. Every one is answered without a 5xx; those
    with only the document's names reach the plugin whole."""
    schemathesis = needs("schemathesis")
    hypothesis = needs("hypothesis")
    schema = schemathesis.openapi.from_dict(openapi)
    base_url = str(client.make_url("")).rstrip("/")
    seen: list[tuple[int, str, bool]] = []

    def run(path: str) -> None:
        operation = schema[path]["POST"]

        @hypothesis.settings(
            max_examples=15,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        @hypothesis.given(operation.as_strategy())
        def send(case: Any) -> None:
            response = case.call(base_url=base_url, timeout=30)
            body = case.body if isinstance(case.body, dict) else {}
            known = set(body) <= STRUCTURED | {"image"}
            assert response.status_code < 500, response.text
            multipart = case.media_type == "multipart/form-data"
            if known and multipart and body.get("matrix") == []:
                # schemathesis sends no part for an empty array
                assert response.json() == {"matrix": [MISSING]}
            elif known:
                assert response.status_code == 200, (body, response.text)
                rows = response.json()["predictions"]["rows"]
                assert rows == len(body["matrix"])
            seen.append((response.status_code, case.media_type, known))

        send()

    await asyncio.to_thread(run, WITH_FILE)
    await asyncio.to_thread(run, JSON_ONLY)
    media_types = {media_type for status, media_type, _ in seen if status == 200}
    assert media_types == {"multipart/form-data", "application/json"}, seen


# -- bad input: a 4xx naming the argument ------------------------------------------


def form_of(**fields: str | bytes) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        if isinstance(value, bytes):
            form.add_field(name, value, filename=f"{name}.bin")
        else:
            form.add_field(name, value)
    return form


@pytest.mark.parametrize(
    ("request_kw", "message"),
    [
        ({"data": form_of(matrix="[[1, 2]", image=IMAGE)}, "Not valid JSON: "),
        ({"data": form_of(matrix="[[NaN]]")}, "Not valid JSON: "),
        ({"data": form_of(matrix=b"[[1]]")}, "Not JSON text: "),
        ({"params": {"matrix": "[[1,"}}, "Not valid JSON: "),
        ({"data": {"matrix": "{"}}, "Not valid JSON: "),  # urlencoded
        ({"params": {"matrix": "[" * 200 + "]" * 200}}, "Not valid JSON: "),
    ],
)
async def test_bad_json_text_is_a_422_naming_the_argument(client, request_kw, message):
    body = await predict(client, "structured", expect=422, **request_kw)
    assert list(body) == ["matrix"], body
    assert body["matrix"][0].startswith(message), body


async def test_json_of_the_wrong_shape_is_marshmallows_422(client):
    form = form_of(matrix='[[1, "a"]]', roi='{"x": 1}', boxes='{"x": 1}')
    body = await predict(client, "structured", expect=422, data=form)
    assert body["matrix"] == {"0": {"1": ["Not a valid number."]}}
    assert body["roi"]["w"] == ["Missing data for required field."]
    assert set(body) == {"matrix", "roi", "boxes"}


async def test_a_bad_json_body_is_a_400(client):
    response = await client.post(
        JSON_ONLY,
        data=b'{"matrix": [[1, 2]',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 400
    assert (await response.json())["message"].startswith("invalid JSON body")
