"""The scratch directory of a real ``deepaas-run``: full, removed, shared.

- Its disk is full (a 1 MiB tmpfs as ``TMPDIR``; mounting needs root): an
  upload that does not fit is a 507 JSON answer that names no path, and
  nothing of it is left.
- It is removed while the server runs (someone cleaned the temp folder):
  the server makes it again; no request gets a 500.
- Servers that are all pid 1 (each in a PID namespace, as in containers)
  share ``TMPDIR``: a starting server's sweep removes only the directory of
  the one that was killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepaas.scratch import NO_SPACE_MESSAGE, PREFIX, sweep_stale
from tests.deepaas_run import (
    DeepaasRun,
    children,
    closed_at_end,
    register_plugins,
    until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MODELS = {"faults": "tests.plugins.faults", "binary": "tests.plugins.binary"}
UPLOAD = "/v2/models/faults/predict/?mode=ok"
TMPFS_SIZE = 1 << 20


class Server(DeepaasRun):
    """``deepaas-run`` serving the faults and binary plugins with ``tmp``
    as its ``TMPDIR``."""

    def __init__(self, tmp_path: Path, tmp: Path, **kwargs: object) -> None:
        self.tmp = tmp
        plugin_root = tmp_path / "plugin"
        register_plugins(plugin_root, "deepaas_test_scratch", MODELS)
        super().__init__(
            tmp_path,
            "--model-name",
            "faults",
            "--model-name",
            "binary",
            path=[plugin_root],
            env={"TMPDIR": str(tmp)},
            **kwargs,  # type: ignore[arg-type]
        )

    def scratch_dirs(self) -> list[Path]:
        return sorted(p for p in self.tmp.iterdir() if p.name.startswith(PREFIX))

    def upload(self, size: int) -> tuple[int, dict, dict]:
        """POST a ``size``-byte file: (status, JSON answer, headers)."""
        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="data"; '
            f'filename="big.bin"\r\nContent-Type: application/octet-stream'
            f"\r\n\r\n".encode()
            + b"u" * size
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        status, raw, got = self.call("POST", UPLOAD, body, headers)
        return status, json.loads(raw), dict(got)


def _mount_tmpfs(where: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a full disk) needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small tmpfs (a full disk)")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", where],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")


@pytest.fixture
def full_tmp(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted at the end."""
    where = tmp_path / "small-tmp"
    where.mkdir()
    _mount_tmpfs(where)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], check=False)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[type[Server]]:
    with closed_at_end(Server) as start:
        yield start  # type: ignore[misc]


def _free(path: Path) -> int:
    return os.statvfs(path).f_bavail * os.statvfs(path).f_frsize


def test_an_upload_that_does_not_fit_is_507_and_leaves_nothing(
    tmp_path, full_tmp, servers
):
    srv = servers(tmp_path, full_tmp).wait_ready()
    [scratch] = srv.scratch_dirs()
    free = _free(full_tmp)

    status, body, _ = srv.upload(2 * TMPFS_SIZE)
    assert (status, body) == (507, {"message": NO_SPACE_MESSAGE})
    assert str(full_tmp) not in json.dumps(body)
    assert list(scratch.iterdir()) == []  # the partial upload is removed
    assert _free(full_tmp) == free
    assert "No space left on device" in srv.output()  # the detail is logged

    # The server goes on: an upload that fits is served.
    status, body, _ = srv.upload(10_000)
    assert status == 200, body
    until(lambda: list(scratch.iterdir()) == [], "the upload is removed")


def test_a_result_that_does_not_fit_is_507_and_leaves_nothing(
    tmp_path, full_tmp, servers
):
    srv = servers(tmp_path, full_tmp).wait_ready()
    [scratch] = srv.scratch_dirs()
    status, body = srv.request(
        "POST", "/v2/models/binary/predict/?kind=big&accept=application/pdf"
    )
    assert (status, body) == (507, {"message": NO_SPACE_MESSAGE})
    assert list(scratch.iterdir()) == []


def test_a_scratch_dir_removed_under_the_server_is_made_again(tmp_path, servers):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    srv = servers(tmp_path, tmp).wait_ready()
    [scratch] = srv.scratch_dirs()
    assert srv.upload(100_000)[0] == 200  # the directory was checked just now
    shutil.rmtree(scratch)  # someone cleaned the temp folder

    # Within a second of that check the server does not look again: the
    # upload finds no directory, and the answer says to retry (the server
    # makes the directory again first). Later, it is made before writing.
    status, body, headers = srv.upload(100_000)
    if status == 503:
        assert headers["Retry-After"] == "1"
        assert "retry" in body["message"]
        assert str(tmp) not in body["message"]
        status, body, headers = srv.upload(100_000)
    assert status == 200, body
    assert srv.scratch_dirs() == [scratch]
    assert sweep_stale(tmp) == []  # made again, and locked again
    until(lambda: list(scratch.iterdir()) == [], "the upload is removed")


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare --pid --mount-proc needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare command")
def test_servers_that_are_all_pid_1_sweep_only_the_dead_ones_dir(tmp_path, servers):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"]
    first = servers(tmp_path, tmp, prefix=prefix, name="first").wait_ready()
    [first_dir] = first.scratch_dirs()
    second = servers(tmp_path, tmp, prefix=prefix, name="second").wait_ready()
    # Both are pid 1 in their namespaces: the same name but for the random part.
    assert first_dir.exists()  # the second's sweep left the live one alone
    [second_dir] = [p for p in second.scratch_dirs() if p != first_dir]
    assert first_dir.name.startswith(f"{PREFIX}1-")
    assert second_dir.name.startswith(f"{PREFIX}1-")

    server_pid = until(lambda: children(first.proc.pid), "unshare forks")[0]
    os.kill(server_pid, signal.SIGKILL)  # no clean-up: its dir is left
    first.proc.wait(timeout=30)
    assert first_dir.exists()

    assert sweep_stale(tmp) == [str(first_dir)]  # as a starting server sweeps
    assert second_dir.exists()
    assert second.request("GET", "/v2/models/")[0] == 200
