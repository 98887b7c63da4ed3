"""The test session's own clean-up: SIGTERM (a CI timeout, ``kill``) ends a
run as Ctrl-C does, and its private temp folder (``tests/conftest.py``)
goes with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WAITING_TEST = """
import os

def test_waits(tmp_path_factory):
    with open(os.environ["SAID"], "w") as said:
        said.write(os.environ["TMPDIR"])
    with open(os.environ["GATE"]) as gate:  # never opened for writing
        gate.read()
"""


@pytest.mark.timeout(90)
def test_sigterm_removes_the_sessions_temp_folder(tmp_path):
    (tmp_path / "test_waiting.py").write_text(WAITING_TEST)
    said, gate = tmp_path / "said", tmp_path / "gate"
    os.mkfifo(gate)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SAID": str(said),
             "GATE": str(gate)},
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (said.exists() and said.read_text()):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the inner test never started"
            time.sleep(0.05)
        folder = Path(said.read_text()).parent  # <session folder>/tmp
        assert folder.name.startswith("deepaas-tests-") and folder.is_dir()
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        proc.kill()
        proc.wait()
    assert "KeyboardInterrupt: SIGTERM" in output, output
    assert not folder.exists()
