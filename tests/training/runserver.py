"""``deepaas-run`` as a subprocess serving the training test plugins.

For the tests where servers share a state directory, crash (SIGKILL) and
start again, as a platform runs them: each server is its own process in its
own session, with its output in a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEEPAAS_RUN = str(Path(sys.executable).with_name("deepaas-run"))
MODELS = {"trainer": "tests.plugins.trainer", "gated": "tests.plugins.gated"}
TRAIN = "/v2/models/trainer/train/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``predicate`` until it answers something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children(pid: int) -> list[int]:
    """Live children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields and fields[0] not in "ZX" and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def install_plugins(root: Path) -> None:
    """The test plugins registered as ``deepaas.v2.model`` entry points."""
    dist = root / "deepaas_test_trainers-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: deepaas-test-trainers\nVersion: 1.0\n"
    )
    points = "".join(f"{name} = {target}\n" for name, target in MODELS.items())
    (dist / "entry_points.txt").write_text(f"[deepaas.v2.model]\n{points}")


class RunServer:
    """One ``deepaas-run`` (``prefix`` runs it through another command, such
    as ``unshare``) serving the trainer plugin on a state directory."""

    def __init__(
        self,
        tmp_path: Path,
        state_dir: Path,
        *args: str,
        prefix: Sequence[str] = (),
        name: str = "server",
    ) -> None:
        self.port = free_port()
        self.state_dir = state_dir
        plugin_root = tmp_path / "plugin"
        install_plugins(plugin_root)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DEEPAAS_", "OS_DEFAULT__"))
        }
        env.update(
            PYTHONPATH=os.pathsep.join([str(plugin_root), str(REPO_ROOT)]),
            PYTHONUNBUFFERED="1",
        )
        self.log = tmp_path / f"{name}-{self.port}.log"
        command = [
            *prefix,
            DEEPAAS_RUN,
            "--listen-ip",
            "127.0.0.1",
            "--listen-port",
            str(self.port),
            "--model-name",
            "trainer",
            "--state-dir",
            str(state_dir),
            "--devices",
            "cpu",
            *args,
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> RunServer:
        def ready() -> bool:
            assert self.proc.poll() is None, f"deepaas-run exited:\n{self.output()}"
            return "ready in" in self.output()

        until(ready, "deepaas-run is ready", timeout)
        return self

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=data,
            headers={"Content-Type": "application/json"} if data else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def submit(self, **kwargs: Any) -> dict[str, Any]:
        status, body = self.request("POST", TRAIN, kwargs)
        assert status == 200, body
        return body

    def record(self, uuid: str) -> dict[str, Any]:
        status, body = self.request("GET", TRAIN + uuid)
        assert status == 200, body
        return body

    def kill(self) -> None:
        """SIGKILL the server (its training processes die with it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        """Whatever happened, leave nothing running (its whole session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
