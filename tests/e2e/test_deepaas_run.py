"""deepaas-run as a user runs it: a real process, real HTTP, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

DEEPAAS_RUN = str(Path(sys.executable).with_name("deepaas-run"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _call(
    url: str,
    method: str = "GET",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(
        url, method=method, data=data, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


class Server:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [DEEPAAS_RUN, "--listen-port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self._output: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._output.append(line)

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait for the banner: every model has a warm worker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready in" in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"deepaas-run did not start:\n{self.output()}")

    def output(self) -> str:
        """Everything the server printed so far (all of it once it exited)."""
        if self.proc.poll() is not None:
            self._reader.join(timeout=10)
        return b"".join(self._output).decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def server():
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Server:
        srv = Server(*args, env=env)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop(signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_predicts_and_stops_without_orphans(server, sig):
    srv = server("--workers", "2", "--model-name", "demo,demo_class")
    srv.wait_ready()
    status, body, headers = _call(f"{srv.base}/")
    assert status == 200
    assert json.loads(body)["versions"][0]["id"] == "v2"

    status, body, _ = _call(
        f"{srv.base}/v2/models/demo/predict/?number=7", method="POST"
    )
    assert status == 200
    assert json.loads(body)["args"]["number"] == 7

    status, body, headers = _call(
        f"{srv.base}/v2/models/demo/predict/",
        method="POST",
        headers={"Accept": "image/png"},
    )
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert body.startswith(b"\x89PNG")

    workers = _children(srv.proc.pid)
    assert len(workers) == 4  # 2 models (demo, demo_class) x 2 workers
    assert srv.stop(sig) == 0
    out = srv.output()
    assert "ready in" in out
    assert not [pid for pid in workers if _alive(pid)]


def test_worker_survives_nothing_when_server_is_killed(server):
    srv = server("--model-name", "demo")
    srv.wait_ready()
    workers = _children(srv.proc.pid)
    assert workers
    srv.stop(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.05)
    assert not [pid for pid in workers if _alive(pid)]


def test_settings_from_environment_and_config_file(server, tmp_path):
    config = tmp_path / "deepaas.ini"
    config.write_text("[DEFAULT]\nbase_path = /from-file\ndoc_endpoint = false\n")
    srv = server("--config-file", str(config), env={"DEEPAAS_V2_MODEL": "demo_class"})
    deadline = time.monotonic() + 30
    while True:
        try:
            status, body, _ = _call(f"{srv.base}/from-file/v2/models/")
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, srv.output()
            time.sleep(0.1)
    assert status == 200
    assert [m["name"] for m in json.loads(body)["models"]] == ["demo_class"]
    assert _call(f"{srv.base}/from-file/api")[0] == 404


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
    """A plugin 'installed' by a dist-info folder on PYTHONPATH."""
    (root / f"{name}.py").write_text(source)
    dist = root / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[deepaas.v2.model]\n{name} = {name}\n")


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
        env={"PYTHONPATH": str(tmp_path), "CUDA_VISIBLE_DEVICES": "3"},
    )
    srv.wait_ready()
    status, body, _ = _call(f"{srv.base}/v2/models/gpu_probe/")
    assert status == 200
    assert json.loads(body)["imported_with"] == ""
    status, body, _ = _call(f"{srv.base}/v2/models/gpu_probe/predict/", "POST")
    assert json.loads(body)["predictions"] == expected


def test_plugin_that_fails_to_import_stops_startup(server, tmp_path):
    _install_fake_plugin(tmp_path, "broken_plugin", "import no_such_module\n")
    srv = server("--model-name", "broken_plugin", env={"PYTHONPATH": str(tmp_path)})
    assert srv.proc.wait(timeout=30) == 1
    lines = srv.output().strip().splitlines()
    assert len(lines) == 1
    assert "broken_plugin" in lines[0]
    assert "ModuleNotFoundError" in lines[0]
    assert "no_such_module" in lines[0]


NAPPER = """
import time


def predict():
    time.sleep(1.5)
    return "rested"
"""


def test_sigterm_drains_requests_in_flight(server, tmp_path):
    _install_fake_plugin(tmp_path, "napper", NAPPER)
    srv = server("--model-name", "napper", env={"PYTHONPATH": str(tmp_path)})
    srv.wait_ready()
    workers = _children(srv.proc.pid)
    result: dict[str, object] = {}

    def slow_request() -> None:
        result["answer"] = _call(f"{srv.base}/v2/models/napper/predict/", "POST")

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.5)  # the request is running in the worker
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    status, body, _ = _call(f"{srv.base}/readyz")
    assert status == 503
    assert json.loads(body)["status"] == "draining"
    status, body, _ = _call(f"{srv.base}/v2/models/napper/predict/", "POST")
    assert status == 503  # new work is refused while draining
    thread.join(timeout=30)
    status, body, _ = result["answer"]
    assert status == 200
    assert json.loads(body)["predictions"] == "rested"
    assert srv.proc.wait(timeout=30) == 0
    assert not [pid for pid in workers if _alive(pid)]


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
        env={"PYTHONPATH": str(tmp_path), "COUNT_FILE": str(count_file)},
    )
    srv.wait_ready()
    url = f"{srv.base}/v2/models/counter/predict/"
    first = threading.Thread(target=_call, args=(url, "POST"))
    first.start()
    time.sleep(0.2)  # the first request occupies the only worker
    for _ in range(2):  # these two wait in the queue, then their clients leave
        request = urllib.request.Request(url, method="POST")
        with pytest.raises(OSError):
            urllib.request.urlopen(request, timeout=0.2)
    first.join(timeout=30)
    time.sleep(2.5)  # long enough for both to have run, had they been kept
    assert count_file.read_text().splitlines() == ["called"]
