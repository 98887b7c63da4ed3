"""The SQLite store on its own: records, updates, interrupted trainings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deepaas.training import store as st

pytestmark = pytest.mark.timeout(30)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _record(db: st.TrainingStore, uuid: str, status: str, owner: int) -> st.Training:
    record = st.Training(
        uuid=uuid,
        model="m",
        args={"a": 1},
        status=status,
        date=st.now(),
        log_path=db.log_path(uuid),
        owner_pid=owner,
    )
    db.insert(record)
    return record


def test_insert_update_get_and_list(tmp_path):
    db = st.TrainingStore(str(tmp_path))
    db.open()
    try:
        record = _record(db, "a" * 32, st.QUEUED, 1)
        assert db.get(record.uuid) == record
        record.status = st.DONE
        record.output = {"x": [1, 2]}
        record.start_date = record.finish_date = st.now()
        db.update(record)
        assert db.get(record.uuid) == record
        record.progress = {"loss": 0.5}
        db.update(record, "progress")
        assert db.get(record.uuid).progress == {"loss": 0.5}
        assert [r.uuid for r in db.records("m")] == [record.uuid]
        assert db.records("other") == []
        assert db.get("nope") is None
        assert list(db.counts()) == [("m", st.DONE, 1)]
        doc = db.get(record.uuid).to_json()
        assert doc["result"]["output"] == {"x": [1, 2]}
        wal = db.db.execute("PRAGMA journal_mode").fetchone()[0]
        assert wal == "wal"
    finally:
        db.close()
    assert (tmp_path / "trainings.sqlite3").exists()


def test_mark_interrupted_only_touches_servers_that_are_gone(tmp_path):
    db = st.TrainingStore(str(tmp_path))
    db.open()
    try:
        dead = _dead_pid()
        running = _record(db, "1" * 32, st.RUNNING, dead)
        queued = _record(db, "2" * 32, st.QUEUED, dead)
        ours = _record(db, "3" * 32, st.RUNNING, __import__("os").getpid())
        (tmp_path / "jobs" / running.uuid).mkdir()
        assert sorted(db.mark_interrupted()) == [running.uuid, queued.uuid]
        assert db.get(running.uuid).status == st.ERROR
        assert db.get(running.uuid).message == st.STOPPED_WHILE_RUNNING
        assert db.get(queued.uuid).message == st.STOPPED_WHILE_QUEUED
        assert db.get(ours.uuid).status == st.RUNNING
        assert not (tmp_path / "jobs" / running.uuid).exists()
    finally:
        db.close()


def test_unusable_state_dir_is_a_config_error(tmp_path):
    from deepaas.config import ConfigError
    from deepaas.training.jobs import JobManager

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    manager = JobManager(st.TrainingStore(str(blocker / "state")), {})
    with pytest.raises(ConfigError, match="state_dir"):
        manager.open()
