"""The test session's own clean-up: SIGTERM (a CI timeout, ``kill``) ends a
run as Ctrl-C does, and its private temp folder (``tests/conftest.py``)
goes with it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WAITING_TEST = """
import os

def test_waits():
    print("TMPDIR=" + os.environ["TMPDIR"], flush=True)  # -s: not captured
    with open(os.environ["GATE"]) as gate:  # never opened for writing
        gate.read()
"""


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, seconds: float) -> bytes:
    """What ``proc`` wrote to stdout until a line with ``marker``."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + seconds
    while marker not in seen or not seen.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"{marker!r} never came: {seen!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            data = os.read(proc.stdout.fileno(), 65536)
            assert data, f"the inner session ended: {seen!r}"
            seen += data
    return seen


@pytest.mark.timeout(90)
def test_sigterm_removes_the_sessions_temp_folder(tmp_path):
    (tmp_path / "test_waiting.py").write_text(WAITING_TEST)
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "tests.conftest",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "GATE": str(gate)},
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        seen = _read_until(proc, b"TMPDIR=", 60)
        line = seen[seen.index(b"TMPDIR=") :].split(b"\n")[0]
        folder = Path(line[len(b"TMPDIR=") :].decode()).parent  # <session>/tmp
        assert folder.name.startswith("deepaas-tests-") and folder.is_dir()
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        proc.kill()
        proc.wait()
    assert "KeyboardInterrupt: SIGTERM" in output, output
    assert not folder.exists()
