"""Training records in SQLite under the state directory; they survive restarts.

``<state_dir>/trainings.sqlite3`` holds one row per training (``trainings``)
and one per running server (``servers``, see
:mod:`deepaas.training.ownership`); each job's output is in
``<state_dir>/logs/<uuid>.log`` and the files it was given in
``<state_dir>/jobs/<uuid>/`` while it is queued or running.

Every SQLite call runs on one thread of the store's own: a write may wait up
to :data:`BUSY_TIMEOUT_S` for another process's lock, and the event loop must
not wait with it. The API is therefore async; rows are built from records on
the caller's side (the loop), so a record the loop keeps changing is never
read from the other thread. The database is in WAL mode (readers never wait
for writers); each write is one small transaction. A finished record is
final: :meth:`TrainingStore.update` never changes one (see
:mod:`deepaas.training.ownership` for who may finish a record).

Databases written by earlier versions are migrated in place when opened:
the columns they lack are added (server identities, since version 2, see
:func:`~deepaas.training.ownership.owner_gone`; the request id of the
request that started a training, since version 3; its ETA, since version
4; its start and finish as instants in UTC, ``start_time`` and
``finish_time``, since version 5; its submission's, ``submit_time``, since
version 6), and old rows keep working with those left empty (a row
without ``start_time`` is served one derived from ``start_date`` in the
reading server's time zone, as before: see
:func:`~deepaas.training.record.utc`; without both, its duration is from
the local dates as they are). Every value a
training reported is in the ``reports`` table (:mod:`deepaas.training.history`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from deepaas.tasks import DaemonThread
from deepaas.training import history
from deepaas.training.record import (
    CANCELLED,
    DATE_FORMAT,
    DONE,
    ERROR,
    FINISHED,
    QUEUED,
    RUNNING,
    STATUSES,
    STOPPED_WHILE_QUEUED,
    STOPPED_WHILE_RUNNING,
    UNFINISHED,
    Training,
    interrupted_message,
    now,
    stamp,
)

# The record's names, for the modules that reach them through the store.
__all__ = [
    "CANCELLED",
    "DATE_FORMAT",
    "DONE",
    "ERROR",
    "FINISHED",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "STOPPED_WHILE_QUEUED",
    "STOPPED_WHILE_RUNNING",
    "UNFINISHED",
    "Training",
    "TrainingStore",
    "from_row",
    "interrupted_message",
    "now",
    "rollback",
    "stamp",
]

T = TypeVar("T")

BUSY_TIMEOUT_S = 10.0  # a write waits this long for another process's lock
WAL_SIZE_LIMIT = 1 << 20  # bytes the WAL file keeps after a checkpoint

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trainings (
    uuid TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    args TEXT NOT NULL,
    status TEXT NOT NULL,
    date TEXT NOT NULL,
    start_date TEXT,
    finish_date TEXT,
    output TEXT,
    message TEXT,
    devices TEXT NOT NULL DEFAULT '[]',
    gpus INTEGER NOT NULL DEFAULT 0,
    progress TEXT NOT NULL DEFAULT '{}',
    log_path TEXT NOT NULL,
    owner_pid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS trainings_model ON trainings (model, date);
CREATE TABLE IF NOT EXISTS servers (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    pidns TEXT NOT NULL,
    pstart INTEGER NOT NULL,
    started TEXT NOT NULL,
    heartbeat REAL NOT NULL
);
"""
# Added to ``trainings`` since the first version (migrated when missing).
_NEW_COLUMNS = {
    "owner": "TEXT",  # the owning server's identity (servers.id)
    "cancel_requested": "REAL",  # time.time() another server asked for a cancel
    "cancel_acked": "REAL",  # time.time() the owner took that request
    "request_id": "TEXT",  # the X-Request-ID of the request that started it
    "eta_seconds": "REAL",  # when a running training should end (history.Tracker)
    # start_date's and finish_date's instants, ISO 8601 UTC (record.stamp()):
    # NULL in older rows
    "start_time": "TEXT",
    "finish_time": "TEXT",
    "submit_time": "TEXT",  # date's instant, likewise (version 6)
}
_SCHEMA_VERSION = 6

_JSON_COLUMNS = ("args", "output", "devices", "progress")


_FIELDS = tuple(f.name for f in dataclasses.fields(Training))


class TrainingStore:
    """The records, logs and job directories of one state directory."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / "trainings.sqlite3"
        self.logs_dir = self.state_dir / "logs"
        self.jobs_dir = self.state_dir / "jobs"
        self._db: sqlite3.Connection | None = None
        self._thread: DaemonThread | None = None

    def log_path(self, uuid: str) -> str:
        return str(self.logs_dir / f"{uuid}.log")

    def job_dir(self, uuid: str) -> str:
        return str(self.jobs_dir / uuid)

    # -- the thread -----------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread (where :attr:`db` may be
        used) and wait for its result without blocking the loop."""
        if self._thread is None:
            raise sqlite3.ProgrammingError("the training store is not open")
        return await asyncio.wrap_future(self._thread.submit(fn, *args))

    @property
    def db(self) -> sqlite3.Connection:
        """The connection: for functions running on the store's thread only."""
        if self._db is None:
            raise sqlite3.ProgrammingError("the training store is not open")
        return self._db

    # -- life cycle -----------------------------------------------------------

    async def open(self) -> None:
        """Create the directories and the database (or migrate an old one)."""
        if self._thread is None:
            self._thread = DaemonThread(f"training store {self.state_dir}")
        try:
            await self.call(self._open)
        except BaseException:
            await self.close()
            raise

    def _open(self) -> None:
        for path in (self.state_dir, self.logs_dir, self.jobs_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Opening is idempotent, and SQLite answers "database is locked" at
        # once, without its busy timeout, in some cases (a WAL being
        # recovered after a killed server; a journal-mode check racing
        # another server's write): tried again for as long as a busy write.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._db = self._connect()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            str(self.path), isolation_level=None, timeout=BUSY_TIMEOUT_S
        )
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # The WAL is checkpointed once it holds WAL_SIZE_LIMIT bytes (not
            # SQLite's 4 MB: the history writes every second) and cut back to
            # that size after a checkpoint (it would keep its largest size).
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_SIZE_LIMIT // 4096}")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            db.executescript(_SCHEMA)
            db.executescript(history.SCHEMA)
            _migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    async def close(self, timeout: float | None = None) -> None:
        """Close the database and end the thread; a thread still blocked on
        a lock after ``timeout`` seconds is left to end on its own."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        future = thread.submit(self._close)
        thread.stop()
        with contextlib.suppress(asyncio.TimeoutError, sqlite3.Error):
            await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    # -- records --------------------------------------------------------------

    async def insert(self, record: Training) -> None:
        row = _to_row(record)  # here, on the loop: the record is the loop's
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        sql = f"INSERT INTO trainings ({names}) VALUES ({marks})"
        await self.call(lambda: self.db.execute(sql, tuple(row.values())))

    async def update(self, record: Training) -> tuple[bool, Training | None]:
        """Write every field of ``record`` (the owner's copy is the truth)
        unless the stored record is finished or owned by another server:
        a finished record is never changed again, whoever wrote it (another
        server marks the trainings of an owner whose lease lapsed; that
        owner, frozen meanwhile, must not turn them back into ``running``).

        ``(True, None)`` when written; ``(False, stored)`` when not, with
        the record as stored (None when there is none)."""
        row = _to_row(record)
        row.pop("uuid")
        sets = ", ".join(f"{name} = ?" for name in row)
        marks = ", ".join("?" for _ in FINISHED)
        sql = (
            f"UPDATE trainings SET {sets} WHERE uuid = ? AND owner IS ? "
            f"AND status NOT IN ({marks})"
        )
        values = (*row.values(), record.uuid, record.owner, *FINISHED)

        def update() -> tuple[bool, Training | None]:
            if self.db.execute(sql, values).rowcount:
                return True, None
            stored = self.db.execute(
                "SELECT * FROM trainings WHERE uuid = ?", (record.uuid,)
            ).fetchone()
            return False, None if stored is None else from_row(stored)

        return await self.call(update)

    async def get(self, uuid: str) -> Training | None:
        def get() -> Training | None:
            row = self.db.execute(
                "SELECT * FROM trainings WHERE uuid = ?", (uuid,)
            ).fetchone()
            return None if row is None else from_row(row)

        return await self.call(get)

    async def records(self, model: str | None = None) -> list[Training]:
        """Records, oldest first (of one model when given)."""

        def records() -> list[Training]:
            if model is None:
                rows = self.db.execute("SELECT * FROM trainings ORDER BY date, rowid")
            else:
                rows = self.db.execute(
                    "SELECT * FROM trainings WHERE model = ? ORDER BY date, rowid",
                    (model,),
                )
            return [from_row(row) for row in rows]

        return await self.call(records)

    async def counts(
        self, exclude_owner: str | None = None
    ) -> dict[tuple[str, str], int]:
        """``{(model, status): count}`` of the records not owned by
        ``exclude_owner`` (the manager counts its own in memory)."""

        def counts() -> dict[tuple[str, str], int]:
            rows = self.db.execute(
                "SELECT model, status, COUNT(*) FROM trainings "
                "WHERE owner IS NOT ? GROUP BY model, status",
                (exclude_owner,),
            )
            return {(str(m), str(s)): int(n) for m, s, n in rows}

        return await self.call(counts)


def _migrate(db: sqlite3.Connection) -> None:
    """Add what older versions lacked (two servers may open it at once)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        have = {row[1] for row in db.execute("PRAGMA table_info(trainings)")}
        for name, kind in _NEW_COLUMNS.items():
            if name not in have:
                db.execute(f"ALTER TABLE trainings ADD COLUMN {name} {kind}")
        db.execute("CREATE INDEX IF NOT EXISTS trainings_status ON trainings (status)")
        if db.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise


def rollback(db: sqlite3.Connection) -> None:
    """Roll back what is left of a transaction (a failed COMMIT may have)."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def _to_row(record: Training) -> dict[str, Any]:
    row = dataclasses.asdict(record)
    for name in _JSON_COLUMNS:
        row[name] = json.dumps(row[name])
    return row


def from_row(row: sqlite3.Row) -> Training:
    present = set(row.keys())
    values = {name: row[name] for name in _FIELDS if name in present}
    for name in _JSON_COLUMNS:
        text = values.get(name)
        values[name] = None if text is None else json.loads(text)
    return Training(**values)
