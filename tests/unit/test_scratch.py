"""The scratch directory: created on start, removed on stop, leftovers swept.

A server's directory is judged alive by the lock its server holds, never by
the pid in its name: the owners here are real processes, killed for real.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepaas import scratch
from deepaas.scratch import OLD_FORMAT_AGE_S, ScratchDir, sweep_stale
from tests.deepaas_run import REPO_ROOT

# An owner in a process of its own: its directory named with the pid given
# (as servers in PID namespaces all are pid 1), a file in it; it says the
# path, then holds the directory until its stdin closes, and removes it.
OWNER = """
import sys
from pathlib import Path
from deepaas.scratch import ScratchDir
parent, pid = sys.argv[1], sys.argv[2]
owner = ScratchDir(parent)
owner.path = str(Path(parent) / f"deepaas-{pid}-{Path(owner.path).name[-16:]}")
owner.create()
(Path(owner.path) / "upload-x").write_text("in use")
print(owner.path, flush=True)
sys.stdin.read()
owner.remove()
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class Owner:
    """A process holding a scratch directory."""

    def __init__(self, parent: Path, pid: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(parent), str(pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
            text=True,
        )
        assert self.proc.stdout is not None
        self.path = Path(self.proc.stdout.readline().strip())
        assert self.path.name, "the owner did not start"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def owners() -> Iterator[list[Owner]]:
    started: list[Owner] = []
    yield started
    for owner in started:
        owner.close()


def test_created_on_start_and_removed_on_stop(tmp_path):
    scratch_dir = ScratchDir(str(tmp_path))
    assert not os.path.exists(scratch_dir.path)
    scratch_dir.create()
    assert os.path.isdir(scratch_dir.path)
    assert scratch.owner(scratch_dir.path) is scratch_dir
    (tmp_path / os.path.basename(scratch_dir.path) / "upload-x").write_text("x")
    scratch_dir.remove()
    assert not os.path.exists(scratch_dir.path)
    assert scratch.owner(scratch_dir.path) is None
    assert os.listdir(tmp_path) == []  # no lock file or anything else beside


@pytest.mark.parametrize("pid", [1, "dead"])
def test_a_killed_owner_is_swept_a_live_one_with_the_same_pid_is_not(
    tmp_path, owners, pid
):
    """The PID namespace case: both directories carry the same pid (1, alive
    here; or one that is dead here), so only the lock tells them apart."""
    pid = _dead_pid() if pid == "dead" else pid
    killed = Owner(tmp_path, pid)
    owners.append(killed)
    live = Owner(tmp_path, pid)
    owners.append(live)
    assert killed.path.name.split("-")[1] == live.path.name.split("-")[1] == str(pid)
    assert sweep_stale(tmp_path) == []  # both run: neither is touched

    killed.kill()
    assert sweep_stale(tmp_path) == [str(killed.path)]
    assert not killed.path.exists()
    assert (live.path / "upload-x").read_text() == "in use"

    # A server starting now sweeps too, and leaves the live one alone.
    starting = ScratchDir(str(tmp_path))
    starting.create()
    assert live.path.exists()
    starting.remove()

    live.stop()  # removes its own on the way out
    assert os.listdir(tmp_path) == []


def test_old_format_leftovers_are_swept_only_when_clearly_dead(tmp_path):
    """Directories named by earlier versions (8 hex digits) have no lock:
    removed when their pid is dead here and they are untouched for a day."""
    dead = _dead_pid()
    old_dead = tmp_path / f"deepaas-{dead}-0123abcd"
    fresh_dead = tmp_path / f"deepaas-{dead}-4567abcd"
    old_alive = tmp_path / "deepaas-1-89abcdef"  # pid 1: cannot tell
    for path in (old_dead, fresh_dead, old_alive):
        path.mkdir()
        (path / "upload-abc.jpg").write_text("left behind")
    day_ago = time.time() - OLD_FORMAT_AGE_S - 60
    for path in (old_dead, old_alive):
        os.utime(path, (day_ago, day_ago))
    unrelated = tmp_path / "deepaas-not-ours"
    unrelated.mkdir()

    assert sweep_stale(tmp_path) == [str(old_dead)]
    assert fresh_dead.exists() and old_alive.exists() and unrelated.exists()


def test_a_link_or_file_with_a_scratch_name_is_left_alone(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x")
    (tmp_path / f"deepaas-{_dead_pid()}-{'ab' * 8}").symlink_to(target)
    (tmp_path / f"deepaas-{_dead_pid()}-{'cd' * 8}").write_text("a file")
    assert sweep_stale(tmp_path) == []
    assert (target / "keep").exists()


def test_made_again_when_removed_under_the_server(tmp_path):
    owner = ScratchDir(str(tmp_path))
    owner.create()
    shutil.rmtree(owner.path)  # someone cleaned the temp folder
    assert owner.ensure() is True
    assert os.path.isdir(owner.path)
    assert sweep_stale(tmp_path) == []  # made again locked: not swept
    owner.remove()
    assert owner.ensure() is False  # never made again once the server stopped
    assert not os.path.exists(owner.path)


def test_ready_checks_at_most_once_a_second_and_again_when_asked(tmp_path):
    owner = ScratchDir(str(tmp_path))
    owner.create()

    async def scenario() -> None:
        await owner.ready()
        os.rmdir(owner.path)
        await owner.ready()  # checked just now: not looked at again
        assert not os.path.exists(owner.path)
        owner.recheck()  # a request found it missing
        await asyncio.gather(owner.ready(), owner.ready())
        assert os.path.isdir(owner.path)

    try:
        asyncio.run(scenario())
    finally:
        owner.remove()


def test_a_directory_swept_before_it_is_opened_is_made_again(tmp_path, monkeypatch):
    """Another server starting sweeps the parent between our mkdir and our
    open (the directory is not locked yet): the server makes it again
    instead of failing to start."""
    scratch = ScratchDir(str(tmp_path))
    real_open = os.open
    swept: list[str] = []

    def open_after_a_sweep(path, flags, *args):
        if path == scratch.path and not swept:
            swept.append(path)
            os.rmdir(path)  # the other server's sweep wins the race
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_after_a_sweep)
    scratch.create()
    monkeypatch.undo()
    try:
        assert swept == [scratch.path]
        assert os.path.isdir(scratch.path)
        assert sweep_stale(tmp_path) == []  # made again, and locked
    finally:
        scratch.remove()
