"""Every route and status of the contract's section 2."""

from __future__ import annotations

import uuid

import pytest
from yarl import URL

from tests.support import (
    CAPTURE,
    DEMO,
    DEMO_CLASS,
    MakeClient,
    plugin_spec,
    predict,
    wait_for,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

VERSIONS = {
    "versions": [
        {
            "version": "stable",
            "id": "v2",
            "links": [{"rel": "self", "type": "application/json", "href": "/v2/"}],
        }
    ],
    "links": [
        {"rel": "help", "type": "text/html", "href": "/api"},
        {"rel": "describedby", "type": "application/json", "href": "/swagger.json"},
        {"rel": "related", "type": "text/html", "href": "/ui/trainings"},
    ],
}
V2 = {
    "version": "stable",
    "id": "v2",
    "links": [{"rel": "self", "type": "application/json", "href": "/v2/"}],
}


async def get_json(client, path, status=200):
    response = await client.get(path, allow_redirects=False)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


# -- versions, docs ----------------------------------------------------------


async def test_versions_document(demo_client):
    assert await get_json(demo_client, "/") == VERSIONS


async def test_versions_document_without_docs(make_client: MakeClient):
    client = await make_client(doc_endpoint=False)
    expected = {**VERSIONS, "links": VERSIONS["links"][1:2]}
    assert await get_json(client, "/") == expected


async def test_ui_redirects_to_api(demo_client):
    response = await demo_client.get("/ui", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/api"


async def test_api_page_uses_local_assets(demo_client):
    response = await demo_client.get("/api")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert '"/swagger.json"' in page
    assets = [
        "/swagger-ui/swagger-ui.css",
        "/swagger-ui/swagger-ui-bundle.js",
        "/swagger-ui/swagger-ui-standalone-preset.js",
    ]
    for asset in assets:
        assert asset in page
        response = await demo_client.get(asset)
        assert response.status == 200, asset
        assert len(await response.read()) > 1000
    assert "unpkg.com" not in page and "cdn" not in page.lower()


@pytest.mark.parametrize(
    "name", ["nope.js", "swagger-ui.css%00", "..%2Findex.html", "%2e%2e"]
)
async def test_a_swagger_ui_asset_not_there_is_a_json_404(demo_client, name):
    """aiohttp's static files answered a missing one with an empty 404."""
    response = await demo_client.get(
        URL(f"/swagger-ui/{name}", encoded=True), allow_redirects=False
    )
    assert response.status == 404
    assert response.content_type == "application/json"
    assert "message" in await response.json()


async def test_a_swagger_ui_asset_answers_head_and_conditional_requests(demo_client):
    response = await demo_client.head("/swagger-ui/swagger-ui.css")
    assert response.status == 200
    etag = response.headers["ETag"]
    response = await demo_client.get(
        "/swagger-ui/swagger-ui.css", headers={"If-None-Match": etag}
    )
    assert response.status == 304


@pytest.mark.parametrize("path", ["/api", "/ui", "/swagger-ui/swagger-ui.css"])
async def test_docs_off_answers_404(make_client: MakeClient, path):
    client = await make_client(doc_endpoint=False)
    body = await get_json(client, path, status=404)
    assert "message" in body


@pytest.mark.parametrize("docs", [True, False])
async def test_spec_documents_always_served(make_client: MakeClient, docs):
    client = await make_client(doc_endpoint=docs)
    assert (await get_json(client, "/swagger.json"))["swagger"] == "2.0"
    assert (await get_json(client, "/openapi.json"))["openapi"].startswith("3.1")


async def test_v2_document(demo_client):
    assert await get_json(demo_client, "/v2/") == V2


# -- debug -------------------------------------------------------------------


async def test_debug_off_is_204(demo_client):
    response = await demo_client.get("/v2/debug/")
    assert response.status == 204
    assert await response.read() == b""


async def test_debug_on_shows_worker_output(make_client: MakeClient):
    client = await make_client([plugin_spec("outcomes")], debug_endpoint=True)
    marker = uuid.uuid4().hex
    body = await predict(client, "outcomes", params={"mode": "print", "marker": marker})
    assert body == {"status": "OK", "predictions": {"printed": marker}}

    async def marker_shown() -> bool:
        response = await client.get("/v2/debug/")
        assert response.status == 200
        assert response.content_type == "text/plain"
        return f"printed {marker}" in await response.text()

    assert await wait_for(marker_shown)
    assert f"printed {marker}" in client.app[CAPTURE].getvalue()


async def test_debug_shows_a_log_record_holding_a_lone_surrogate(
    make_client: MakeClient,
):
    """A model's error message may hold a lone surrogate (a JSON body's
    ``"\\ud800"``, a header's byte that is no UTF-8): the log record of
    its 500 is written with it escaped, and /v2/debug/ still answers (its
    text could not be encoded: a 500 until the capture dropped the record)."""
    client = await make_client([plugin_spec("outcomes")], debug_endpoint=True)
    response = await client.post(
        "/v2/models/outcomes/predict/",
        data=b'{"mode": "label", "marker": "\\ud800 end"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 500
    assert "unknown label" in (await response.json())["message"]

    async def record_shown() -> bool:
        response = await client.get("/v2/debug/")
        assert response.status == 200, await response.text()
        return "unknown label \\ud800 end" in await response.text()

    assert await wait_for(record_shown)


# -- models ------------------------------------------------------------------


async def test_models_list(demo_client):
    body = await get_json(demo_client, "/v2/models/")
    models = body["models"]
    assert [m["id"] for m in models] == ["demo", "demo_class"]
    demo = models[0]
    assert demo["links"] == [{"rel": "self", "href": "/v2/models/demo"}]
    assert demo["tags"] == ["example", "demo"]  # extra keys pass through
    assert demo["author"] == "deepaas developers"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_models_list_other_methods_405(demo_client, method):
    response = await demo_client.request(method, "/v2/models/")
    assert response.status == 405
    assert response.content_type == "application/json"
    assert "message" in await response.json()
    assert "GET" in response.headers["Allow"]


async def test_model_document_is_merged_metadata(demo_client):
    body = await get_json(demo_client, "/v2/models/demo_class/")
    assert body == {
        "id": "demo_class",
        "name": "demo_class",
        "links": [{"rel": "self", "href": "/v2/models/demo_class"}],
        "description": "Example class-based plugin that upper-cases a string.",
        "author": "deepaas developers",
        "version": "1.0.0",
        "license": "Apache-2.0",
    }


async def test_model_keys_win_and_extras_pass(make_client: MakeClient):
    client = await make_client([plugin_spec("named", "outcomes")])
    body = await get_json(client, "/v2/models/named/")
    assert body == {
        "id": "outcomes-id",  # the model's key wins over the entry-point name
        "name": "named",
        "links": [{"rel": "self", "href": "/v2/models/named"}],
        "extra": {"nested": [1, 2]},
    }


@pytest.mark.parametrize("plugin", ["bare", "abstract_only:Model"])
async def test_fallback_metadata(make_client: MakeClient, plugin):
    client = await make_client([plugin_spec("nometa", plugin)])
    fallback = {
        "id": "0",
        "name": "nometa",
        "links": [{"rel": "self", "href": "/v2/models/nometa"}],
        "description": (
            "Could not load description from underlying model (loaded 'nometa')"
        ),
    }
    assert await get_json(client, "/v2/models/nometa/") == fallback
    assert (await get_json(client, "/v2/models/"))["models"] == [fallback]


@pytest.mark.parametrize(
    "path", ["/v2/models/nope/", "/v2/models/nope/predict/", "/v2/models/demo2/"]
)
async def test_unknown_model_404(demo_client, path):
    for method in ("GET", "POST"):
        response = await demo_client.request(method, path)
        assert response.status == 404
        body = await response.json()
        assert "nope" in body["message"] or "demo2" in body["message"]


@pytest.mark.parametrize(
    "path", ["/nope", "/v3/", "/v2/models/demo/nope/", "/v2/debug/x/", "/api/x"]
)
async def test_unknown_path_404(demo_client, path):
    body = await get_json(demo_client, path, status=404)
    assert body == {
        "message": f"no route GET {path}: the routes are listed in /openapi.json"
    }


async def test_unknown_path_under_a_model_404_in_oip_words(demo_client):
    """``/v2/models/{m}/...`` without a trailing slash is the Open Inference
    Protocol's: its 404 is ``{"error": ...}``, and as helpful."""
    path = "/v2/models/demo/metrics"
    body = await get_json(demo_client, path, status=404)
    assert body == {
        "error": f"no route GET {path}: the routes are listed in /openapi.json"
    }


# -- slashes, methods ---------------------------------------------------------


# /v2 and /v2/models/{m}, without the slash, are Open Inference Protocol
# routes now (tests/oip/test_routes.py), no longer redirected.
@pytest.mark.parametrize("path", ["/v2/models", "/v2/debug", "/v2/models/demo/predict"])
async def test_missing_trailing_slash_is_308(demo_client, path):
    response = await demo_client.get(path + "?a=1", allow_redirects=False)
    assert response.status == 308
    assert response.headers["Location"] == path + "/?a=1"
    assert response.content_type == "application/json"


async def test_308_keeps_the_method_and_body(demo_client):
    path = "/v2/models/demo_class/predict"
    response = await demo_client.post(path, json={"data": "abc"}, allow_redirects=False)
    assert response.status == 308
    location = response.headers["Location"]
    assert location == path + "/"
    body = await predict(demo_client, "demo_class", json={"data": "abc"})
    response = await demo_client.post(location, json={"data": "abc"})
    assert response.status == 200
    assert await response.json() == body
    assert body["upper"] == "ABC"
    # and aiohttp's client follows a 308 itself, keeping POST and the body
    response = await demo_client.post(path, json={"data": "xyz"})
    assert response.status == 200
    assert (await response.json())["upper"] == "XYZ"
    assert response.history and response.history[0].status == 308


@pytest.mark.parametrize(
    "path",
    ["/", "/v2/", "/v2/models/", "/v2/models/demo/", "/swagger.json", "/api"],
)
async def test_head_is_405(demo_client, path):
    response = await demo_client.head(path)
    assert response.status == 405


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"]
)
async def test_probes_answer_head_too(demo_client, path):
    """Some probes and load balancers check with HEAD: the status GET
    answers, no body."""

    async def ready() -> bool:
        return (await demo_client.get("/readyz")).status == 200

    assert await wait_for(ready, 30)  # the workers warm
    response = await demo_client.head(path)
    assert response.status == 200
    assert await response.read() == b""


@pytest.mark.parametrize(
    "path",
    [
        "/v2",
        "/v2/models/demo",
        "/v2/models/demo/versions/1",
        "/v2/models/demo/ready",
        "/v2/models/demo/versions/1/ready",
    ],
)
async def test_oip_get_routes_answer_head_too(demo_client, path):
    """RFC 9110: HEAD wherever GET is served. The OIP GET routes answered
    405 (only /v2/health/ready took HEAD); now the status and headers of
    their GET, no body. The DEEPaaS routes keep their 405 (above)."""

    async def ready() -> bool:
        return (await demo_client.get("/v2/models/demo/ready")).status == 200

    assert await wait_for(ready, 30)  # the workers warm
    got = await demo_client.get(path)
    response = await demo_client.head(path)
    assert (response.status, got.status) == (200, 200)
    assert await response.read() == b""
    assert response.headers["Content-Type"] == got.headers["Content-Type"]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/nope/versions/1",
        "/v2/models/nope/versions/1/ready",
    ],
)
async def test_head_of_an_unknown_model_is_404_without_a_body(demo_client, path):
    """HEAD /v2/models/nope answered 405, as if the route did not take
    HEAD, not 404 as its GET does."""
    assert (await demo_client.get(path)).status == 404
    response = await demo_client.head(path)
    assert response.status == 404
    assert await response.read() == b""


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_predict_wrong_method_405(demo_client, method):
    response = await demo_client.request(method, "/v2/models/demo/predict/")
    assert response.status == 405
    assert "message" in await response.json()
    assert response.headers["Allow"] == "POST"


# -- base path -----------------------------------------------------------------


@pytest.mark.parametrize("base_path", ["/foo", "/foo/"])
async def test_base_path(make_client: MakeClient, base_path):
    client = await make_client(base_path=base_path)
    body = await get_json(client, "/foo/")
    assert body["versions"][0]["links"][0]["href"] == "/foo/v2/"
    hrefs = [link["href"] for link in body["links"]]
    assert hrefs == ["/foo/api", "/foo/swagger.json", "/foo/ui/trainings"]
    assert (await get_json(client, "/foo/v2/"))["links"][0]["href"] == "/foo/v2/"
    models = (await get_json(client, "/foo/v2/models/"))["models"]
    assert models[0]["links"][0]["href"] == "/foo/v2/models/demo"
    model = await get_json(client, "/foo/v2/models/demo/")
    assert model["links"][0]["href"] == "/foo/v2/models/demo"
    result = await predict(client, "demo", expect=404)  # without the prefix
    assert result == {
        "message": "no route POST /v2/models/demo/predict/: the routes are "
        "listed in /foo/openapi.json"
    }
    response = await client.post(
        "/foo/v2/models/demo_class/predict/", params={"data": "a"}
    )
    assert response.status == 200
    assert (await response.json())["upper"] == "A"
    response = await client.get("/foo/ui", allow_redirects=False)
    assert response.headers["Location"] == "/foo/api"
    page = await (await client.get("/foo/api")).text()
    assert '"/foo/swagger.json"' in page and "/foo/swagger-ui/swagger-ui.css" in page
    assert (await client.get("/foo/swagger-ui/swagger-ui.css")).status == 200
    assert (await client.get("/foo/v2/debug/")).status == 204
    spec = await get_json(client, "/foo/swagger.json")
    assert all(path.startswith("/foo/") for path in spec["paths"])
    assert "/foo/v2/models/demo/predict/" in spec["paths"]
    openapi = await get_json(client, "/foo/openapi.json")
    # /openapi.json has the OIP routes too (under their tag), swagger.json not
    extra = set(openapi["paths"]) - set(spec["paths"])
    assert set(spec["paths"]) <= set(openapi["paths"])
    assert "/foo/v2/models/demo/infer" in extra
    for path in extra:
        assert path.startswith("/foo/v2")
        for operation in openapi["paths"][path].values():
            assert operation["tags"] == ["Open Inference Protocol"]
    for path in ("/", "/v2/", "/v2/models/", "/swagger.json", "/api"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 404, path
    response = await client.get("/foo/v2/models", allow_redirects=False)
    assert response.status == 308
    assert response.headers["Location"] == "/foo/v2/models/"
    # /foo/v2 (no slash) is the Open Inference Protocol's server metadata
    assert (await get_json(client, "/foo/v2"))["name"] == "deepaas"


# -- disabled and missing predict ----------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
async def test_predict_disabled_is_402(make_client: MakeClient, method):
    client = await make_client(predict_endpoint=False)
    for model in ("demo", "demo_class"):
        response = await client.request(method, f"/v2/models/{model}/predict/")
        assert response.status == 402
        assert response.content_type == "application/json"
        assert "disabled" in (await response.json())["message"]


async def test_predict_disabled_is_gone_from_the_spec(make_client: MakeClient):
    client = await make_client(predict_endpoint=False)
    for document in ("/swagger.json", "/openapi.json"):
        spec = await get_json(client, document)
        assert not any("predict" in path for path in spec["paths"])
        assert "/v2/models/demo/" in spec["paths"]
    # the model routes stay
    assert (await get_json(client, "/v2/models/demo/"))["id"] == "demo"


@pytest.mark.parametrize("plugin", ["bare", "abstract_only:Model"])
async def test_plugin_without_predict_is_501(make_client: MakeClient, plugin):
    client = await make_client([plugin_spec("nometa", plugin)])
    body = await predict(client, "nometa", expect=501)
    assert set(body) == {"message"}
    assert body["message"]


async def test_both_models_served_independently(make_client: MakeClient):
    client = await make_client([DEMO_CLASS, DEMO])
    body = await get_json(client, "/v2/models/")
    assert [m["id"] for m in body["models"]] == ["demo_class", "demo"]
