"""``deepaas-cli train`` on a terminal: a progress bar when the plugin
reports a total, a live line of its latest values otherwise (rich), in a
pseudo-terminal (the ``pty`` module). Ordered by events: the plugin's
train() waits on a FIFO until the test has seen what it looks for."""

from __future__ import annotations

import io
import json
import math
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepaas.cmd import cli_progress

pytest.importorskip("rich")
pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
DRIVER = (
    "import sys\n"
    "from deepaas.cmd.cli import main\n"
    "from deepaas.model.loading import PluginSpec\n"
    "spec = PluginSpec('progress', 'tests.cli.progress_plugin')\n"
    "sys.exit(main(sys.argv[1:], specs=[spec]))\n"
)


class Terminal:
    """A child process on a pseudo-terminal, its screen read as it comes."""

    def __init__(self, args: list[str], driver: str = DRIVER) -> None:
        master, slave = pty.openpty()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TERM": "xterm-256color",
            "COLUMNS": "120",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", driver, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=ROOT,
            close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.seen = b""

    def read_until(self, wanted: bytes, timeout: float = 30.0) -> bytes:
        """Read until ``wanted`` appeared (or the child closed the terminal)."""
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{wanted!r} never shown; the terminal had {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                data = b""
            if not data:
                break
            self.seen += data
        return self.seen

    def finish(self) -> int:
        self.read_until(b"\0never\0")  # to the end of its output
        os.close(self.master)
        return self.proc.wait(timeout=30)


def fifo(tmp_path: Path) -> str:
    path = str(tmp_path / "gate")
    os.mkfifo(path)
    return path


def open_gate(path: str) -> None:
    with open(path, "w") as gate:
        gate.write("go")


def test_a_bar_when_the_plugin_reports_a_total(tmp_path):
    gate = fifo(tmp_path)
    term = Terminal(["train", "--steps", "20", "--gate", gate])
    try:
        screen = term.read_until(b"20/20")  # the bar, complete
        assert b"loss=0.05" in screen  # the latest values beside it
        assert b"\x1b[" in screen  # drawn in place, not a line per step
        assert b"deepaas-cli: progress:" not in screen
    finally:
        open_gate(gate)
    assert term.finish() == 0
    assert b'{"steps": 20}' in term.seen  # the result, after the bar


def test_a_live_line_without_a_total(tmp_path):
    gate = fifo(tmp_path)
    term = Terminal(["train", "--steps", "20", "--total", "false", "--gate", gate])
    try:
        screen = term.read_until(b"loss=0.05 phase=fit")
        assert b"/20" not in screen and b"/?" not in screen  # no total: no bar
        assert b"eta" not in screen
    finally:
        open_gate(gate)
    assert term.finish() == 0
    assert b'{"steps": 20}' in term.seen


def test_plain_lines_when_not_a_terminal(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, "train", "--steps", "5"],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout) == {"steps": 5}
    err = result.stderr.decode()
    assert "\x1b[" not in err
    lines = [x for x in err.splitlines() if x.startswith("deepaas-cli: progress: ")]
    assert lines and json.loads(lines[-1].split("progress: ", 1)[1]) == {
        "step": 5,
        "total": 5,
        "loss": 0.2,
    }


def test_plain_lines_on_a_terminal_without_rich(monkeypatch):
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setitem(sys.modules, "rich.console", None)  # import fails
    assert isinstance(cli_progress.make_progress(Tty()), cli_progress.PlainProgress)  # type: ignore[arg-type]


def test_plain_lines_stay_json_with_a_nan():
    out = io.StringIO()
    progress = cli_progress.PlainProgress(out)
    progress.report({"loss": math.nan, "step": 1})
    progress.flush()

    def refuse(name: str) -> None:
        raise ValueError(f"bare {name} in a progress line")

    line = out.getvalue().strip().split("progress: ", 1)[1]
    assert json.loads(line, parse_constant=refuse) == {"loss": "nan", "step": 1}
