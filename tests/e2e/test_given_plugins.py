"""What ``deepaas-run TARGET`` and ``--plugin [NAME=]TARGET`` take: which
targets are files and which modules, and the mistakes refused before the
server listens (exit 2 for what was typed, 1 for a plugin that breaks),
with real ``deepaas-run`` processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deepaas_run import (
    DeepaasRun,
    register_plugins,
    run_to_exit,
    until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PLUGIN = """
def get_metadata():
    return {"name": "given", "version": "1"}


def predict(**kwargs):
    return {"served": True}
"""

NOT_A_FIELD = """from marshmallow import fields


def get_predict_args():
    return {"x": 5}
"""

RAISES = """from marshmallow import fields


def get_predict_args():
    return {"x": fields.List(int)}
"""

BAD_TRAIN_ARGS = """from marshmallow import fields


class Model:
    def get_metadata(self):
        return {}

    def get_train_args(self):
        return {"epochs": int}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a plugin file, a text file, a folder of plugin files
    (no ``__init__.py``) and a folder whose name no import can spell."""
    (tmp_path / "model.txt").write_text("not python\n")
    (tmp_path / "my_model.py").write_text(PLUGIN)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "m.py").write_text(PLUGIN)
    (tmp_path / "my-models").mkdir()
    (tmp_path / "my-models" / "x.py").write_text(PLUGIN)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["model.txt"],
            "plugin file model.txt is not a Python file (path/to/model.py)",
        ),
        (["--plugin", "model.txt"], "plugin file model.txt is not a Python file"),
        (["./nope"], "plugin file ./nope does not exist"),
        (["dir/thing"], "plugin file dir/thing does not exist"),
        (["--plugin", "demo=dir/thing"], "plugin file dir/thing does not exist"),
        (
            ["dir/"],
            "plugin dir/ is a folder, not a Python file: give a plugin file in "
            "it (dir/m.py), or a module importable from here (--plugin dir.m)",
        ),
        (["./dir"], "plugin ./dir is a folder, not a Python file"),
        (
            ["my-models"],
            "plugin my-models is a folder, not a Python file: give a plugin "
            "file in it (my-models/x.py)",
        ),
        (
            # a valid module name: imported, as a package would be
            ["dir"],
            "cannot load model 'dir' (plugin dir): dir is a folder (no "
            "__init__.py), not a plugin: give a plugin file in it (dir/m.py), "
            "or a module importable from here (--plugin dir.m)",
        ),
        (
            ["--plugin", "json"],
            "cannot load model 'json' (plugin json): module json has none of "
            "the DEEPaaS plugin functions (get_metadata, warm, get_predict_args, "
            "predict, predict_batch, get_train_args, train, get_infer_signature)",
        ),
        (
            ["--plugin", "json:JSONDecoder"],
            "cannot load model 'json' (plugin json:JSONDecoder): JSONDecoder "
            "object has none of the DEEPaaS plugin functions",
        ),
        (["--plugin", "=my_model.py"], "empty model name in '=my_model.py'"),
        (["=my_model.py"], "empty model name in '=my_model.py'"),
        (
            ["my_model.py:"],
            "empty attribute after ':' in 'my_model.py:': write "
            "my_model.py:Attribute, or my_model.py alone",
        ),
        (["--plugin", "json:"], "empty attribute after ':' in 'json:'"),
        (["--plugin", "demo=my_model.py:"], "empty attribute after ':' in"),
    ],
)
def test_a_target_that_is_no_plugin_is_a_usage_error(project, args, message):
    proc = run_to_exit(*args, cwd=project)
    assert proc.returncode == 2, proc.stderr
    assert f"deepaas-run: error: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "ready in" not in proc.stderr  # refused before listening


def test_help_shows_the_plugin_option_as_name_equals_target(tmp_path):
    proc = run_to_exit("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--plugin [NAME=]TARGET" in proc.stdout
    assert "--plugin NAME" not in proc.stdout


def test_an_argument_that_is_no_field_names_the_plugin_file_and_line(tmp_path):
    plugin = tmp_path / "not_a_field.py"
    plugin.write_text(NOT_A_FIELD)
    proc = run_to_exit(str(plugin), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert (
        f"deepaas-run: error: cannot load model 'not_a_field' (plugin {plugin}): "
        "not_a_field.get_predict_args(): argument 'x' is 5 (of type int), not "
        "a marshmallow field (write fields.Int(), fields.Str(), ...), "
        f"at {plugin}:4\n"
    ) in proc.stderr
    assert " a int" not in proc.stderr


def test_a_class_for_a_field_names_the_method_file_and_line(tmp_path):
    plugin = tmp_path / "classy.py"
    plugin.write_text(BAD_TRAIN_ARGS)
    proc = run_to_exit(f"{plugin}:Model", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert (
        f"cannot load model 'classy' (plugin {plugin}:Model): "
        "classy.get_train_args(): argument 'epochs' is the class int, not a "
        f"marshmallow field (write fields.Int(), fields.Str(), ...), at {plugin}:8"
    ) in proc.stderr


def test_get_predict_args_that_raises_names_the_line(tmp_path):
    plugin = tmp_path / "raises.py"
    plugin.write_text(RAISES)
    proc = run_to_exit(str(plugin), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr  # one line, not a crash
    assert (
        f"deepaas-run: error: cannot load model 'raises' (plugin {plugin}): "
        "ValueError: The list elements must be a subclass or instance of "
        f"marshmallow.base.FieldABC., at {plugin}:5\n"
    ) in proc.stderr
    assert "deepaas-run: --debug shows the full traceback" in proc.stderr


def test_an_installed_entry_point_with_no_functions_is_still_served(server, tmp_path):
    # Contract, section 1: every plugin function is optional; only a target
    # given on the command line must be a plugin.
    register_plugins(tmp_path, "bare_dist", {"bare": "tests.plugins.bare"})
    srv = server("--model-name", "bare", "--devices", "cpu", path=[tmp_path])
    srv.wait_ready()
    status, meta = srv.request("GET", "/v2/models/bare/")
    assert status == 200
    assert meta["description"] == (
        "Could not load description from underlying model (loaded 'bare')"
    )
    proc = run_to_exit("--plugin", "tests.plugins.bare", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert (
        "cannot load model 'bare' (plugin tests.plugins.bare): module "
        "tests.plugins.bare has none of the DEEPaaS plugin functions"
    ) in proc.stderr


def test_paths_with_equals_and_a_package_folder_are_served(
    server, tmp_path, monkeypatch
):
    runs = tmp_path / "runs" / "lr=0.1"
    runs.mkdir(parents=True)
    (runs / "model.py").write_text(PLUGIN)
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)  # the server's folder: my_pkg/ is in it
    srv = server(
        "runs/lr=0.1/model.py",
        "--plugin",
        "my_pkg",  # a folder here, and a valid module name: the package
        "--plugin",
        "other=runs/lr=0.1/model.py",
        "--devices",
        "cpu",
    ).wait_ready()
    _, listing = srv.request("GET", "/v2/models/")
    assert sorted(m["id"] for m in listing["models"]) == ["model", "my_pkg", "other"]
    for name in ("model", "my_pkg", "other"):
        status, answer = srv.request("POST", f"/v2/models/{name}/predict/")
        assert (status, answer["predictions"]) == (200, {"served": True})


def test_reload_names_the_file_and_line_of_an_unusable_argument(server, tmp_path):
    plugin = tmp_path / "live.py"
    plugin.write_text(PLUGIN)
    srv = server(str(plugin), "--reload", "--devices", "cpu").wait_ready()
    plugin.write_text(NOT_A_FIELD)
    until(lambda: "reload failed" in srv.output(), "the failed reload is logged")
    log = srv.output()
    assert (
        f"cannot load model 'live' (plugin {plugin}): live.get_predict_args(): "
        f"argument 'x' is 5 (of type int), not a marshmallow field"
    ) in log
    assert f"at {plugin}:4" in log
    status, meta = srv.request("GET", "/v2/models/live/")
    assert (status, meta["name"]) == (200, "given")  # the last good version


NO_DATA_IN_TRAINING = """import os

if os.environ.get("DEEPAAS_TRAINING"):  # set in training processes only
    raise RuntimeError("no dataset mounted here")


def get_metadata():
    return {"name": "trainable"}


def train(**kwargs):
    return {}
"""


def _failed_training(srv: DeepaasRun, name: str) -> str:
    """Submit a training of ``name``; the message of its error."""
    train = f"/v2/models/{name}/train/"
    status, record = srv.request("POST", train, {})
    assert status == 200, record

    def ended() -> dict | None:
        _, found = srv.request("GET", train + record["uuid"])
        return found if found["status"] not in ("queued", "running") else None

    found = until(ended, f"the training of {name} ends")
    assert found["status"] == "error", found
    return found["message"]


def test_a_given_plugin_that_fails_to_load_in_training_says_plugin(
    server, tmp_path, monkeypatch
):
    """The training process names a given plugin as the server does, the
    module form (--plugin my_pkg.api) as well as the file form."""
    (tmp_path / "trainmod.py").write_text(NO_DATA_IN_TRAINING)
    (tmp_path / "files").mkdir()
    plugin = tmp_path / "files" / "trainfile.py"
    plugin.write_text(NO_DATA_IN_TRAINING)
    monkeypatch.chdir(tmp_path)  # the server's folder: trainmod imports from it
    srv = server("--plugin", "trainmod", str(plugin), "--devices", "cpu").wait_ready()
    assert _failed_training(srv, "trainmod") == (
        "cannot load model 'trainmod' (plugin trainmod): RuntimeError: no "
        f"dataset mounted here, at {tmp_path / 'trainmod.py'}:4"
    )
    assert _failed_training(srv, "trainfile") == (
        f"cannot load model 'trainfile' (plugin {plugin}): RuntimeError: no "
        f"dataset mounted here, at {plugin}:4"
    )
