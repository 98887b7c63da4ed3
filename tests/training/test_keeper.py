"""The record keeper's log while the database cannot be written.

A full disk makes SQLite fail each try with one error or another ("database
or disk is full", "disk I/O error"), and may fail the heartbeat while there
is no record to write: the log says once that writing fails and once that
it works again, not at every heartbeat. The failures are raised at the
store's boundary (its SQLite calls): a real full disk is in test_disk_full.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from deepaas.tasks import TaskSet
from deepaas.training import store as st
from deepaas.training.keeper import RecordKeeper
from deepaas.training.ownership import ServerIdentity
from tests.support import wait_for

pytestmark = pytest.mark.timeout(30)

KEEPER = "deepaas.training.keeper"
ERRORS = ("database or disk is full", "disk I/O error")


class FullDisk:
    """Makes the store's writes fail, each with the next of ``ERRORS``."""

    def __init__(self) -> None:
        self.full = False
        self.errors = itertools.cycle(ERRORS)

    def check(self) -> None:
        if self.full:
            raise sqlite3.OperationalError(next(self.errors))


@pytest_asyncio.fixture
async def keeper(tmp_path: Any) -> AsyncIterator[tuple[RecordKeeper, FullDisk]]:
    store = st.TrainingStore(str(tmp_path))
    await store.open()
    disk = FullDisk()
    tasks = TaskSet("test")
    keeper = RecordKeeper(
        store,
        ServerIdentity.new(),
        tasks,
        on_cancel=lambda uuid: None,
        on_taken=lambda stored: False,
        on_leftovers=lambda: None,
        active=list,
        heartbeat=0.02,
    )
    tick, update = keeper.servers.tick, store.update

    async def failing_tick(*args: Any) -> Any:
        disk.check()
        return await tick(*args)

    async def failing_update(record: st.Training) -> Any:
        disk.check()
        return await update(record)

    keeper.servers.tick = failing_tick  # type: ignore[method-assign]
    store.update = failing_update  # type: ignore[method-assign]
    await keeper.open()
    keeper.start()
    yield keeper, disk
    await tasks.close(1.0)
    await keeper.close(1.0)


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == KEEPER]


async def test_a_failing_heartbeat_is_logged_once_and_its_end_once(
    keeper: tuple[RecordKeeper, FullDisk], caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger=KEEPER)
    records, disk = keeper
    disk.full = True  # nothing to write: only the heartbeat fails

    async def tried(times: int) -> bool:
        return records.failed_tries >= times

    assert await wait_for(lambda: tried(10))
    said = _said(caplog)
    assert len(said) == 1 and "cannot write" in said[0], said
    assert "will retry" in said[0]
    disk.full = False

    async def recovered() -> bool:
        return records.failure is None

    assert await wait_for(recovered)
    said = _said(caplog)
    assert len(said) == 2 and "written again" in said[1], said
    assert "failed tries" in said[1]


async def test_records_kept_while_failing_are_logged_once(
    tmp_path: Any,
    keeper: tuple[RecordKeeper, FullDisk],
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.INFO, logger=KEEPER)
    records, disk = keeper
    me = records.identity
    record = st.Training(
        uuid="a" * 32,
        model="m",
        args={},
        status=st.QUEUED,
        date=st.now(),
        log_path=records.store.log_path("a" * 32),
        owner_pid=me.pid,
        owner=me.id,
    )
    await records.store.insert(record)
    records.created(record)
    disk.full = True
    for step in range(5):  # changes keep coming while the disk is full
        record.progress = {"step": step}
        was = record.status
        record.status = st.RUNNING if step < 4 else st.DONE
        records.changed(record, was=was)
        failed = records.failed_tries
        assert await wait_for(_more_than(records, failed + 2))
    assert records.unsaved(record.uuid) is record
    disk.full = False

    async def written() -> bool:
        stored = await records.store.get(record.uuid)
        return stored is not None and stored.status == st.DONE

    assert await wait_for(written)
    said = _said(caplog)
    assert [("cannot write" in m, "written again" in m) for m in said] == [
        (True, False),
        (False, True),
    ], said
    assert records.counts() == [("m", st.DONE, 1)]


def _more_than(records: RecordKeeper, tries: int) -> Any:
    async def check() -> bool:
        await asyncio.sleep(0)
        return records.failed_tries > tries

    return check
