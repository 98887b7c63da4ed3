"""An interrupted batch run does not wait for a big input's copy.

Batch mode copies an input of 1 MiB or more on a thread, which asyncio.run
waits for when the run is interrupted: the copy checks a stop flag between
its 1 MiB chunks, gives up and removes its partial copy. Nothing here waits
on a clock: each step waits for a condition (a copy's size, a file
appearing, the process's exit), with a deadline.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from marshmallow import fields

from deepaas.cmd.cli_options import copy_upload
from deepaas.cmd.cli_output import CHUNK, Stopped
from deepaas.model.v2.fields import ArgSpec
from deepaas.model.v2.wrapper import UploadedFile
from tests.cli.test_batch import DRIVER, ROOT


def until(condition: Callable[[], object], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    event = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        event.wait(0.01)  # a tick between two looks; the deadline decides


def _spec() -> ArgSpec:
    field = fields.Field(metadata={"type": "file", "description": "The input"})
    return ArgSpec("data", field, "data", "form", is_file=True, is_list=False)


def test_a_copy_gives_up_between_two_chunks_and_leaves_nothing(tmp_path):
    """A FIFO fed chunk by chunk: the copy is seen in progress (its first
    chunk written), then the flag is set, and the next chunk is its last."""
    source = tmp_path / "source"
    os.mkfifo(source)
    copies = tmp_path / "copies"
    copies.mkdir()
    stop = threading.Event()
    outcome: list[object] = []

    def copy() -> None:
        try:
            outcome.append(copy_upload(_spec(), str(source), str(copies), stop))
        except BaseException as exc:  # the test reads it
            outcome.append(exc)

    def copied() -> bool:
        assert not outcome, outcome  # the copy ended before it should
        return [p.stat().st_size for p in copies.iterdir()] == [CHUNK]

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    feed = os.open(source, os.O_RDWR)  # opened whoever reads it
    # room for a whole chunk (the default maximum): no write here blocks
    fcntl.fcntl(feed, fcntl.F_SETPIPE_SZ, CHUNK)
    try:
        os.write(feed, b"x" * CHUNK)
        until(copied, "the first chunk copied")
        stop.set()
        os.write(feed, b"y" * CHUNK)  # wakes the copy's read: it then looks
        thread.join(timeout=30)
        assert not thread.is_alive(), "the copy did not stop"
    finally:
        os.close(feed)
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped), outcome
    assert list(copies.iterdir()) == []  # the partial copy removed


def test_without_a_flag_a_copy_is_whole(tmp_path):
    """deepaas-cli predict --KEY PATH (no stop flag): the copy as before."""
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(CHUNK) * 2 + b"tail")
    copies = tmp_path / "copies"
    copies.mkdir()
    upload = copy_upload(_spec(), str(source), str(copies))
    assert isinstance(upload, UploadedFile)
    assert Path(upload.filename).read_bytes() == source.read_bytes()
    assert upload.original_filename == "big.bin"


# Big enough that its copy outlasts the deadline below many times over on
# a disk of a few hundred MB/s (the copy writes zeros from a sparse file);
# when the copy stops, only a few MiB of it are ever written.
SPARSE = 8 << 30
EXIT_WITHIN_S = 10.0


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("how", "status", "said"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
)
def test_interrupted_during_a_big_copy_it_exits_at_once(tmp_path, how, status, said):
    src = tmp_path / "in"
    src.mkdir()
    with open(src / "huge.bin", "wb") as huge:
        huge.truncate(SPARSE)  # sparse: no disk used
    scratch = tmp_path / "scratch"  # the command's TMPDIR
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "predict", "--input-dir", str(src),
         "--output-dir", str(tmp_path / "out")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)},
        cwd=ROOT,
    )  # fmt: skip
    try:

        def copying() -> bool:
            assert proc.poll() is None, proc.communicate()
            return any(p.stat().st_size > 0 for p in scratch.glob("*/upload-*"))

        until(copying, "the input's copy to start")
        proc.send_signal(how)
        signalled = time.monotonic()
        try:
            _, err = proc.communicate(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_WITHIN_S}s after {how.name}")
        took = time.monotonic() - signalled
        assert proc.returncode == status, err
        assert err.decode().rstrip().endswith(f"deepaas-cli: {said}")
        assert b"Traceback" not in err
        assert list(scratch.iterdir()) == [], took  # no copy, whole or partial
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)  # GBs when it failed
