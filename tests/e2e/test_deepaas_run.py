"""deepaas-run as a user runs it: a real process, real HTTP, a clean stop."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.deepaas_run import (
    alive,
    children,
    register_plugins,
    until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_predicts_and_stops_without_orphans(server, sig):
    srv = server("--workers", "2", "--model-name", "demo,demo_class")
    srv.wait_ready()
    status, body, headers = srv.call("GET", "/")
    assert status == 200
    assert json.loads(body)["versions"][0]["id"] == "v2"

    status, body, _ = srv.call("POST", "/v2/models/demo/predict/?number=7")
    assert status == 200
    assert json.loads(body)["args"]["number"] == 7

    status, body, headers = srv.call(
        "POST", "/v2/models/demo/predict/", headers={"Accept": "image/png"}
    )
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert body.startswith(b"\x89PNG")

    workers = children(srv.proc.pid)
    assert len(workers) == 4  # 2 models (demo, demo_class) x 2 workers
    assert srv.stop(sig) == 0
    out = srv.output()
    assert "ready in" in out
    assert not [pid for pid in workers if alive(pid)]


def test_worker_survives_nothing_when_server_is_killed(server):
    srv = server("--model-name", "demo")
    srv.wait_ready()
    workers = children(srv.proc.pid)
    assert workers
    srv.stop(signal.SIGKILL)
    until(lambda: not any(alive(p) for p in workers), "the workers exit", timeout=5)


def test_settings_from_environment_and_config_file(server, tmp_path):
    config = tmp_path / "deepaas.ini"
    config.write_text("[DEFAULT]\nbase_path = /from-file\ndoc_endpoint = false\n")
    srv = server("--config-file", str(config), env={"DEEPAAS_V2_MODEL": "demo_class"})

    def models() -> tuple[int, bytes, object] | None:
        try:
            return srv.call("GET", "/from-file/v2/models/")
        except ConnectionError:
            assert srv.proc.poll() is None, srv.output()
            return None

    status, body, _ = until(models, "deepaas-run answers")
    assert status == 200
    assert [m["name"] for m in json.loads(body)["models"]] == ["demo_class"]
    assert srv.call("GET", "/from-file/api")[0] == 404


def test_unknown_model_stops_startup_with_one_clear_line(server):
    srv = server("--model-name", "nope")
    assert srv.proc.wait(timeout=30) == 1
    out = srv.output().strip().splitlines()
    assert len(out) == 1
    assert "nope" in out[0]
    assert "demo" in out[0]  # it lists what is installed


def test_bad_flag_value_is_a_usage_error(server):
    srv = server("--base-path", "no-slash")
    assert srv.proc.wait(timeout=30) == 2
    assert "base_path must start with '/'" in srv.output()


def test_big_bodies_paused_by_flow_control_arrive_whole(server, tmp_path):
    """aiohttp (on uvloop, as deepaas-run runs) pauses its parser when a body
    piles up unread and resumes it with ``data_received(b"")``: the
    connection guard must pass that on. It once did not, and every other
    10 MB JSON body sent by curl stopped arriving (408)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("needs curl, the client this was seen with")
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"zzz": ["ab"] * 2_000_000}))  # 12 MB
    srv = server("--model-name", "demo", "--client-timeout", "5").wait_ready()
    command = [curl, "-s", "-o", "/dev/null", "-w", "%{http_code}"]
    command += ["-H", "Content-Type: application/json", "--data-binary", f"@{path}"]
    for _ in range(4):
        out = subprocess.run(
            [*command, srv.url + "/v2/models/demo/predict/"],
            capture_output=True,
            timeout=60,
            check=False,
        ).stdout
        assert out == b"200"


def test_unwritable_log_file_is_a_usage_error(server, tmp_path):
    path = tmp_path / "no-such-dir" / "deepaas.log"
    srv = server("--log-file", str(path))
    assert srv.proc.wait(timeout=30) == 2
    out = srv.output().strip().splitlines()
    assert out == [
        f"deepaas-run: error: cannot open log_file {str(path)!r}: "
        "No such file or directory"
    ]


@pytest.mark.parametrize("access_log", ["text", "json"])
def test_log_file_is_reopened_after_logrotate_moves_it(server, tmp_path, access_log):
    """logrotate's default (rename, then the program's next line creates the
    file anew): a plain FileHandler went on writing into the renamed file,
    compressed or deleted by the next rotations, and the log was lost with
    it; a WatchedFileHandler reopens the file."""
    log = tmp_path / "deepaas.log"
    srv = server(
        "--model-name", "demo", "--log-file", str(log), "--access-log", access_log
    ).wait_ready()
    assert srv.request("GET", "/v2/models/?before")[0] == 200
    until(lambda: "/v2/models/" in log.read_text(), "the request is logged")
    log.rename(tmp_path / "deepaas.log.1")  # what logrotate does
    assert srv.request("GET", "/v2/models/demo/?after")[0] == 200
    until(
        lambda: log.exists() and "/v2/models/demo/" in log.read_text(),
        "the next request is logged in a new file of the same name",
    )
    assert "/v2/models/demo/" not in (tmp_path / "deepaas.log.1").read_text()


GPU_PROBE = """
import os

IMPORTED_WITH = os.environ.get("CUDA_VISIBLE_DEVICES")


def get_metadata():
    return {"imported_with": IMPORTED_WITH}


def predict():
    return {
        "worker_sees": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device": os.environ.get("DEEPAAS_DEVICE"),
    }
"""


def _install_fake_plugin(root: Path, name: str, source: str) -> None:
    """A plugin module ``name`` in ``root``, registered as the model ``name``."""
    (root / f"{name}.py").write_text(source)
    register_plugins(root, name, {name: name})


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        # No NVML on this machine: auto falls back to the CPU.
        ((), {"worker_sees": "", "device": "cpu"}),
        (("--devices", "3"), {"worker_sees": "3", "device": "cuda:0"}),
    ],
)
def test_api_process_imports_plugins_with_gpus_hidden(
    server, tmp_path, devices, expected
):
    _install_fake_plugin(tmp_path, "gpu_probe", GPU_PROBE)
    srv = server(
        "--model-name",
        "gpu_probe",
        *devices,
        path=[tmp_path],
        env={"CUDA_VISIBLE_DEVICES": "3"},
    )
    srv.wait_ready()
    status, body, _ = srv.call("GET", "/v2/models/gpu_probe/")
    assert status == 200
    assert json.loads(body)["imported_with"] == ""
    status, body, _ = srv.call("POST", "/v2/models/gpu_probe/predict/")
    assert json.loads(body)["predictions"] == expected


def test_plugin_that_fails_to_import_stops_startup(server, tmp_path):
    _install_fake_plugin(tmp_path, "broken_plugin", "import no_such_module\n")
    srv = server("--model-name", "broken_plugin", path=[tmp_path])
    assert srv.proc.wait(timeout=30) == 1
    lines = srv.output().strip().splitlines()
    assert len(lines) == 2  # the plugin's line, and how to see the traceback
    assert "broken_plugin" in lines[0]
    assert "ModuleNotFoundError" in lines[0]
    assert "no_such_module" in lines[0]
    assert lines[0].endswith(f"at {tmp_path / 'broken_plugin.py'}:1")
    assert lines[1] == "deepaas-run: --debug shows the full traceback"


NAPPER = """
import time


def predict():
    time.sleep(1.5)
    return "rested"
"""


def test_sigterm_drains_requests_in_flight(server, tmp_path):
    _install_fake_plugin(tmp_path, "napper", NAPPER)
    srv = server("--model-name", "napper", path=[tmp_path])
    srv.wait_ready()
    workers = children(srv.proc.pid)
    result: dict[str, tuple[int, bytes, Any]] = {}

    def slow_request() -> None:
        result["answer"] = srv.call("POST", "/v2/models/napper/predict/")

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.5)  # the request is running in the worker
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    status, body, _ = srv.call("GET", "/readyz")
    assert status == 503
    assert json.loads(body)["status"] == "draining"
    status, body, _ = srv.call("POST", "/v2/models/napper/predict/")
    assert status == 503  # new work is refused while draining
    thread.join(timeout=30)
    status, body, _ = result["answer"]
    assert status == 200
    assert json.loads(body)["predictions"] == "rested"
    assert srv.proc.wait(timeout=30) == 0
    assert not [pid for pid in workers if alive(pid)]


COUNTER = """
import os
import time


def predict():
    with open(os.environ["COUNT_FILE"], "a") as fh:
        fh.write("called\\n")
    time.sleep(1)
    return "done"
"""


def test_requests_abandoned_by_their_client_are_not_computed(server, tmp_path):
    count_file = tmp_path / "calls.txt"
    _install_fake_plugin(tmp_path, "counter", COUNTER)
    srv = server(
        "--model-name",
        "counter",
        path=[tmp_path],
        env={"COUNT_FILE": str(count_file)},
    )
    srv.wait_ready()
    path = "/v2/models/counter/predict/"
    first = threading.Thread(target=srv.call, args=("POST", path))
    first.start()
    time.sleep(0.2)  # the first request occupies the only worker
    for _ in range(2):  # these two wait in the queue, then their clients leave
        request = urllib.request.Request(srv.url + path, method="POST")
        with pytest.raises(OSError):
            urllib.request.urlopen(request, timeout=0.2)
    first.join(timeout=30)
    time.sleep(2.5)  # long enough for both to have run, had they been kept
    assert count_file.read_text().splitlines() == ["called"]
