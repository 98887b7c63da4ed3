"""engine/orphans: what a sweep signals, on a process table made up for
the test (pid reuse cannot be made to happen with real processes)."""

from __future__ import annotations

import os
import signal
import types
from collections.abc import Callable

import pytest

from deepaas.engine import orphans

Table = dict[int, tuple[int, str, bytes]]


def _fake(
    monkeypatch: pytest.MonkeyPatch, tables: list[Table], marked: Callable
) -> list[tuple[int, int]]:
    """Sweeps read ``tables`` in turn (the last one from then on), see as
    marked what ``marked(pid, start)`` says, and record their signals."""
    sent: list[tuple[int, int]] = []
    state = {"now": tables[0]}

    def table() -> Table:
        state["now"] = tables.pop(0) if len(tables) > 1 else tables[0]
        return dict(state["now"])

    def is_marked(pid: int, mark: bytes) -> bool:
        return marked(pid, state["now"][pid][2])

    fake_os = types.SimpleNamespace(
        getpid=os.getpid,
        kill=lambda pid, sig: sent.append((pid, sig)),
        waitpid=os.waitpid,
        WNOHANG=os.WNOHANG,
    )
    monkeypatch.setattr(orphans, "_token", "token")
    monkeypatch.setattr(orphans, "_table", table)
    monkeypatch.setattr(orphans, "_marked", is_marked)
    monkeypatch.setattr(orphans, "os", fake_os)
    monkeypatch.setattr(orphans, "POLL_S", 0.0)
    return sent


def test_a_pid_given_to_another_process_is_left_alone(monkeypatch):
    """The marked process 1001 ends after SIGTERM, and its pid goes to an
    unmarked process: that one is no target (it was SIGKILLed after the
    grace period)."""
    sent = _fake(
        monkeypatch,
        [{1001: (1, "S", b"100")}, {1001: (1, "S", b"200")}],
        lambda pid, start: start == b"100",
    )
    assert orphans.kill("worker m/0 ended", "token/1", grace=0.2) == [1001]
    assert sent == [(1001, signal.SIGTERM)]


def test_a_signalled_process_that_dropped_its_mark_is_followed(monkeypatch):
    """A process that re-execs without the mark after SIGTERM (same pid,
    same start) is still killed once the grace period is over."""
    sent = _fake(
        monkeypatch,
        [{1001: (1, "S", b"100")}],
        lambda pid, start: not sent,  # marked until it is signalled
    )
    assert orphans.kill("worker m/0 ended", "token/1", grace=0.0) == [1001]
    assert (1001, signal.SIGKILL) in sent
