"""What real clients and published plugins do, against a real deepaas-run
(issue 8, points 1, 6, 7, 9, 12): ``http.client`` sends each request target
exactly as written."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deepaas_run import DeepaasRun, closed_at_end, register_plugins

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeepaasRun]:
    tmp_path: Path = tmp_path_factory.mktemp("legacy")
    root = tmp_path / "plugins"
    register_plugins(
        root,
        "deepaas_test_legacy",
        {
            "formats": "tests.plugins.formats",
            "http_errors": "tests.plugins.http_errors",
        },
    )
    with closed_at_end(functools.partial(DeepaasRun, tmp_path, path=[root])) as start:
        server = start(
            "--model-name",
            "formats,http_errors",
            "--state-dir",
            str(tmp_path / "state"),
            "--devices",
            "cpu",
        )
        yield server.wait_ready()


def test_runs_of_slashes(srv):
    status, body, headers = srv.call("GET", "///v2/models/formats/?x=1")
    assert status == 308
    assert headers["Location"] == "/v2/models/formats/?x=1"
    status, body, headers = srv.call("POST", "//v2/models/formats/predict/")
    assert status == 308
    assert headers["Location"] == "/v2/models/formats/predict/"
    status, body, headers = srv.call("GET", "//swagger.json")
    assert (status, headers["Location"]) == (308, "/swagger.json")
    for target in ("//evil.com/x", "//evil.com", "///evil.com/v2/"):
        status, body, headers = srv.call("GET", target)
        assert status == 404, target
        assert "Location" not in headers
        assert set(json.loads(body)) == {"message"}


def test_curls_default_accept(srv):
    status, body, headers = srv.call(
        "POST", "/v2/models/formats/predict/", headers={"Accept": "*/*"}
    )
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    status, body, _ = srv.call(
        "POST", "/v2/models/formats/predict/", headers={"Accept": "image/gif"}
    )
    assert status == 422
    assert json.loads(body) == {
        "accept": ["Must be one of: image/png, text/plain, application/json."]
    }


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("reason_exception", 400, "the image is too small"),
        ("text", 400, "why"),
        ("reason_and_text", 400, "Invalid image: why"),
    ],
)
def test_plugin_http_errors(srv, kind, status, message):
    got, body, headers = srv.call(
        "POST", f"/v2/models/http_errors/predict/?kind={kind}"
    )
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {"message": message}
