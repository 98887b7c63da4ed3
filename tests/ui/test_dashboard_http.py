"""The dashboard's page and assets over plain HTTP: content types, the base
path, ``--nodoc-endpoint``, the links to it, and the vendored library."""

from __future__ import annotations

import fnmatch
import re
import sys
from pathlib import Path

import pytest

from deepaas.api import ui
from tests.support import DEMO, REPO_ROOT, Client, MakeClient, plugin_spec

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

pytestmark = pytest.mark.timeout(60)
ON_THE_LOOP = pytest.mark.asyncio(loop_scope="module")

SCRIPTS = ["app.js", "api.js", "charts.js", "form.js", "job.js", "list.js", "log.js"]
JS = ("text/javascript", "application/javascript")


@ON_THE_LOOP
async def test_the_page_and_its_assets_have_their_content_types(demo_client: Client):
    response = await demo_client.get("/ui/trainings")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.charset == "utf-8"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    page = await response.text()
    # relative URLs only: the page works under any base path
    assert 'src="static/app.js"' in page and 'href="static/uPlot.min.css"' in page
    assert not re.search(r'(src|href)="(/|https?:)', page), page
    for name in [*SCRIPTS, "uPlot.iife.min.js"]:
        asset = await demo_client.get(f"/ui/static/{name}")
        assert asset.status == 200, name
        assert asset.content_type in JS, (name, asset.content_type)
    for name in ("trainings.css", "uPlot.min.css"):
        asset = await demo_client.get(f"/ui/static/{name}")
        assert (asset.status, asset.content_type) == (200, "text/css"), name
    licence = await demo_client.get("/ui/static/uPlot.LICENSE")
    assert licence.status == 200
    assert "Permission is hereby granted" in await licence.text()  # MIT
    assert (await demo_client.get("/ui/static/nothing.js")).status == 404
    assert (await demo_client.get("/ui/static/..%2F__init__.py")).status == 404
    assert (await demo_client.get("/ui/static/")).status in (403, 404)  # no index


@ON_THE_LOOP
async def test_the_scripts_call_nothing_outside_the_server(demo_client: Client):
    for name in SCRIPTS:
        text = await (await demo_client.get(f"/ui/static/{name}")).text()
        assert not re.search(r"https?://", text), name
        assert "innerHTML" not in text, name  # server text is never HTML
        assert len(text.splitlines()) < 400, name


@ON_THE_LOOP
async def test_a_slash_after_the_page_redirects_to_it(demo_client: Client):
    response = await demo_client.get("/ui/trainings/", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/ui/trainings"


@ON_THE_LOOP
async def test_it_is_linked_from_the_versions_document_and_the_swagger_page(
    demo_client: Client,
):
    versions = await (await demo_client.get("/")).json()
    assert {"rel": "related", "type": "text/html", "href": "/ui/trainings"} in (
        versions["links"]
    )
    api = await (await demo_client.get("/api")).text()
    assert 'href="ui/trainings"' in api  # relative to /api: <base>/ui/trainings


@ON_THE_LOOP
async def test_under_a_base_path(make_client: MakeClient):
    client = await make_client([DEMO], base_path="/prefix")
    response = await client.get("/prefix/ui/trainings")
    assert response.status == 200 and response.content_type == "text/html"
    asset = await client.get("/prefix/ui/static/app.js")
    assert asset.status == 200 and asset.content_type in JS
    assert (await client.get("/ui/trainings")).status == 404
    versions = await (await client.get("/prefix/")).json()
    assert "/prefix/ui/trainings" in [link["href"] for link in versions["links"]]


@ON_THE_LOOP
async def test_off_with_nodoc_endpoint(make_client: MakeClient):
    client = await make_client([DEMO], doc_endpoint=False)
    for path in ("/ui/trainings", "/ui/trainings/", "/ui/static/app.js"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 404, path
    versions = await (await client.get("/")).json()
    assert "/ui/trainings" not in [link["href"] for link in versions["links"]]


@ON_THE_LOOP
async def test_with_tokens_the_page_is_open_and_its_api_calls_are_not(
    make_client: MakeClient,
):
    client = await make_client([DEMO], auth_tokens="t-secret train")
    assert (await client.get("/ui/trainings")).status == 200
    assert (await client.get("/ui/static/app.js")).status == 200
    assert (await client.get("/openapi.json")).status == 200  # the form's source
    assert (await client.get("/v2/models/demo/train/")).status == 401
    authorized = {"Authorization": "Bearer t-secret"}
    listing = await client.get("/v2/models/demo/train/", headers=authorized)
    assert listing.status == 200


def test_every_file_of_the_page_is_package_data():
    """pyproject's package-data takes every file the page serves into the
    wheel (setuptools takes no non-Python file unless told)."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["deepaas.api.ui"]
    here = Path(ui.__file__).parent
    files = [
        str(path.relative_to(here))
        for path in here.rglob("*")
        if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts
    ]
    assert "trainings.html" in files and "static/uPlot.LICENSE" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert not missing, f"not in the wheel: {missing}"


def test_the_vendored_library_is_the_pinned_version():
    script = (REPO_ROOT / "scripts" / "vendor-uplot.sh").read_text()
    version = re.search(r"^VERSION=(\S+)$", script, re.M)
    assert version is not None
    static = Path(ui.__file__).parent / "static"
    header = (static / "uPlot.iife.min.js").read_text()[:200]
    assert f"(v{version[1]})" in header
    assert (static / "uPlot.VERSION").read_text().startswith(f"uplot {version[1]} ")


@ON_THE_LOOP
async def test_the_page_is_told_which_models_can_be_trained(make_client: MakeClient):
    # demo and demo_class: both train; on the CPU, no GPU to lease
    client = await make_client(devices="cpu")
    answer = await (await client.get("/ui/trainings/models.json")).json()
    assert answer == {
        "train_endpoint": True,
        "gpus": 0,  # the form shows no deepaas_gpus
        "models": [
            {"name": "demo", "train": True},
            {"name": "demo_class", "train": True},
        ],
    }
    bare = await make_client([plugin_spec("bare")], train_endpoint=False, devices="cpu")
    answer = await (await bare.get("/ui/trainings/models.json")).json()
    assert answer == {
        "train_endpoint": False,
        "gpus": 0,
        "models": [{"name": "bare", "train": False}],
    }


@ON_THE_LOOP
async def test_assets_are_revalidated_each_time(demo_client: Client):
    """no-cache and an ETag: a browser asks each time (a 304 when unchanged),
    so an upgrade never runs an older script against a newer page."""
    first = await demo_client.get("/ui/static/app.js")
    assert first.headers["Cache-Control"] == "no-cache"
    etag = first.headers["ETag"]
    again = await demo_client.get("/ui/static/app.js", headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    other = await demo_client.get("/ui/static/api.js", headers={"If-None-Match": etag})
    assert other.status == 200
    page = await demo_client.get("/ui/trainings")
    assert page.headers["Cache-Control"] == "no-cache"
