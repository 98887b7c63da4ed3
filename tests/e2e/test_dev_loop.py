"""The dev loop: ``deepaas-run model.py``, ``--plugin module:attr`` and
``--reload``, with real ``deepaas-run`` processes."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deepaas_run import DEEPAAS_RUN, REPO_ROOT, DeepaasRun, closed_at_end, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CLASS_PLUGIN = """
from marshmallow import fields

from helper import twice  # a module beside the plugin file


class Model:
    def get_metadata(self):
        return {"name": "classy file", "version": "1"}

    def get_predict_args(self):
        return {"x": fields.Int(load_default=1)}

    def predict(self, **kwargs):
        return {"twice": twice(kwargs["x"])}
"""

VERSIONED = """
from marshmallow import fields

VERSION = "{version}"


def get_metadata():
    return {{"name": "live", "version": VERSION}}


def get_predict_args():
    return {{"{arg}": fields.Str(load_default="")}}


def predict(**kwargs):
    return {{"version": VERSION, "got": kwargs["{arg}"]}}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., DeepaasRun]]:
    with closed_at_end(functools.partial(DeepaasRun, tmp_path)) as start:
        yield start


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """deepaas-run that is expected to exit at once."""
    return subprocess.run(
        [DEEPAAS_RUN, "--listen-port", "0", "--devices", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
    )


def test_serves_a_plugin_file_with_a_class_and_a_module_beside_it(server, tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "helper.py").write_text("def twice(x):\n    return 2 * x\n")
    plugin = folder / "my_model.py"
    plugin.write_text(CLASS_PLUGIN)
    srv = server(f"{plugin}:Model", "--devices", "cpu").wait_ready()
    status, listing = srv.request("GET", "/v2/models/")
    assert status == 200
    assert [m["id"] for m in listing["models"]] == ["my_model"]  # the file's name
    assert listing["models"][0]["name"] == "classy file"
    status, answer = srv.request("POST", "/v2/models/my_model/predict/?x=21")
    assert (status, answer["predictions"]) == (200, {"twice": 42})


def test_plugin_module_attr_and_names(server, tmp_path):
    (tmp_path / "devmod.py").write_text(CLASS_PLUGIN)
    (tmp_path / "helper.py").write_text("def twice(x):\n    return -x\n")
    srv = server(
        "--plugin",
        "devmod:Model",
        "--plugin",
        "echo2=tests.plugins.echo",
        "--devices",
        "cpu",
        path=[tmp_path],
    ).wait_ready()
    _, listing = srv.request("GET", "/v2/models/")
    assert sorted(m["id"] for m in listing["models"]) == ["devmod", "echo2"]
    status, answer = srv.request("POST", "/v2/models/devmod/predict/?x=3")
    assert (status, answer["predictions"]) == (200, {"twice": -3})
    status, answer = srv.request("POST", "/v2/models/echo2/predict/?x=3")
    assert (status, answer["predictions"]["x"]) == (200, 4)


def test_a_missing_file_is_a_usage_error(tmp_path):
    proc = _run("nope/model.py", cwd=tmp_path)
    assert proc.returncode == 2
    assert "deepaas-run: error: plugin file nope/model.py does not exist" in (
        proc.stderr
    )


def test_the_same_name_twice_is_a_usage_error(tmp_path):
    (tmp_path / "a.py").write_text("")
    proc = _run("a.py", "--plugin", "a=tests.plugins.echo", cwd=tmp_path)
    assert proc.returncode == 2
    assert "model name 'a' given twice" in proc.stderr


def test_a_broken_file_names_its_file_and_line(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("import os\n\nVALUE = undefined_name + 1\n")
    proc = _run(str(plugin), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert (
        f"deepaas-run: error: cannot load model 'broken' (plugin {plugin}): "
        f"NameError: name 'undefined_name' is not defined, at {plugin}:3"
    ) in proc.stderr


def test_a_missing_attribute_is_named(tmp_path):
    proc = _run("--plugin", "tests.plugins.echo:Nope", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert (
        "cannot load model 'echo' (plugin tests.plugins.echo:Nope): "
        "AttributeError: module 'tests.plugins.echo' has no attribute 'Nope'"
    ) in proc.stderr


def _metadata_version(srv: DeepaasRun) -> str | None:
    status, meta = srv.request("GET", "/v2/models/live/")
    return meta.get("version") if status == 200 else None


def _predicted(srv: DeepaasRun, arg: str) -> dict | None:
    """The prediction; None while a worker of the previous version, still
    serving during the roll, fails on the new arguments."""
    status, answer = srv.request("POST", f"/v2/models/live/predict/?{arg}=hi")
    if status == 500 and "KeyError" in answer["message"]:
        return None
    assert status == 200, answer
    return answer["predictions"]


def _query_args(srv: DeepaasRun) -> list[str]:
    _, doc = srv.request("GET", "/openapi.json")
    operation = doc["paths"]["/v2/models/live/predict/"]["post"]
    return [p["name"] for p in operation.get("parameters", [])]


def test_reload_serves_each_edit_and_keeps_the_last_good_one(server, tmp_path):
    plugin = tmp_path / "live.py"
    plugin.write_text(VERSIONED.format(version="1", arg="a"))
    srv = server(str(plugin), "--reload", "--devices", "cpu").wait_ready()
    assert _predicted(srv, "a") == {"version": "1", "got": "hi"}
    assert "a" in _query_args(srv)

    plugin.write_text(VERSIONED.format(version="2", arg="bee"))
    until(lambda: _metadata_version(srv) == "2", "the metadata says version 2")
    assert "bee" in _query_args(srv) and "a" not in _query_args(srv)
    # the workers roll one at a time: the new one answers once it is warm
    until(
        lambda: _predicted(srv, "bee") == {"version": "2", "got": "hi"},
        "a worker of version 2 predicts",
    )

    plugin.write_text("from marshmallow import fields\n\nbroken = (\n")
    until(lambda: "reload failed" in srv.output(), "the failed reload is logged")
    log = srv.output()
    assert f"SyntaxError: '(' was never closed, at {plugin}:3" in log
    assert "the last good version keeps serving" in log
    assert _metadata_version(srv) == "2"
    assert _predicted(srv, "bee") == {"version": "2", "got": "hi"}
    assert "bee" in _query_args(srv)

    plugin.write_text(VERSIONED.format(version="3", arg="sea"))
    until(lambda: _metadata_version(srv) == "3", "the metadata says version 3")
    until(
        lambda: _predicted(srv, "sea") == {"version": "3", "got": "hi"},
        "a worker of version 3 predicts",
    )
    assert "sea" in _query_args(srv)
    _, swagger = srv.request("GET", "/swagger.json")
    names = [
        p["name"]
        for p in swagger["paths"]["/v2/models/live/predict/"]["post"].get(
            "parameters", []
        )
    ]
    assert "sea" in names
