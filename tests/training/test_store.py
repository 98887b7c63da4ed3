"""The SQLite store on its own: records, migration, owners and their leases."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from deepaas.training import history
from deepaas.training import store as st
from deepaas.training.ownership import (
    FILES_AFTER_LEASES,
    LEASE_S,
    OwnerRow,
    ServerIdentity,
    owner_gone,
    process_start,
)
from deepaas.training.record import utc
from deepaas.training.servers import ServerTable
from tests.training.zones import time_zone

pytestmark = pytest.mark.timeout(30)

ME = ServerIdentity.new()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _record(
    db: st.TrainingStore, uuid: str, status: str, owner: ServerIdentity | None = ME
) -> st.Training:
    return st.Training(
        uuid=uuid,
        model="m",
        args={"a": 1},
        status=status,
        date=st.now(),
        log_path=db.log_path(uuid),
        owner_pid=owner.pid if owner is not None else 0,
        owner=owner.id if owner is not None else None,
    )


@pytest_asyncio.fixture
async def db(tmp_path) -> AsyncIterator[st.TrainingStore]:
    store = st.TrainingStore(str(tmp_path))
    await store.open()
    yield store
    await store.close()


async def _get(db: st.TrainingStore, uuid: str) -> st.Training:
    record = await db.get(uuid)
    assert record is not None, uuid
    return record


def _other(**changes: object) -> ServerIdentity:
    """Another server run: by default another process on another host."""
    fields = {
        "id": os.urandom(16).hex(),
        "pid": 4242,
        "host": "elsewhere",
        "pidns": "pid:[1]@boot",
        "pstart": 1,
        **changes,
    }
    return ServerIdentity(**fields)  # type: ignore[arg-type]


def _age(path: str, server: ServerIdentity, seconds: float) -> None:
    """Make a server's last heartbeat ``seconds`` old (another connection)."""
    with sqlite3.connect(path, isolation_level=None) as other:
        other.execute(
            "UPDATE servers SET heartbeat = ? WHERE id = ?",
            (time.time() - seconds, server.id),
        )


async def test_insert_update_get_and_list(db: st.TrainingStore, tmp_path):
    record = _record(db, "a" * 32, st.QUEUED)
    await db.insert(record)
    assert await db.get(record.uuid) == record
    record.status = st.DONE
    record.output = {"x": [1, 2]}
    record.start_date = record.finish_date = st.now()
    record.progress = {"loss": 0.5}
    await db.update(record)
    assert await db.get(record.uuid) == record
    assert [r.uuid for r in await db.records("m")] == [record.uuid]
    assert await db.records("other") == []
    assert await db.get("nope") is None
    assert await db.counts() == {("m", st.DONE): 1}
    assert await db.counts(exclude_owner=ME.id) == {}
    doc = (await _get(db, record.uuid)).to_json()
    assert doc["result"]["output"] == {"x": [1, 2]}
    assert "owner" not in doc  # internal: clients see the contract's keys
    with sqlite3.connect(db.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "trainings.sqlite3").exists()


async def test_an_old_database_is_migrated_and_stays_readable(tmp_path):
    """A ``trainings`` table with only ``owner_pid`` (the first version)."""
    path = tmp_path / "trainings.sqlite3"
    old_schema = st._SCHEMA.split("CREATE TABLE IF NOT EXISTS servers")[0]
    dead = _dead_pid()
    with sqlite3.connect(path, isolation_level=None) as old:
        old.executescript(old_schema)
        for uuid, status, pid in (
            ("1" * 32, st.DONE, dead),
            ("2" * 32, st.RUNNING, dead),  # its server is gone
            ("3" * 32, st.QUEUED, 1),  # an old image's deepaas-run as PID 1
            ("4" * 32, st.RUNNING, os.getpid()),  # our PID now: not that server
            ("5" * 32, st.RUNNING, os.getppid()),  # alive: maybe an old server
        ):
            old.execute(
                "INSERT INTO trainings (uuid, model, args, status, date, log_path, "
                "owner_pid) VALUES (?, 'm', '{}', ?, ?, 'x.log', ?)",
                (uuid, status, st.now(), pid),
            )
    db = st.TrainingStore(str(tmp_path))
    await db.open()
    try:
        done = await db.get("1" * 32)
        assert done is not None and done.status == st.DONE and done.owner is None
        changed = await ServerTable(db).sweep(ME)
        assert sorted(changed) == [
            ("2" * 32, st.RUNNING),
            ("3" * 32, st.QUEUED),
            ("4" * 32, st.RUNNING),
        ]
        assert (await _get(db, "2" * 32)).message == st.STOPPED_WHILE_RUNNING
        assert (await _get(db, "3" * 32)).message == st.STOPPED_WHILE_QUEUED
        assert (await _get(db, "5" * 32)).status == st.RUNNING
    finally:
        await db.close()
    with sqlite3.connect(path) as after:
        columns = {row[1] for row in after.execute("PRAGMA table_info(trainings)")}
        new = {"owner", "cancel_requested", "cancel_acked", "request_id"}
        assert new | {"eta_seconds"} <= columns
        assert after.execute("PRAGMA user_version").fetchone()[0] == 6
        tables = {row[0] for row in after.execute("SELECT name FROM sqlite_master")}
        assert "reports" in tables  # the history's
    again = st.TrainingStore(str(tmp_path))  # opening twice changes nothing
    await again.open()
    await again.close()


async def test_a_version_2_database_gains_the_request_id(tmp_path):
    """Version 2 (server identities, no request ids): migrated in place, its
    rows read with no request id, new rows keep theirs."""
    path = tmp_path / "trainings.sqlite3"
    with sqlite3.connect(path, isolation_level=None) as old:
        old.executescript(st._SCHEMA)
        for name in ("owner TEXT", "cancel_requested REAL", "cancel_acked REAL"):
            old.execute(f"ALTER TABLE trainings ADD COLUMN {name}")
        old.execute("PRAGMA user_version = 2")
        old.execute(
            "INSERT INTO trainings (uuid, model, args, status, date, log_path, "
            "owner_pid, owner) VALUES (?, 'm', '{}', 'done', ?, 'x.log', 1, 'o')",
            ("1" * 32, st.now()),
        )
    db = st.TrainingStore(str(tmp_path))
    await db.open()
    try:
        old_record = await _get(db, "1" * 32)
        assert old_record.request_id is None
        assert "request_id" not in old_record.to_json()
        record = st.Training(
            uuid="2" * 32,
            model="m",
            args={},
            status=st.QUEUED,
            date=st.now(),
            log_path="y.log",
            owner_pid=os.getpid(),
            owner=ME.id,
            request_id="req-1",
        )
        await db.insert(record)
        assert (await _get(db, "2" * 32)).to_json()["request_id"] == "req-1"
    finally:
        await db.close()
    with sqlite3.connect(path) as after:
        assert after.execute("PRAGMA user_version").fetchone()[0] == 6


#: The columns each schema version added to the first one (st._SCHEMA).
_ADDED = {
    3: ("owner TEXT", "cancel_requested REAL", "cancel_acked REAL", "request_id TEXT"),
    4: ("eta_seconds REAL",),
}


@contextlib.contextmanager
def _older_database(path, version: int) -> Iterator[sqlite3.Connection]:
    """A database at schema ``version`` (3 or 4), as that version left it."""
    with sqlite3.connect(path, isolation_level=None) as old:
        old.executescript(st._SCHEMA)
        for step in range(3, version + 1):
            for name in _ADDED[step]:
                old.execute(f"ALTER TABLE trainings ADD COLUMN {name}")
        old.execute(f"PRAGMA user_version = {version}")
        yield old


async def test_a_version_3_database_gains_the_eta_and_the_history(tmp_path):
    """Version 3 (no ETA, no reports table): migrated in place; its rows
    read with no ETA (null in JSON), and reports can be kept."""
    path = tmp_path / "trainings.sqlite3"
    with _older_database(path, 3) as old:
        old.execute(
            "INSERT INTO trainings (uuid, model, args, status, date, log_path, "
            "owner_pid, owner) VALUES (?, 'm', '{}', 'running', ?, 'x.log', 1, 'o')",
            ("1" * 32, st.now()),
        )
    db = st.TrainingStore(str(tmp_path))
    await db.open()
    try:
        old_record = await _get(db, "1" * 32)
        assert old_record.eta_seconds is None
        assert old_record.to_json()["eta_seconds"] is None
        report = history.Report(1, 0.5, None, {"loss": 1.0})
        await history.append(db, "1" * 32, [report])
        assert (await history.load(db, "1" * 32, 0))[0] == [report]
    finally:
        await db.close()
    with sqlite3.connect(path) as after:
        assert after.execute("PRAGMA user_version").fetchone()[0] == 6


async def test_a_version_4_database_gains_the_start_time(tmp_path):
    """Version 4 (no start_time): migrated in place; an old row's start_time
    is derived from its start_date (in this process's zone, best effort),
    and a record started now stores the instant it was given."""
    path = tmp_path / "trainings.sqlite3"
    started = "2024-01-01 12:00:00.124001"
    with _older_database(path, 4) as old:
        old.execute(
            "INSERT INTO trainings (uuid, model, args, status, date, start_date, "
            "log_path, owner_pid, owner) "
            "VALUES (?, 'm', '{}', 'running', ?, ?, 'x.log', 1, 'o')",
            ("1" * 32, started, started),
        )
    db = st.TrainingStore(str(tmp_path))
    await db.open()
    try:
        old_record = await _get(db, "1" * 32)
        assert old_record.start_time is None
        doc = old_record.to_json()
        assert doc["start_date"] == started
        assert doc["start_time"] == utc(started)
        new = _record(db, "2" * 32, st.QUEUED)
        await db.insert(new)
        new.status = st.RUNNING
        # as a server at UTC+9 records it: not what start_date would give here
        new.start_date, new.start_time = started, "2024-01-01T03:00:00.124Z"
        await db.update(new)
        assert (await _get(db, new.uuid)).to_json()["start_time"] == new.start_time
    finally:
        await db.close()
    with sqlite3.connect(path) as after:
        columns = {row[1] for row in after.execute("PRAGMA table_info(trainings)")}
        assert {"start_time", "finish_time"} <= columns
        assert after.execute("PRAGMA user_version").fetchone()[0] == 6


@pytest.mark.parametrize("status", [st.RUNNING, st.QUEUED])
async def test_a_duration_across_time_zones(db: st.TrainingStore, status: str):
    """A training started (or only queued) by a server at UTC-5 whose owner
    is gone, marked stopped by a server at UTC+9 (a restart in another
    zone): its duration is the time it ran (or waited: from its
    submission), not the 14 hours between the two local dates."""
    gone = _other()  # never registered: surely gone
    with time_zone("EST+5"):
        record = _record(db, "a" * 32, status, gone)
        if status == st.RUNNING:
            record.start_date, record.start_time = st.stamp()
        else:
            record.date, record.submit_time = st.stamp()
        await db.insert(record)
    with time_zone("JST-9"):
        assert await ServerTable(db).sweep(ME) == [(record.uuid, status)]
        doc = (await _get(db, record.uuid)).to_json()
    assert doc["start_date"] == record.start_date
    assert doc["start_time"] == record.start_time
    hours, minutes, _ = doc["result"]["duration"].split(":")
    assert (hours, minutes) == ("0", "00"), doc["result"]


def test_a_duration_over_a_dst_change():
    """Started at 01:59:00 EDT, finished at 01:01:00.25 EST (the clocks
    went back an hour between): 2 minutes, not 0 (the local dates alone
    say -58 minutes)."""
    record = st.Training(
        uuid="a" * 32,
        model="m",
        args={},
        status=st.DONE,
        date="2024-11-03 01:58:00.000000",
        log_path="x.log",
        owner_pid=1,
        start_date="2024-11-03 01:59:00.000000",
        start_time="2024-11-03T05:59:00.000Z",
        finish_date="2024-11-03 01:01:00.250000",
        finish_time="2024-11-03T06:01:00.250Z",
    )
    assert record.to_json()["result"]["duration"] == "0:02:00.250000"
    old = dataclasses.replace(record, start_time=None, finish_time=None)
    assert old.to_json()["result"]["duration"] == "0:00:00.000000"  # as stored


async def test_sweep_follows_owners_and_leases(db: st.TrainingStore):
    here = dataclasses.replace(ME, id="same-process")  # two apps, one process
    fresh = _other()  # another host, heartbeating
    expired = _other()
    unknown = _other()  # no row at all (stopped cleanly, or never existed)
    same_ns_gone = _other(host=ME.host, pidns=ME.pidns, pid=_dead_pid())
    same_ns_reused = _other(host=ME.host, pidns=ME.pidns, pid=ME.pid, pstart=1)
    for server in (here, fresh, expired, same_ns_gone, same_ns_reused):
        await ServerTable(db).register(server)
    _age(str(db.path), expired, LEASE_S + 1)
    records = {
        "ours": _record(db, "a" * 32, st.RUNNING, ME),
        "here": _record(db, "b" * 32, st.RUNNING, here),
        "fresh": _record(db, "c" * 32, st.QUEUED, fresh),
        "expired": _record(db, "d" * 32, st.RUNNING, expired),
        "unknown": _record(db, "e" * 32, st.QUEUED, unknown),
        "same_ns_gone": _record(db, "f" * 32, st.RUNNING, same_ns_gone),
        "same_ns_reused": _record(db, "0" * 32, st.RUNNING, same_ns_reused),
    }
    for record in records.values():
        await db.insert(record)
    changed = dict(await ServerTable(db).sweep(ME))
    gone = {name for name, r in records.items() if r.uuid in changed}
    if ME.pidns:
        assert gone == {"expired", "unknown", "same_ns_gone", "same_ns_reused"}
    else:  # no /proc of our own: only leases tell
        assert gone == {"expired", "unknown"}
    marked = await _get(db, records["expired"].uuid)
    assert marked.message == st.STOPPED_WHILE_RUNNING
    assert (await _get(db, records["unknown"].uuid)).message == st.STOPPED_WHILE_QUEUED
    assert await ServerTable(db).sweep(ME) == []  # once


def test_owner_gone_rules():
    now = time.time()

    def row(server: ServerIdentity, age: float = 0.0) -> OwnerRow:
        return OwnerRow(
            server.id, server.pid, server.host, server.pidns, server.pstart, now - age
        )

    other = _other()
    assert not owner_gone(ME.id, ME.pid, None, ME, now)  # ours: never
    assert not owner_gone(other.id, other.pid, row(other), ME, now)
    assert owner_gone(other.id, other.pid, row(other, LEASE_S + 0.1), ME, now)
    assert not owner_gone(other.id, other.pid, row(other, 3.0), ME, now, lease=5.0)
    assert owner_gone(other.id, other.pid, None, ME, now)
    # PID 1 of a restarted container: our PID and namespace, another process.
    if ME.pidns:
        reused = dataclasses.replace(other, host=ME.host, pidns=ME.pidns, pid=ME.pid)
        assert owner_gone(reused.id, reused.pid, row(reused), ME, now)
        twin = dataclasses.replace(ME, id="twin")  # same process, another app
        assert not owner_gone(twin.id, twin.pid, row(twin), ME, now)
        assert process_start(ME.pid) == ME.pstart
    assert process_start(_dead_pid()) is None


async def test_tick_renews_the_lease_and_takes_cancel_requests(db: st.TrainingStore):
    await ServerTable(db).register(ME)
    running = _record(db, "a" * 32, st.RUNNING)
    finished = _record(db, "b" * 32, st.DONE)
    for record in (running, finished):
        await db.insert(record)
    _age(str(db.path), ME, 5.0)
    for record in (running, finished):
        await ServerTable(db).request_cancel(record.uuid)  # another server asks
    tick = await ServerTable(db).tick(ME)
    assert tick.cancels == [running.uuid]  # a finished one is not asked
    assert tick.interrupted == []
    view = await ServerTable(db).cancel_view(running.uuid, _other())
    assert view.acked and view.owner is not None and view.owner.id == ME.id
    assert time.time() - view.owner.heartbeat < 2.0  # renewed
    assert not await ServerTable(db).withdraw_cancel(running.uuid)  # taken: too late
    assert (await ServerTable(db).tick(ME)).cancels == []  # taken once


async def test_unusable_state_dir_is_a_config_error(tmp_path):
    from deepaas.config import ConfigError
    from deepaas.training.jobs import JobManager

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    manager = JobManager(st.TrainingStore(str(blocker / "state")), {})
    with pytest.raises(ConfigError, match="state_dir"):
        await manager.open()
    await manager.stop()


async def test_a_finished_record_is_final(db: st.TrainingStore):
    """Another server marked it (our lease had lapsed): our late write of
    ``running`` or ``done`` is refused and the stored record answered."""
    record = _record(db, "a" * 32, st.RUNNING)
    await db.insert(record)
    other = ServerTable(db)
    await other.register(ME)
    _age(str(db.path), ME, LEASE_S + 1)
    assert await other.sweep(_other()) == [(record.uuid, st.RUNNING)]
    for status in (st.RUNNING, st.DONE):
        late = dataclasses.replace(record, status=status, progress={"step": 9})
        written, stored = await db.update(late)
        assert not written and stored is not None
        assert (stored.status, stored.message) == (
            st.ERROR,
            st.STOPPED_WHILE_RUNNING,
        )
    assert (await _get(db, record.uuid)).progress == {}  # nothing of it written
    foreign = _record(db, "b" * 32, st.RUNNING, _other())
    await db.insert(foreign)  # another server's, unfinished: not ours to write
    written, stored = await db.update(dataclasses.replace(foreign, owner=ME.id))
    assert not written and stored == foreign
    assert await db.update(_record(db, "c" * 32, st.DONE)) == (False, None)


async def test_tick_tells_a_lapsed_lease_and_what_was_taken(db: st.TrainingStore):
    table = ServerTable(db)
    await table.register(ME)
    running = _record(db, "a" * 32, st.RUNNING)
    queued = _record(db, "b" * 32, st.QUEUED)
    kept = _record(db, "c" * 32, st.RUNNING)
    for record in (running, queued, kept):
        await db.insert(record)
    fine = await table.tick(ME, active=[running.uuid, queued.uuid, kept.uuid])
    assert fine.lapsed is None and fine.taken == []
    _age(str(db.path), ME, LEASE_S + 2)
    await table.sweep(_other())  # another server marks ours
    await db.insert(late := _record(db, "d" * 32, st.RUNNING))  # after the sweep
    active = [running.uuid, queued.uuid, late.uuid]  # "kept" ended here meanwhile
    tick = await table.tick(ME, active=active)
    assert tick.lapsed is not None and LEASE_S + 1 < tick.lapsed < LEASE_S + 10
    assert sorted((r.uuid, r.status, r.message) for r in tick.taken) == [
        (running.uuid, st.ERROR, st.STOPPED_WHILE_RUNNING),
        (queued.uuid, st.ERROR, st.STOPPED_WHILE_QUEUED),
    ]
    again = await table.tick(ME, active=active)  # renewed by the tick before
    assert again.lapsed is None
    with sqlite3.connect(db.path, isolation_level=None) as other:
        other.execute("DELETE FROM servers WHERE id = ?", (ME.id,))  # forgotten
    assert (await table.tick(ME)).lapsed == float("inf")


async def test_job_files_go_only_when_their_owner_is_surely_gone(
    db: st.TrainingStore,
):
    """A lapsed lease is not enough: a frozen owner still runs the job."""
    frozen = _other()  # another host: only its heartbeat can tell
    long_gone = _other()
    alive_here = _other(host=ME.host, pidns=ME.pidns, pid=os.getppid())
    alive_here = dataclasses.replace(alive_here, pstart=process_start(os.getppid()))
    dead_here = _other(host=ME.host, pidns=ME.pidns, pid=_dead_pid())
    for server in (frozen, long_gone, alive_here, dead_here):
        await ServerTable(db).register(server)
    _age(str(db.path), frozen, LEASE_S + 1)
    _age(str(db.path), alive_here, LEASE_S + 1)
    _age(str(db.path), long_gone, FILES_AFTER_LEASES * LEASE_S + 1)
    records = {
        "frozen": _record(db, "1" * 32, st.ERROR, frozen),
        "long_gone": _record(db, "2" * 32, st.ERROR, long_gone),
        "alive_here": _record(db, "3" * 32, st.ERROR, alive_here),
        "dead_here": _record(db, "4" * 32, st.ERROR, dead_here),
        "unregistered": _record(db, "5" * 32, st.DONE, _other()),
        "legacy": _record(db, "6" * 32, st.DONE, None),
        "ours": _record(db, "7" * 32, st.DONE, ME),
        "unfinished": _record(db, "8" * 32, st.RUNNING, long_gone),
    }
    for record in records.values():
        await db.insert(record)
    names = [r.uuid for r in records.values()] + ["9" * 32]  # 9: being submitted
    found = set(await ServerTable(db).leftovers(names, ME))
    removable = {name for name, r in records.items() if r.uuid in found}
    expected = {"long_gone", "unregistered", "legacy"}
    if ME.pidns:  # our PID namespace tells a process that is gone
        expected.add("dead_here")
    assert removable == expected
