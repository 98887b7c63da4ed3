"""An owner frozen (SIGSTOP) for longer than its lease, then thawed.

Another server sharing the state directory marks the frozen owner's
trainings as stopped: that state is final. The owner, once it runs again,
stops their processes instead of going on, never writes them back to
``running`` or ``done``, and removes their files itself; the other server
leaves those files alone while the owner's process exists.
"""

from __future__ import annotations

import functools
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deepaas.training.ownership import HEARTBEAT_S, LEASE_S
from deepaas.training.store import STOPPED_WHILE_RUNNING
from tests.deepaas_run import alive, closed_at_end, until
from tests.training.runserver import RunServer, stored

pytestmark = pytest.mark.timeout(150)

Start = Callable[..., RunServer]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def servers(tmp_path: Path, state: Path) -> Iterator[Start]:
    with closed_at_end(functools.partial(RunServer, tmp_path, state)) as start:
        yield start


def _heartbeats(state: Path) -> dict[str, float]:
    """pid -> last heartbeat of each server row."""
    with sqlite3.connect(state / "trainings.sqlite3") as db:
        rows = db.execute("SELECT pid, heartbeat FROM servers")
        return {str(pid): float(beat) for pid, beat in rows}


def _beats_after(state: Path, server: RunServer, count: int) -> None:
    """Wait until ``server`` has written ``count`` more heartbeats (each one
    a tick: what it does with a heartbeat has been done)."""
    pid = str(server.proc.pid)
    first = _heartbeats(state).get(pid, 0.0)
    until(
        lambda: _heartbeats(state).get(pid, 0.0) >= first + (count - 0.5) * HEARTBEAT_S,
        f"server {pid} beats {count} more times",
        timeout=10 + count * HEARTBEAT_S,
    )


def test_a_frozen_owner_stops_what_another_server_marked(servers: Start, state: Path):
    a = servers("--max-trainings", "2", name="a")
    b = servers(name="b")
    a.wait_ready()
    b.wait_ready()
    long = a.submit(mode="sleep", seconds=120)["uuid"]
    short = a.submit(mode="sleep", seconds=4)["uuid"]  # ends while a is frozen
    until(
        lambda: (
            {u: s for u, (s, _) in stored(state).items()}
            == {long: "running", short: "running"}
        ),
        "both are recorded as running",
    )
    runners = until(
        lambda: (found := a.runners()).keys() == {long, short} and found,
        "both training processes run",
    )
    jobs = state / "jobs"
    assert (jobs / long).is_dir() and (jobs / short).is_dir()

    a.proc.send_signal(signal.SIGSTOP)  # frozen: alive, no heartbeat
    try:
        until(
            lambda: stored(state).get(long, ("",))[0] == "error",
            "the other server marks the frozen owner's trainings",
            timeout=LEASE_S + 10 * HEARTBEAT_S,
        )
        assert stored(state)[long] == ("error", STOPPED_WHILE_RUNNING)
        assert stored(state)[short][0] == "error"
        _beats_after(state, b, 2)  # b's pass over left-over job files ran
        # The owner's process exists (stopped): its files stay.
        assert (jobs / long).is_dir() and (jobs / short).is_dir()
        assert alive(runners[long])  # its training still runs meanwhile
        until(lambda: not alive(runners[short]), "the short training ends")
    finally:
        a.proc.send_signal(signal.SIGCONT)

    until(lambda: not alive(runners[long]), "the thawed owner stops the training")
    _beats_after(state, a, 2)  # a's heartbeat runs again, its writes are done
    final = stored(state)
    assert final[long] == ("error", STOPPED_WHILE_RUNNING)  # not flipped back
    assert final[short][0] == "error"  # its process finished: not "done"
    for uuid in (long, short):
        seen_by_a, seen_by_b = a.record(uuid), b.record(uuid)
        assert seen_by_a["status"] == seen_by_b["status"] == "error", seen_by_a
        assert seen_by_a["message"] == seen_by_b["message"] == final[uuid][1]
        assert seen_by_a["result"]["output"] is None
    until(
        lambda: not (jobs / long).exists() and not (jobs / short).exists(),
        "the owner removes the job files",
    )
    assert "had lapsed" in a.output()
    # The owner goes on serving, with its lease renewed.
    again = a.submit(mode="sleep")["uuid"]
    until(lambda: a.record(again)["status"] == "done", "a new training runs")
    # The owner answers from memory as its final write is queued for the
    # store's thread: the other server reads it once it is written.
    until(lambda: b.record(again)["status"] == "done", "the other server sees it")
