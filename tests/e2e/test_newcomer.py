"""``deepaas-run`` as someone new to it meets it: which deepaas runs, what
serves and what failed, errors that say what to fix, a busy port."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import deepaas
from tests.deepaas_run import DEEPAAS_RUN, register_plugins

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

FOLDER = os.path.dirname(os.path.abspath(deepaas.__file__))
VERSION_LINE = f"{deepaas.__version__} from {FOLDER} (Python {sys.version.split()[0]})"


def _plugin(root: Path, name: str, source: str) -> Path:
    path = root / f"{name}.py"
    path.write_text(source)
    return path


def test_version_says_which_deepaas_and_where():
    proc = subprocess.run(
        [DEEPAAS_RUN, "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert proc.stdout == f"deepaas-run {VERSION_LINE}\n"


def test_banner_lists_models_that_started_and_those_that_failed(server, tmp_path):
    register_plugins(tmp_path, "warmless", {"warmless": "tests.plugins.broken_warm"})
    srv = server("--model-name", "demo,warmless", path=[tmp_path]).wait_ready()
    out = srv.output()
    banner = out[out.index("deepaas " + deepaas.__version__ + " ready in") :]
    lines = banner.splitlines()
    assert lines[0].endswith(", serving demo (1 worker(s) per model)")
    assert lines[1] == (
        "  FAILED:  warmless (NOT serving, see the error(s) above; requests to "
        "it answer 503)"
    )
    assert lines[2] == f"  deepaas: {VERSION_LINE}"
    assert lines[3] == f"  API:     {srv.url}/"
    # the reason is logged before the banner
    error = out.index(
        "ERROR deepaas: model warmless is NOT serving: warm() of model 'warmless' "
        "failed: RuntimeError: weights not found"
    )
    assert error < out.index(banner)
    status, body = srv.request("POST", "/v2/models/warmless/predict/")
    assert status == 503
    assert "weights not found" in body["message"]


def test_banner_of_a_server_where_every_model_failed(server, tmp_path):
    register_plugins(tmp_path, "warmless", {"warmless": "tests.plugins.broken_warm"})
    srv = server("--model-name", "warmless", path=[tmp_path]).wait_ready()
    assert ", serving no model (1 worker(s) per model)\n  FAILED:  warmless (" in (
        srv.output()
    )


def test_every_broken_plugin_is_reported_with_its_file_and_line(server, tmp_path):
    first = _plugin(tmp_path, "first_broken", "import os\n\nimport no_such_module\n")
    second = _plugin(tmp_path, "second_broken", "def predict(:\n    pass\n")
    register_plugins(
        tmp_path,
        "broken_pair",
        {"first_broken": "first_broken", "second_broken": "second_broken"},
    )
    names = ("--model-name", "demo,first_broken,second_broken")
    srv = server(*names, path=[tmp_path])
    assert srv.proc.wait(timeout=30) == 1
    assert srv.output().splitlines() == [
        "deepaas-run: error: cannot load model 'first_broken' (entry point "
        "first_broken): ModuleNotFoundError: No module named 'no_such_module', "
        f"at {first}:3",
        "deepaas-run: error: cannot load model 'second_broken' (entry point "
        f"second_broken): SyntaxError: invalid syntax, at {second}:1",
        "deepaas-run: --debug shows the full traceback",
    ]
    srv = server(*names, "--debug", path=[tmp_path])
    assert srv.proc.wait(timeout=30) == 1
    out = srv.output()
    assert out.count("Traceback (most recent call last)") == 2
    assert f'File "{first}", line 3, in <module>' in out
    assert f'File "{second}", line 1' in out
    assert "--debug shows" not in out


def test_config_file_without_default_section_is_a_usage_error(server, tmp_path):
    config = tmp_path / "deepaas.conf"
    config.write_text("[deepaas]\nlisten_port = 5027\n")
    srv = server("--config-file", str(config))
    assert srv.proc.wait(timeout=30) == 2
    assert srv.output().splitlines() == [
        f"deepaas-run: error: config file {config} has no [DEFAULT] section: put "
        "a line '[DEFAULT]' above its options (e.g. '[DEFAULT]' then "
        "'listen_port = 5027')"
    ]


# -- a port in use -----------------------------------------------------------------

# Imported in the API process (introspection) and in each worker: a worker
# leaves a mark, so a test can tell whether one was ever started. With
# GRAB_PORT set, the API process's import takes the port first, as another
# program might between the early check and the server's own bind.
PORT_PROBE = """
import os
import socket

if os.environ.get("DEEPAAS_DEVICE"):  # set in workers only
    open(os.path.join(os.environ["MARKS"], str(os.getpid())), "w").close()
elif os.environ.get("GRAB_PORT"):
    HOLDER = socket.socket()
    HOLDER.bind(("127.0.0.1", int(os.environ["GRAB_PORT"])))
    HOLDER.listen()


def predict():
    return "ok"
"""


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.fixture
def port_probe(tmp_path: Path) -> Path:
    _plugin(tmp_path, "port_probe", PORT_PROBE)
    register_plugins(tmp_path, "port_probe", {"port_probe": "port_probe"})
    marks = tmp_path / "marks"
    marks.mkdir()
    return marks


def test_port_in_use_fails_fast_and_starts_no_worker(server, tmp_path, port_probe):
    with _listening_socket() as held:
        port = held.getsockname()[1]
        began = time.monotonic()
        srv = server(
            "--model-name",
            "port_probe",
            "--listen-port",  # the last one given wins
            str(port),
            path=[tmp_path],
            env={"MARKS": str(port_probe)},
        )
        assert srv.proc.wait(timeout=30) == 1
        took = time.monotonic() - began
    assert srv.output().splitlines() == [
        f"deepaas-run: error: cannot listen on 127.0.0.1:{port}: Address already "
        "in use (another process, perhaps another deepaas-run, is listening "
        "there: stop it or choose another port with --listen-port)"
    ]
    assert list(port_probe.iterdir()) == []  # no worker was started
    assert took < 15, took


def test_port_taken_after_the_early_check_still_starts_no_worker(
    server, tmp_path, port_probe
):
    """The server binds its port before it starts a worker: a port taken
    while plugins were being imported also ends start-up with no worker."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free again once closed
    srv = server(
        "--model-name",
        "port_probe",
        "--listen-port",
        str(port),
        path=[tmp_path],
        env={"MARKS": str(port_probe), "GRAB_PORT": str(port)},
    )
    assert srv.proc.wait(timeout=30) == 1
    lines = srv.output().splitlines()
    assert lines[-1] == (
        f"deepaas-run: error: cannot listen on 127.0.0.1:{port}: Address already "
        "in use (another process, perhaps another deepaas-run, is listening "
        "there: stop it or choose another port with --listen-port)"
    )
    assert "Traceback" not in srv.output()
    assert list(port_probe.iterdir()) == []


def test_banner_names_the_port_chosen_for_listen_port_0(tmp_path):
    """``--listen-port 0`` lets the system choose: the banner says which."""
    proc = subprocess.Popen(
        [DEEPAAS_RUN, "--listen-port", "0", "--model-name", "demo"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stderr = proc.stderr
    assert stderr is not None

    def read() -> None:  # a thread: a pipe read with a deadline, no sleeps
        for line in stderr:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        api = None
        while api is None:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            api = re.search(r"  API:     (http://\S+)/$", line)
        url = api.group(1)
        assert not url.endswith(":0"), url
        with urllib.request.urlopen(f"{url}/v2/models/", timeout=10) as answer:
            assert [m["id"] for m in json.load(answer)["models"]] == ["demo"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=30)
