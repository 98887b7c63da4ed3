"""The dev loop: ``deepaas-run model.py``, ``--plugin module:attr`` and
``--reload``, with real ``deepaas-run`` processes."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
from pathlib import Path

import pytest

from tests.deepaas_run import DeepaasRun, run_to_exit, until

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
    proc = run_to_exit("nope/model.py", cwd=tmp_path)
    assert proc.returncode == 2
    assert "deepaas-run: error: plugin file nope/model.py does not exist" in (
        proc.stderr
    )


def test_the_same_name_twice_is_a_usage_error(tmp_path):
    (tmp_path / "a.py").write_text("")
    proc = run_to_exit("a.py", "--plugin", "a=tests.plugins.echo", cwd=tmp_path)
    assert proc.returncode == 2
    assert "model name 'a' given twice" in proc.stderr


def test_a_broken_file_names_its_file_and_line(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("import os\n\nVALUE = undefined_name + 1\n")
    proc = run_to_exit(str(plugin), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert (
        f"deepaas-run: error: cannot load model 'broken' (plugin {plugin}): "
        f"NameError: name 'undefined_name' is not defined, at {plugin}:3"
    ) in proc.stderr


def test_a_missing_attribute_is_named(tmp_path):
    proc = run_to_exit("--plugin", "tests.plugins.echo:Nope", cwd=tmp_path)
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


def _failures(srv: DeepaasRun) -> int:
    return srv.output().count("reload failed")


def _version(srv: DeepaasRun, arg: str) -> str | None:
    """The version a worker answers with (None while one of the previous
    version is still serving, see :func:`_predicted`)."""
    answer = _predicted(srv, arg)
    return answer["version"] if answer else None


NO_METADATA = """
from marshmallow import fields


def get_metadata():
    raise ValueError("no metadata today")


def get_predict_args():
    return {"bee": fields.Str(load_default="")}


def predict(**kwargs):
    return {"version": "2", "got": kwargs["bee"]}
"""

UNDOCUMENTABLE = """
from marshmallow import fields


def get_metadata():
    return {"name": "live", "version": "2"}


def get_predict_args():  # a set is no JSON: the API documents fail
    return {"bee": fields.Str(load_default="", metadata={"example": {1}})}


def predict(**kwargs):
    return {"version": "2", "got": kwargs["bee"]}
"""


def test_a_new_version_the_api_cannot_serve_keeps_the_last_good_one(server, tmp_path):
    """What the API view needs is built when the file is saved: a version
    whose get_metadata() raises, or whose arguments the API documents cannot
    show, fails the reload (logged with its file and line) and the last good
    version keeps serving every route."""
    plugin = tmp_path / "live.py"
    plugin.write_text(VERSIONED.format(version="1", arg="a"))
    srv = server(str(plugin), "--reload", "--devices", "cpu").wait_ready()
    (worker,) = srv.note_workers()

    plugin.write_text(NO_METADATA)
    until(lambda: _failures(srv) == 1, "the failed reload is logged")
    assert (
        "model live: reload failed, the last good version keeps serving (fix the "
        f"file to reload again): cannot load model 'live' (plugin {plugin}): "
        f"get_metadata() failed: ValueError: no metadata today, at {plugin}:6"
    ) in srv.output()
    status, listing = srv.request("GET", "/v2/models/")
    assert status == 200, listing
    assert [(m["id"], m["version"]) for m in listing["models"]] == [("live", "1")]
    assert _metadata_version(srv) == "1"
    assert _query_args(srv) == ["a"]
    assert _predicted(srv, "a") == {"version": "1", "got": "hi"}
    assert srv.note_workers() == [worker]  # not replaced

    plugin.write_text(UNDOCUMENTABLE)
    until(lambda: _failures(srv) == 2, "the second failed reload is logged")
    assert (
        f"cannot load model 'live' (plugin {plugin}): the API documents "
        "(/swagger.json, /openapi.json) cannot be built: TypeError: Object of "
        "type set is not JSON serializable"
    ) in srv.output()
    status, swagger = srv.request("GET", "/swagger.json")
    assert status == 200, swagger
    assert _query_args(srv) == ["a"]
    assert _metadata_version(srv) == "1"
    assert srv.note_workers() == [worker]

    plugin.write_text(VERSIONED.format(version="3", arg="sea"))
    until(lambda: _metadata_version(srv) == "3", "the metadata says version 3")
    assert _query_args(srv) == ["sea"]
    until(lambda: _version(srv, "sea") == "3", "a worker of version 3 predicts")


GOOD = """
def get_metadata():
    return {"name": "good one", "version": "1"}


def predict(**kwargs):
    return {}
"""

BAD_METADATA = """
def get_metadata():
    raise RuntimeError("the metadata server is down")


def predict(**kwargs):
    return {}
"""


def test_a_model_whose_metadata_fails_leaves_the_others_listed(server, tmp_path):
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "bad.py").write_text(BAD_METADATA)
    srv = server(
        str(tmp_path / "good.py"), str(tmp_path / "bad.py"), "--devices", "cpu"
    ).wait_ready()
    error = "get_metadata() failed: RuntimeError: the metadata server is down"
    for _ in range(2):  # logged once, answered each time
        status, listing = srv.request("GET", "/v2/models/")
        assert status == 200, listing
        assert listing["models"] == [
            {
                "id": "good",
                "name": "good one",
                "version": "1",
                "links": [{"rel": "self", "href": "/v2/models/good"}],
            },
            {
                "id": "bad",
                "name": "bad",
                "links": [{"rel": "self", "href": "/v2/models/bad"}],
                "description": (
                    "Could not load description from underlying model (loaded 'bad')"
                ),
                "error": error,
            },
        ]
    assert srv.request("GET", "/v2/models/bad/") == (
        500,
        {"message": f"model 'bad': {error}"},
    )
    assert srv.request("GET", "/v2/models/good/")[0] == 200
    # (logged while the first request was served: under its id, docs/security.md)
    assert len(re.findall(_logged(f"model bad: {error}"), srv.output())) == 1


COLD = (
    VERSIONED
    + """

def warm():
    raise RuntimeError("no weights at " + VERSION)
"""
)


def test_a_new_version_whose_warm_fails_says_to_fix_the_file(server, tmp_path):
    plugin = tmp_path / "live.py"
    plugin.write_text(VERSIONED.format(version="1", arg="a"))
    srv = server(str(plugin), "--reload", "--devices", "cpu").wait_ready()
    (worker,) = srv.note_workers()

    plugin.write_text(COLD.format(version="2", arg="a"))
    marker = "reload failed, a new worker could not start"
    until(lambda: marker in srv.output(), "the failed roll is logged")
    (line,) = [x for x in srv.output().splitlines() if marker in x]
    assert line.endswith(
        "model live: reload failed, a new worker could not start: warm() of "
        "model 'live' failed: RuntimeError: no weights at 2; worker 0 (pid "
        f"{worker}) keeps serving, and the other workers keep the version they "
        "loaded (fix the file to reload again)"
    ), line
    assert _metadata_version(srv) == "2"  # the API has the new version
    assert _predicted(srv, "a") == {"version": "1", "got": "hi"}  # the old worker
    _, system = srv.request("GET", "/v2/system/")
    assert system["reloads"]["live"]["state"] == "failed"
    assert system["reloads"]["live"]["cause"] == "live.py changed"


def test_a_worker_killed_while_the_file_is_broken_says_why_it_cannot_restart(
    server, tmp_path
):
    """A worker that must restart while the plugin does not import cannot
    load the last good version (it imports the file as it is): the model
    answers 503 saying so, and serves again once the file is fixed."""
    plugin = tmp_path / "live.py"
    plugin.write_text(VERSIONED.format(version="1", arg="a"))
    srv = server(str(plugin), "--reload", "--devices", "cpu").wait_ready()
    (worker,) = srv.note_workers()

    plugin.write_text("from marshmallow import fields\n\nbroken = (\n")
    until(lambda: _failures(srv) == 1, "the failed reload is logged")
    assert _predicted(srv, "a") == {"version": "1", "got": "hi"}
    os.kill(worker, signal.SIGKILL)
    expected = re.compile(
        r"the worker of model 'live' could not restart: its plugin is broken "
        r"since \d\d:\d\d:\d\d: "
        + re.escape(
            f"cannot load model 'live' (plugin {plugin}): SyntaxError: '(' was "
            f"never closed, at {plugin}:3; fix the file (it reloads on save)"
        )
    )

    def refused() -> str | None:
        status, answer = srv.request("POST", "/v2/models/live/predict/?a=hi")
        assert status == 503, answer
        message = answer["message"]
        # else: the request reached the killed worker before its end was seen
        return None if "killed by SIGKILL" in message else message

    message = until(refused, "the restart failed")
    assert expected.fullmatch(message), message
    assert refused() == message  # the next one too, at once
    assert _metadata_version(srv) == "1"  # the API keeps the last good version

    plugin.write_text(VERSIONED.format(version="3", arg="a"))
    until(lambda: _metadata_version(srv) == "3", "the fixed file is served")
    # the next prediction waits for the worker starting with it
    assert srv.request("POST", "/v2/models/live/predict/?a=hi") == (
        200,
        {"status": "OK", "predictions": {"version": "3", "got": "hi"}},
    )


BROKEN = "from marshmallow import fields\n\nbroken = (\n"


def _break_and_kill(srv: DeepaasRun, plugin: Path) -> None:
    """Save a broken version, kill the only worker, and wait until its
    restart failed: predictions answer 503 saying the plugin is broken."""
    (worker,) = srv.note_workers()
    failures = _failures(srv)
    plugin.write_text(BROKEN)
    until(lambda: _failures(srv) > failures, "the failed reload is logged")
    os.kill(worker, signal.SIGKILL)

    def refused() -> bool:
        status, answer = srv.request("POST", "/v2/models/live/predict/?a=hi")
        assert status == 503, answer
        return "could not restart: its plugin is broken" in answer["message"]

    until(refused, "the restart failed")


HELD = (
    VERSIONED
    + """

def warm():  # warms until the test lets it go (a deadline, never for ever)
    import os
    import time

    deadline = time.monotonic() + 60
    while not os.path.exists({go!r}) and time.monotonic() < deadline:
        time.sleep(0.02)
"""
)


def test_after_a_fix_predictions_wait_for_the_new_worker_not_the_old_error(
    server, tmp_path
):
    """The only worker could not restart while the file was broken; once
    the fix is served, a prediction waits in the queue for the worker
    starting with it (as at start-up), never answered with the old error."""
    plugin = tmp_path / "live.py"
    plugin.write_text(VERSIONED.format(version="1", arg="a"))
    srv = server(str(plugin), "--reload", "--devices", "cpu").wait_ready()
    _break_and_kill(srv, plugin)

    go = tmp_path / "go"
    plugin.write_text(HELD.format(version="3", arg="a", go=str(go)))
    until(lambda: _metadata_version(srv) == "3", "the fix is served")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(srv.request, "POST", "/v2/models/live/predict/?a=hi")

        def queued() -> bool:
            _, system = srv.request("GET", "/v2/system/")
            return call.done() or system["queues"]["live"]["depth"] == 1

        until(queued, "the prediction is answered or waits")
        assert not call.done(), call.result()  # it waits for the new worker
        go.touch()
        status, answer = call.result(timeout=30)
    assert status == 200, answer
    assert answer["predictions"] == {"version": "3", "got": "hi"}
    until(lambda: "every worker reloaded" in srv.output(), "the reload is done")


def test_a_fix_whose_warm_fails_after_failed_restarts_logs_the_failure(
    server, tmp_path
):
    """The only worker could not restart while the file was broken; the next
    version imports but its warm() fails: the reload says it failed, and
    why, never that every worker reloaded; predictions say why now."""
    plugin = tmp_path / "live.py"
    plugin.write_text(VERSIONED.format(version="1", arg="a"))
    srv = server(str(plugin), "--reload", "--devices", "cpu").wait_ready()
    _break_and_kill(srv, plugin)

    plugin.write_text(COLD.format(version="2", arg="a"))
    marker = "reload failed, a new worker could not start"
    until(
        lambda: marker in srv.output() or "every worker reloaded" in srv.output(),
        "the roll ends",
    )
    assert "every worker reloaded" not in srv.output()
    (line,) = [x for x in srv.output().splitlines() if marker in x]
    assert line.endswith(
        "ERROR deepaas.engine.reload: model live: reload failed, a new worker "
        "could not start: warm() of model 'live' failed: RuntimeError: no "
        "weights at 2; worker 0 is being restarted (no worker of the previous "
        "version was left to serve), and the other workers keep the version "
        "they loaded (fix the file to reload again)"
    ), line
    _, system = srv.request("GET", "/v2/system/")
    reload = system["reloads"]["live"]
    assert (reload["state"], reload["error"]) == (
        "failed",
        "warm() of model 'live' failed: RuntimeError: no weights at 2",
    )
    assert srv.request("POST", "/v2/models/live/predict/?a=hi") == (
        503,
        {
            "message": "model 'live' cannot start: warm() of model 'live' "
            "failed: RuntimeError: no weights at 2"
        },
    )


NOT_A_DICT = """
def get_metadata():
    return ["name", "live"]


def predict(**kwargs):
    return {}
"""


def _logged(message: str) -> str:
    """A pattern of the line ``deepaas.api.v2.models`` logs with ``message``,
    during a request (its request id first) or not."""
    return r"ERROR deepaas\.api\.v2\.models: (?:\[[0-9a-f]{32}\] )?" + re.escape(
        message
    )


def test_metadata_that_is_no_dict_names_the_file_and_line(server, tmp_path):
    """As other load errors do: the answer, the listing, the log and a
    reload to such a version name where get_metadata() is defined."""
    (tmp_path / "bad.py").write_text(NOT_A_DICT)
    plugin = tmp_path / "live.py"
    plugin.write_text(VERSIONED.format(version="1", arg="a"))
    srv = server(
        str(tmp_path / "bad.py"), str(plugin), "--reload", "--devices", "cpu"
    ).wait_ready()
    error = f"get_metadata() must return a dict, got list, at {tmp_path / 'bad.py'}:2"
    assert srv.request("GET", "/v2/models/bad/") == (
        500,
        {"message": f"model 'bad': {error}"},
    )
    _, listing = srv.request("GET", "/v2/models/")
    assert [m.get("error") for m in listing["models"]] == [error, None]
    assert re.search(_logged(f"model bad: {error}") + "\n", srv.output())

    plugin.write_text(NOT_A_DICT)
    until(lambda: _failures(srv) == 1, "the failed reload is logged")
    assert (
        "model live: reload failed, the last good version keeps serving (fix the "
        f"file to reload again): cannot load model 'live' (plugin {plugin}): "
        f"get_metadata() must return a dict, got list, at {plugin}:2\n"
    ) in srv.output()
    assert _metadata_version(srv) == "1"


EXITS_ON_IMPORT = """
import sys

def get_metadata():
    return {"name": "exits", "version": "2"}

def predict(**kwargs):
    return {}

sys.exit(3)  # as a module that parses sys.argv when imported would
"""

EXITS_IN_METADATA = """
import sys

def get_metadata():
    sys.exit("bye")

def predict(**kwargs):
    return {}
"""


def test_plugin_code_that_exits_is_an_error_of_the_plugin_not_the_servers_end(
    server, tmp_path
):
    """sys.exit() in plugin code the server runs (its import, get_metadata())
    fails that plugin, named with file and line, at start-up and at a reload;
    the server goes on with the last good version."""
    plugin = tmp_path / "live.py"
    plugin.write_text(EXITS_ON_IMPORT)
    proc = run_to_exit(str(plugin), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert (
        f"cannot load model 'live' (plugin {plugin}): PluginExited: the plugin "
        "called sys.exit(3) while being loaded: plugin code must not exit the "
        f"server (does it parse the command line when it is imported?), at "
        f"{plugin}:10"
    ) in proc.stderr

    plugin.write_text(VERSIONED.format(version="1", arg="a"))
    srv = server(str(plugin), "--reload", "--devices", "cpu").wait_ready()
    plugin.write_text(EXITS_ON_IMPORT)
    until(lambda: _failures(srv) == 1, "the failed reload is logged")
    assert "called sys.exit(3) while being loaded" in srv.output()
    plugin.write_text(EXITS_IN_METADATA)
    until(lambda: _failures(srv) == 2, "the second failed reload is logged")
    assert (
        "PluginExited: the plugin called sys.exit('bye') in get_metadata()"
    ) in srv.output()
    assert srv.proc.poll() is None  # still serving
    assert _metadata_version(srv) == "1"
    assert _predicted(srv, "a") == {"version": "1", "got": "hi"}


HANGS_ON_IMPORT = """
import threading

threading.Event().wait()  # a lock never released, a download that never ends
"""


def test_a_reload_whose_import_hangs_does_not_hold_up_the_servers_stop(
    server, tmp_path
):
    """SIGTERM while a new version's import hangs: the server stops within
    --shutdown-timeout + 5 s, as it promises, instead of waiting for the
    import (it ran in the default executor, whose threads are joined at
    exit: "stopped" was logged, and the process lived on)."""
    plugin = tmp_path / "live.py"
    plugin.write_text(VERSIONED.format(version="1", arg="a"))
    srv = server(
        str(plugin), "--reload", "--devices", "cpu", "--shutdown-timeout", "1"
    ).wait_ready()
    plugin.write_text(HANGS_ON_IMPORT)
    until(lambda: "live.py changed, reloading" in srv.output(), "the reload began")
    assert _metadata_version(srv) == "1"  # the last good version serves
    assert srv.stop(signal.SIGTERM, timeout=1 + 5 + 4) == 0, srv.output()
    assert "stopped (cleanup took" in srv.output()
