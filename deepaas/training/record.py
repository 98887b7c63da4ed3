"""One training's record: its status, dates, arguments, result and owner,
and how clients see it (DEEPaaS contract section 4, plus extras).

Kept by :mod:`deepaas.training.store` (SQLite); a record the scheduler
changes lives on the event loop, and the store writes copies of it.
"""

from __future__ import annotations

import dataclasses
import datetime
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

UNFINISHED = (QUEUED, RUNNING)


def now() -> str:
    return datetime.datetime.now().strftime(DATE_FORMAT)


def _iso(instant: datetime.datetime) -> str:
    utc_instant = instant.astimezone(datetime.timezone.utc)
    return utc_instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stamp() -> tuple[str, str]:
    """Now, read once, as ``(date, time)``: the server's local time in the
    contract's format (``start_date``) and the same instant in ISO 8601 UTC
    (``start_time``), which is stored as it is, so that a server in another
    time zone (or this one after a DST change) serves the same instant."""
    instant = datetime.datetime.now(datetime.timezone.utc)
    return instant.astimezone().strftime(DATE_FORMAT), _iso(instant)


def _offset(date: str, instant: str | None) -> datetime.timedelta:
    """How far the zone that wrote ``date`` (local) was ahead of UTC, from
    ``instant`` (the same time in ISO 8601 UTC, to the millisecond); zero
    when not known."""
    if instant is None:
        return datetime.timedelta(0)
    local = datetime.datetime.strptime(date, DATE_FORMAT)
    utc_time = datetime.datetime.fromisoformat(instant.replace("Z", "+00:00"))
    seconds = (local - utc_time.replace(tzinfo=None)).total_seconds()
    return datetime.timedelta(seconds=round(seconds))


def _duration(
    start: str,
    finish: str,
    start_time: str | None = None,
    finish_time: str | None = None,
) -> str:
    """From ``start`` to ``finish`` (local dates, to the microsecond); when
    both are stored with their instants in UTC, the zones they were written
    in are taken off (a server in another zone marked it stopped; a DST
    change while it ran)."""
    begin = datetime.datetime.strptime(start, DATE_FORMAT)
    end = datetime.datetime.strptime(finish, DATE_FORMAT)
    if start_time is not None and finish_time is not None:
        try:
            begin -= _offset(start, start_time)
            end -= _offset(finish, finish_time)
        except (ValueError, OverflowError):
            pass  # not what this version writes: the dates as they are
    delta = max(end - begin, datetime.timedelta(0))
    text = str(delta)
    return text if "." in text else text + ".000000"


def utc(date: str | None) -> str | None:
    """A record date (local time, no zone: the contract's format) as an
    instant in ISO 8601 UTC, "2024-01-01T11:00:00.124Z", read in the zone of
    the server calling this: only a best effort, for the records stored
    before ``start_time`` was (their writer's zone is not known; a server in
    another zone, or after a DST change, gets it hours off)."""
    if date is None:
        return None
    try:
        local = datetime.datetime.strptime(date, DATE_FORMAT).astimezone()
    except (ValueError, OverflowError, OSError):
        return None
    return _iso(local)


def interrupted_message(status: str) -> str:
    """The message of a record whose owner stopped while it was ``status``."""
    return STOPPED_WHILE_RUNNING if status == RUNNING else STOPPED_WHILE_QUEUED


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
    # date's instant in ISO 8601 UTC (stamp()): the duration of a training
    # that never started; None in records stored before it was
    submit_time: str | None = None
    # start_date's instant in ISO 8601 UTC, recorded with it (stamp()); None
    # while queued, and in records stored before it was (see to_json)
    start_time: str | None = None
    finish_date: str | None = None
    # finish_date's instant in ISO 8601 UTC, recorded with it (stamp()): for
    # the duration; None while unfinished, and in records stored before it was
    finish_time: str | None = None
    output: Any = None
    message: str | None = None
    progress: dict[str, Any] = dataclasses.field(default_factory=dict)
    owner: str | None = None  # the owning server's identity; None: written by PID
    request_id: str | None = None  # of the request that started it (if known)
    eta_seconds: float | None = None  # seconds left, while running (if known)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def adopt(self, stored: Training) -> None:
        """Take the final state ``stored`` (another server wrote it, and a
        finished record is final)."""
        self.status = stored.status
        self.message = stored.message
        if stored.finish_date is not None:
            self.finish_date, self.finish_time = stored.finish_date, stored.finish_time
        else:
            self.finish_date, self.finish_time = stamp()
        self.output = stored.output

    def _duration(self, finish_date: str) -> str:
        if self.start_date is None:  # never started: since it was submitted
            return _duration(self.date, finish_date, self.submit_time, self.finish_time)
        return _duration(
            self.start_date, finish_date, self.start_time, self.finish_time
        )

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
                "duration": self._duration(self.finish_date),
            }
        doc.update(
            model=self.model,
            start_date=self.start_date,
            start_time=self.start_time or utc(self.start_date),
            gpus=self.gpus,
            devices=self.devices,
            progress=self.progress,
        )
        if self.request_id is not None:
            doc["request_id"] = self.request_id
        doc["eta_seconds"] = None if self.finished else self.eta_seconds
        return doc
