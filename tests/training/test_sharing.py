"""Servers sharing one state directory: records, cancels, crashes, PID 1.

Two ``deepaas-run`` processes (tests/training/runserver.py) on free ports
share a state directory; in-process apps stand in for an owner that never
acts on a cancel request.
"""

from __future__ import annotations

import functools
import http.client
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deepaas.training.ownership import HEARTBEAT_S, LEASE_S
from deepaas.training.store import STOPPED_WHILE_RUNNING
from tests.deepaas_run import HANG_S, alive, children, closed_at_end, until
from tests.support import plugin_spec, start_client
from tests.training.runserver import TRAIN, RunServer, stored

pytestmark = pytest.mark.timeout(120)

Start = Callable[..., RunServer]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Start]:
    state = tmp_path / "state"
    with closed_at_end(functools.partial(RunServer, tmp_path, state)) as start:
        yield start


def test_either_server_shows_and_cancels_the_others_trainings(servers: Start):
    a, b = servers(name="a"), servers(name="b")
    a.wait_ready()
    b.wait_ready()
    running = a.submit(mode="sleep", seconds=60)
    queued = a.submit(mode="sleep")
    assert (running["status"], queued["status"]) == ("running", "queued")
    assert b.record(running["uuid"])["status"] == "running"
    status, listed = b.request("GET", TRAIN)
    assert status == 200
    assert [r["uuid"] for r in listed] == [running["uuid"], queued["uuid"]]

    for record in (queued, running):  # through b, which runs neither
        started = time.monotonic()
        status, body = b.request("DELETE", TRAIN + record["uuid"])
        assert status == 200, body
        assert body["status"] == "cancelled"
        assert time.monotonic() - started < 2 * HEARTBEAT_S + 3.0
        assert a.record(record["uuid"])["status"] == "cancelled"

    done = a.submit(mode="sleep")
    until(lambda: a.record(done["uuid"])["status"] == "done", "it is done")
    status, body = b.request("DELETE", TRAIN + done["uuid"])  # too late: as is
    assert status == 200 and body["status"] == "done"


def test_a_killed_owner_is_found_by_the_other_server(servers: Start):
    a, b = servers(name="a"), servers(name="b")
    a.wait_ready()
    b.wait_ready()
    record = a.submit(mode="sleep", seconds=120)
    until(lambda: b.record(record["uuid"])["status"] == "running", "it is recorded")
    # SIGKILL: nothing written, its lease is left to expire
    assert a.stop(signal.SIGKILL) == -signal.SIGKILL
    found = until(
        lambda: (r := b.record(record["uuid"]))["status"] == "error" and r,
        "the other server marks the training",
        timeout=LEASE_S + 4 * HEARTBEAT_S,
    )
    assert found["message"] == STOPPED_WHILE_RUNNING
    assert "result" in found


async def test_delete_answers_409_naming_an_owner_that_does_not_act(tmp_path):
    """An owner that holds its lease but never takes the request (a stalled
    server, written here by hand) gets a 409; once its lease expired, the
    training is marked and answered."""
    state = tmp_path / "state"
    client = await start_client(
        [plugin_spec("trainer")], {"state_dir": str(state), "devices": "cpu"}
    )
    try:
        sleeper = subprocess.Popen(["sleep", "60"])  # a live PID for the owner
        path = state / "trainings.sqlite3"
        uuid = "f" * 32
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute(
                "INSERT INTO servers (id, pid, host, pidns, pstart, started, "
                "heartbeat) VALUES ('stalled', ?, 'other-host', '', 0, '', ?)",
                (sleeper.pid, time.time()),
            )
            db.execute(
                "INSERT INTO trainings (uuid, model, args, status, date, log_path, "
                "owner_pid, owner) VALUES (?, 'trainer', '{}', 'running', "
                "'2024-01-01 00:00:00.000000', 'x.log', ?, 'stalled')",
                (uuid, sleeper.pid),
            )
        started = time.monotonic()
        response = await client.delete(TRAIN + uuid)
        body = await response.json()
        assert response.status == 409, body
        assert body["owner"] == {
            "id": "stalled",
            "pid": sleeper.pid,
            "host": "other-host",
        }
        assert "stalled" in body["message"] and "other-host" in body["message"]
        assert "the request was taken back" in body["message"]
        assert time.monotonic() - started < 2 * HEARTBEAT_S + 3.0
        with sqlite3.connect(path) as db:  # the request was taken back
            row = db.execute(
                "SELECT status, cancel_requested FROM trainings WHERE uuid = ?", (uuid,)
            ).fetchone()
        assert row == ("running", None)

        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute(
                "UPDATE servers SET heartbeat = ? WHERE id = 'stalled'",
                (time.time() - LEASE_S - 1,),
            )
        response = await client.delete(TRAIN + uuid)
        body = await response.json()
        assert response.status == 200, body
        assert body["status"] == "error" and body["message"] == STOPPED_WHILE_RUNNING
        sleeper.kill()
        sleeper.wait()
    finally:
        await client.close()


def _cancel_columns(server: RunServer, uuid: str) -> tuple[object, object]:
    """(cancel_requested, cancel_acked) of a training, as stored."""
    with sqlite3.connect(server.state_dir / "trainings.sqlite3") as db:
        row = db.execute(
            "SELECT cancel_requested, cancel_acked FROM trainings WHERE uuid = ?",
            (uuid,),
        ).fetchone()
    return row[0], row[1]


def _beats_after(server: RunServer, count: int) -> None:
    """Wait until ``server`` has renewed its lease ``count`` more times (each
    heartbeat takes the cancel requests written before it)."""

    def beat() -> float:
        with sqlite3.connect(server.state_dir / "trainings.sqlite3") as db:
            row = db.execute(
                "SELECT heartbeat FROM servers WHERE pid = ?", (server.proc.pid,)
            ).fetchone()
        return float(row[0]) if row else 0.0

    first = beat()
    until(
        lambda: beat() >= first + (count - 0.5) * HEARTBEAT_S,
        f"the server renews its lease {count} more times",
        timeout=10 + count * HEARTBEAT_S,
    )


def test_a_delete_an_owner_did_not_take_is_taken_back(servers: Start):
    """The owner is frozen (SIGSTOP, for less than its lease): a DELETE
    through the other server answers 409 and takes its request back, and
    so does a DELETE whose client hangs up; the owner, thawed, cancels
    nothing."""
    a, b = servers(name="a"), servers(name="b")
    a.wait_ready()
    b.wait_ready()
    uuid = a.submit(mode="sleep", seconds=120)["uuid"]
    pid = until(lambda: a.runners().get(uuid), "the training runs")
    until(lambda: stored(a.state_dir)[uuid][0] == "running", "it is recorded")

    a.proc.send_signal(signal.SIGSTOP)
    try:  # a client that hangs up while b waits for the owner
        conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=HANG_S)
        conn.request("DELETE", TRAIN + uuid)  # sent; its answer is not read
        # Seen while the client still waits: once it hangs up, b takes the
        # request back within milliseconds, which a poll started after the
        # hang-up missed about half the time.
        until(lambda: _cancel_columns(a, uuid)[0] is not None, "it was requested")
        conn.close()
        until(
            lambda: _cancel_columns(a, uuid) == (None, None),
            "the request of the client that hung up is taken back",
        )
    finally:
        a.proc.send_signal(signal.SIGCONT)
    _beats_after(a, 2)
    assert a.record(uuid)["status"] == "running" and alive(pid)

    a.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        status, body = b.request("DELETE", TRAIN + uuid)
        assert time.monotonic() - started < LEASE_S - 1  # before a's lease lapses
    finally:
        a.proc.send_signal(signal.SIGCONT)
    assert status == 409, body
    assert "did not take the cancel request" in body["message"]
    assert "the request was taken back" in body["message"]
    assert body["owner"]["pid"] == a.proc.pid
    assert _cancel_columns(a, uuid) == (None, None)
    _beats_after(a, 2)  # the thawed owner read its requests twice: none
    assert a.record(uuid)["status"] == "running" and alive(pid)


def test_a_409_for_a_cancel_the_owner_took_says_it_goes_on(servers: Start):
    """The owner took the request but its training ignores SIGTERM and its
    --train-cancel-grace is longer than the asking server waits: the 409
    says the cancel goes on, and it does."""
    a = servers("--train-cancel-grace", "12", name="a").wait_ready()
    b = servers("--train-cancel-grace", "1", name="b").wait_ready()
    uuid = a.submit(mode="stubborn", seconds=120)["uuid"]
    until(lambda: "ignoring SIGTERM" in _log(a, uuid), "it ignores SIGTERM")
    pid = a.runners()[uuid]
    status, body = b.request("DELETE", TRAIN + uuid)
    assert status == 409, body
    assert "took the cancel request and is cancelling it" in body["message"]
    assert "the cancel goes on" in body["message"]
    assert "taken back" not in body["message"]
    requested, acked = _cancel_columns(a, uuid)
    assert requested is not None and acked is not None
    assert a.record(uuid)["status"] == "running"
    done = until(
        lambda: (r := b.record(uuid))["status"] != "running" and r,
        "the owner's cancel ends it",
        timeout=30,
    )
    assert done["status"] == "cancelled"
    assert not alive(pid)


def _log(server: RunServer, uuid: str) -> str:
    path = server.state_dir / "logs" / f"{uuid}.log"
    return path.read_text() if path.exists() else ""


def _stored_status(path: Path, uuid: str) -> str | None:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT status FROM trainings WHERE uuid = ?", (uuid,))
        found = row.fetchone()
    return None if found is None else str(found[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare --pid --mount-proc needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare command")
def test_a_server_as_pid_1_killed_and_started_again(servers: Start):
    """The container case: ``deepaas-run`` is PID 1 of its own PID namespace
    every time it starts; a crash must not leave its training running."""
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"]
    first = servers(prefix=prefix, name="first").wait_ready()
    server_pid = until(lambda: children(first.proc.pid), "unshare forks")[0]
    with open(f"/proc/{server_pid}/status") as status:
        nspid = next(line for line in status if line.startswith("NSpid:"))
    assert nspid.split()[-1] == "1", nspid  # deepaas-run is PID 1 in there
    record = first.submit(mode="sleep", seconds=120)
    path = first.state_dir / "trainings.sqlite3"
    until(lambda: _stored_status(path, record["uuid"]) == "running", "it is recorded")
    os.kill(server_pid, 9)  # PID 1 dies: its namespace with it
    first.proc.wait(timeout=30)

    again = servers(prefix=prefix, name="again").wait_ready()
    found = until(
        lambda: (r := again.record(record["uuid"]))["status"] != "running" and r,
        "the old training is no longer running",
        timeout=LEASE_S + 4 * HEARTBEAT_S,
    )
    assert found["status"] == "error"
    assert found["message"] == STOPPED_WHILE_RUNNING
