"""The scratch directory: created on start, removed on stop, leftovers swept."""

from __future__ import annotations

import os
import subprocess
import sys

from deepaas.scratch import ScratchDir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_created_on_start_and_removed_on_stop(tmp_path):
    scratch = ScratchDir(str(tmp_path))
    assert not os.path.exists(scratch.path)
    scratch.create()
    assert os.path.isdir(scratch.path)
    (tmp_path / os.path.basename(scratch.path) / "upload-x").write_text("x")
    scratch.remove()
    assert not os.path.exists(scratch.path)


def test_leftovers_of_dead_servers_are_swept(tmp_path):
    dead = tmp_path / f"deepaas-{_dead_pid()}-0123abcd"
    dead.mkdir()
    (dead / "upload-abc.jpg").write_text("left behind")
    alive = tmp_path / f"deepaas-{os.getppid()}-0123abcd"
    alive.mkdir()
    unrelated = tmp_path / "deepaas-not-ours"
    unrelated.mkdir()
    ScratchDir(str(tmp_path)).create()
    assert not dead.exists()
    assert alive.exists()
    assert unrelated.exists()
