"""Training records in SQLite under the state directory; they survive restarts.

``<state_dir>/trainings.sqlite3`` holds one row per training; each job's
output is in ``<state_dir>/logs/<uuid>.log`` and the files it was given in
``<state_dir>/jobs/<uuid>/`` while it is queued or running. The database is
in WAL mode and written only by the API process's event loop (each write is
a small transaction), so readers never wait.

A record notes the pid of the server that owns it. At start-up
:meth:`TrainingStore.mark_interrupted` turns the ``queued``/``running``
records of servers that are gone into ``error``: a restart tells the client
what happened to its training instead of showing it running forever.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
ERROR = "error"
CANCELLED = "cancelled"
STATUSES = (QUEUED, RUNNING, DONE, ERROR, CANCELLED)
FINISHED = (DONE, ERROR, CANCELLED)

STOPPED_WHILE_RUNNING = "the server stopped during this training"
STOPPED_WHILE_QUEUED = "the server stopped before this training started"

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
"""

_JSON_COLUMNS = ("args", "output", "devices", "progress")


def now() -> str:
    return datetime.datetime.now().strftime(DATE_FORMAT)


def _duration(start: str, finish: str) -> str:
    begin = datetime.datetime.strptime(start, DATE_FORMAT)
    end = datetime.datetime.strptime(finish, DATE_FORMAT)
    delta = max(end - begin, datetime.timedelta(0))
    text = str(delta)
    return text if "." in text else text + ".000000"


@dataclasses.dataclass
class Training:
    """One training as stored."""

    uuid: str
    model: str
    args: dict[str, Any]
    status: str
    date: str
    log_path: str
    owner_pid: int
    gpus: int = 0
    devices: list[str] = dataclasses.field(default_factory=list)
    start_date: str | None = None
    finish_date: str | None = None
    output: Any = None
    message: str | None = None
    progress: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        """The record as clients see it (contract section 4, plus extras)."""
        doc: dict[str, Any] = {
            "uuid": self.uuid,
            "date": self.date,
            "args": self.args,
            "status": self.status,
        }
        if self.message is not None:
            doc["message"] = self.message
        if self.finished and self.finish_date is not None:
            doc["result"] = {
                "output": self.output,
                "finish_date": self.finish_date,
                "duration": _duration(self.start_date or self.date, self.finish_date),
            }
        doc.update(
            model=self.model,
            start_date=self.start_date,
            gpus=self.gpus,
            devices=self.devices,
            progress=self.progress,
        )
        return doc


class TrainingStore:
    """The records and logs of one state directory."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / "trainings.sqlite3"
        self.logs_dir = self.state_dir / "logs"
        self.jobs_dir = self.state_dir / "jobs"
        self._db: sqlite3.Connection | None = None

    # -- life cycle ---------------------------------------------------------

    def open(self) -> None:
        for path in (self.state_dir, self.logs_dir, self.jobs_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=10
        )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the training store is not open")
        return self._db

    def log_path(self, uuid: str) -> str:
        return str(self.logs_dir / f"{uuid}.log")

    def job_dir(self, uuid: str) -> str:
        return str(self.jobs_dir / uuid)

    def remove_job_dir(self, uuid: str) -> None:
        shutil.rmtree(self.job_dir(uuid), ignore_errors=True)

    # -- records ------------------------------------------------------------

    def insert(self, record: Training) -> None:
        row = _to_row(record)
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.db.execute(
            f"INSERT INTO trainings ({names}) VALUES ({marks})", tuple(row.values())
        )

    def update(self, record: Training, *names: str) -> None:
        """Write ``names`` (all fields when none) of ``record``."""
        row = _to_row(record)
        if names:
            row = {name: row[name] for name in names}
        row.pop("uuid", None)
        sets = ", ".join(f"{name} = ?" for name in row)
        self.db.execute(
            f"UPDATE trainings SET {sets} WHERE uuid = ?",
            (*row.values(), record.uuid),
        )

    def get(self, uuid: str) -> Training | None:
        row = self.db.execute(
            "SELECT * FROM trainings WHERE uuid = ?", (uuid,)
        ).fetchone()
        return None if row is None else _from_row(row)

    def records(self, model: str | None = None) -> list[Training]:
        """Records, oldest first (of one model when given)."""
        if model is None:
            rows = self.db.execute("SELECT * FROM trainings ORDER BY date, rowid")
        else:
            rows = self.db.execute(
                "SELECT * FROM trainings WHERE model = ? ORDER BY date, rowid",
                (model,),
            )
        return [_from_row(row) for row in rows]

    def counts(self) -> Iterator[tuple[str, str, int]]:
        """(model, status, count) of every record."""
        rows = self.db.execute(
            "SELECT model, status, COUNT(*) FROM trainings GROUP BY model, status"
        )
        for model, status, count in rows:
            yield str(model), str(status), int(count)

    def mark_interrupted(self) -> list[str]:
        """Turn unfinished records of servers that are gone into errors.

        A record whose owner still runs (another server on the same state
        directory, or another app in this process) is left alone. Returns
        the uuids changed.
        """
        rows = self.db.execute(
            "SELECT uuid, status, owner_pid FROM trainings WHERE status IN (?, ?)",
            (QUEUED, RUNNING),
        ).fetchall()
        changed = []
        finish = now()
        for uuid, status, owner in rows:
            if _pid_alive(owner):
                continue
            message = (
                STOPPED_WHILE_RUNNING if status == RUNNING else STOPPED_WHILE_QUEUED
            )
            self.db.execute(
                "UPDATE trainings SET status = ?, message = ?, finish_date = ? "
                "WHERE uuid = ? AND status = ?",
                (ERROR, message, finish, uuid, status),
            )
            self.remove_job_dir(uuid)
            changed.append(uuid)
        return changed


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _to_row(record: Training) -> dict[str, Any]:
    row = dataclasses.asdict(record)
    for name in _JSON_COLUMNS:
        row[name] = json.dumps(row[name])
    return row


def _from_row(row: sqlite3.Row) -> Training:
    values = dict(row)
    for name in _JSON_COLUMNS:
        text = values.get(name)
        values[name] = None if text is None else json.loads(text)
    return Training(**values)
