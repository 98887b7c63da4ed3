"""Every value a training reported, kept per job (not only the latest).

Each :func:`deepaas.training.report` call that reaches the API process
becomes one *report*: its sequence number in the job (1, 2, ...), the
seconds since the job started, and its values as JSON text. Reports are
rows of the ``reports`` table of the training store (one row per call, not
per value: a row of five keys costs about what a row of one does), written
in batches with the records (:class:`~deepaas.training.keeper.RecordKeeper`,
once a second), so that a loop reporting on every step costs one small
transaction a second, not one a call.

Reading (:func:`read`) turns reports into series, the shape a chart polls:
per key a list of ``[x, value]`` points, where ``x`` is the training's step
(``step``, else ``epoch``, as last reported) or its time in seconds, and a
``cursor`` (the last report's sequence number) to resume from with
``since``. A numeric value is a point; NaN, infinities and ``None`` are
points with a ``null`` value (a gap in the curve: JSON has no NaN); any
other value (a string, a boolean, a list) goes to ``text``, never into a
curve. :func:`downsample` bounds what one answer holds.

The same :class:`Tracker` also tells how far a job is and when it should
end (``eta_seconds``): see :meth:`Tracker.eta`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from deepaas.training.store import TrainingStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    uuid TEXT NOT NULL,
    seq INTEGER NOT NULL,
    t REAL NOT NULL,
    step REAL,
    data TEXT NOT NULL,
    PRIMARY KEY (uuid, seq)
) WITHOUT ROWID;
"""

# Which reported keys count a training's progress, and their totals
# (docs/training.md, "report() conventions"): the first pair found wins.
COUNTERS = (("step", "total"), ("epoch", "epochs"))

MAX_POINTS = 1000  # default of ?max_points= (per key)
MAX_POINTS_LIMIT = 10_000  # the most a client may ask, per key
READ_LIMIT = 20_000  # reports read for one answer at most (then strided)


Point = list[Any]  # [x, value]


def is_number(value: Any) -> bool:
    """A value that belongs in a curve (booleans do not: they are states)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def curve_value(value: Any) -> float | int | None:
    """A curve's value: the number, or None (a gap) for NaN and infinities."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def shown(value: Any) -> Any:
    """A reported value as the record's ``progress`` shows it: JSON has no
    NaN, so non-finite floats are their names there (as before history)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def counted(values: dict[str, Any]) -> tuple[str, str, float, float] | None:
    """(counter key, total key, done, total) when ``values`` hold a counter
    and its total (``step``/``total``, else ``epoch``/``epochs``)."""
    for counter, total_key in COUNTERS:
        done: Any = values.get(counter)
        total: Any = values.get(total_key)
        if is_number(done) and is_number(total) and total > 0:
            return counter, total_key, float(done), float(total)
    return None


@dataclasses.dataclass
class Report:
    """One ``report()`` call of a training, as stored."""

    seq: int
    t: float  # seconds since the training started
    step: float | None  # the counter (step, else epoch) as last reported
    values: dict[str, Any]


class Read(NamedTuple):
    """What one read of a training's reports gives (:func:`load`,
    :meth:`Unwritten.read`)."""

    reports: list[Report]  # after the cursor, oldest first
    stride: int  # 1, or every stride-th report was read (a long run)
    first: Report | None  # the training's first report (its axis)
    last: int  # the number of its last report, after the cursor or not; 0: none


@dataclasses.dataclass
class Tracker:
    """One running job's reports: numbers them, keeps those not written
    yet, and estimates when the job ends."""

    pending: list[Report] = dataclasses.field(default_factory=list)
    seq: int = 0
    counter: str | None = None  # the key counting progress ("step"/"epoch")
    total_key: str | None = None
    first: tuple[float, float] | None = None  # (t, fraction) of the 1st report
    latest: tuple[float, float] | None = None  # ... of the latest
    eta_seconds: float | None = None

    def add(self, t: float, values: dict[str, Any], progress: dict[str, Any]) -> None:
        """A report arrived at ``t`` seconds; ``progress`` is the record's
        (the latest value of every key, this report's included)."""
        self.seq += 1
        step = next(
            (progress[c] for c, _ in COUNTERS if is_number(progress.get(c))), None
        )
        self.pending.append(Report(self.seq, round(t, 3), step, values))
        fraction = self._fraction(progress)
        if fraction is None:
            return
        if self.first is None:
            self.first = (t, fraction)
        self.latest = (t, fraction)
        self.eta_seconds = self.eta(t)

    def _fraction(self, progress: dict[str, Any]) -> float | None:
        found = counted(progress)
        if found is None:
            return None
        counter, total_key, done, total = found
        if self.counter != counter:  # a new convention: start again
            self.counter, self.total_key, self.first = counter, total_key, None
        return min(max(done / total, 0.0), 1.0)

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate since the first counted report (so the
        start-up, import and warm time, is not counted as training).
        None until the counter has moved."""
        if self.first is None or self.latest is None:
            return None
        (t0, f0), (t1, f1) = self.first, self.latest
        if f1 >= 1.0:
            return 0.0
        if f1 <= f0 or t1 <= t0:
            return None
        rate = (f1 - f0) / (t1 - t0)
        return round(max(0.0, (1.0 - f1) / rate - (now - t1)), 1)

    def take(self) -> list[Report]:
        """The reports not written yet (the keeper writes them)."""
        taken, self.pending = self.pending, []
        return taken


MAX_UNWRITTEN = 100_000  # reports kept per training while the store fails


class Unwritten:
    """The reports of this server's trainings not written yet: the record
    keeper writes them with the records (once a second), and a read adds
    them to the stored ones, so a poll sees every report at once."""

    def __init__(self) -> None:
        self._trackers: dict[str, Tracker] = {}  # trainings with reports to write
        self._writing: dict[str, list[Report]] = {}  # being written now

    def add(self, uuid: str, tracker: Tracker) -> None:
        """Training ``uuid`` has new reports (in ``tracker.pending``)."""
        self._trackers[uuid] = tracker

    def of(self, uuid: str) -> list[Report]:
        """Reports of ``uuid`` not written yet, oldest first."""
        tracker = self._trackers.get(uuid)
        pending = tracker.pending if tracker is not None else []
        return [*self._writing.get(uuid, []), *pending]

    async def write(self, store: TrainingStore) -> None:
        """Write them, one transaction per training; raises what the store
        raises, with what failed kept (in order) for the next try, at most
        :data:`MAX_UNWRITTEN` a training (the oldest go)."""
        for uuid, tracker in list(self._trackers.items()):
            if not tracker.pending:
                del self._trackers[uuid]
                continue
            reports = self._writing[uuid] = tracker.take()
            try:
                await append(store, uuid, reports)
            except BaseException:
                tracker.pending = [*reports, *tracker.pending][-MAX_UNWRITTEN:]
                raise
            finally:
                del self._writing[uuid]

    async def read(self, store: TrainingStore, uuid: str, since: int) -> Read:
        """What ``uuid`` reported after ``since``: the stored reports, then
        the unwritten ones that follow them without a hole (:func:`merge`);
        ``last`` counts the unwritten ones too. One trip to the store."""
        before = self.of(uuid)  # (one written during the read is in here)
        stored, stride, first, last = await load(store, uuid, since)
        unwritten = [*before, *self.of(uuid)]
        if first is None and unwritten:
            first = min(unwritten, key=lambda r: r.seq)
        last = max([last, *(r.seq for r in unwritten)])
        return Read(merge(stored, unwritten, since), stride, first, last)


# -- the store side (run on the store's thread through TrainingStore.call) ----


def _encode(values: dict[str, Any]) -> str:
    return json.dumps(values, separators=(",", ":"), default=str)


async def append(store: TrainingStore, uuid: str, reports: list[Report]) -> None:
    """Write ``reports`` of training ``uuid`` in one transaction (a report
    already written, by an earlier try that failed late, is kept as it is)."""
    if not reports:
        return

    def write() -> None:
        # encoded here, off the loop: the reports are the keeper's now
        rows = [(uuid, r.seq, r.t, r.step, _encode(r.values)) for r in reports]
        db = store.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT OR IGNORE INTO reports (uuid, seq, t, step, data) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    await store.call(write)


async def load(store: TrainingStore, uuid: str, since: int) -> Read:
    """Reports of ``uuid`` after ``since``, its first report and its last
    report's number, in one call on the store's thread.

    At most about :data:`READ_LIMIT` are read: past that every
    ``stride``-th one is (a very long run read from its start), so an
    answer costs a bounded time on the store's thread."""

    def rows(db: sqlite3.Connection) -> Read:
        first_row = db.execute(
            "SELECT seq, t, step, data FROM reports WHERE uuid = ? "
            "ORDER BY seq LIMIT 1",
            (uuid,),
        ).fetchone()
        if first_row is None:
            return Read([], 1, None, 0)
        (last,) = db.execute(
            "SELECT MAX(seq) FROM reports WHERE uuid = ?", (uuid,)
        ).fetchone()
        (count,) = db.execute(
            "SELECT COUNT(*) FROM reports WHERE uuid = ? AND seq > ?", (uuid, since)
        ).fetchone()
        stride = max(1, math.ceil(count / READ_LIMIT))
        cursor = db.execute(
            "SELECT seq, t, step, data FROM reports WHERE uuid = ? AND seq > ? "
            "AND (seq % ? = 0 OR seq = ?) ORDER BY seq",
            (uuid, since, stride, last),
        )
        reports = [_report(row) for row in cursor]
        return Read(reports, stride, _report(first_row), int(last))

    return await store.call(lambda: rows(store.db))


def _report(row: Any) -> Report:
    step = row[2]
    if step is not None and float(step).is_integer():
        step = int(step)
    return Report(int(row[0]), float(row[1]), step, json.loads(row[3]))


# -- series ---------------------------------------------------------------------


def x_axis(first: Report | None, asked: str) -> str:
    """``step`` or ``time``: ``auto`` is ``step`` when the first report
    carried a counter (``step`` or ``epoch``), so a job's axis never
    changes between two polls."""
    if asked != "auto":
        return asked
    return "step" if first is not None and first.step is not None else "time"


def series(
    reports: list[Report], axis: str
) -> tuple[dict[str, list[Point]], dict[str, list[Point]]]:
    """(numeric series, text series) of ``reports``; on the ``step`` axis a
    report's x is the counter as last reported (null before the first)."""
    numbers: dict[str, list[Point]] = {}
    texts: dict[str, list[Point]] = {}
    for report in reports:
        x = report.step if axis == "step" else report.t
        for key, value in report.values.items():
            if value is None or is_number(value):
                numbers.setdefault(key, []).append([x, curve_value(value)])
            else:
                texts.setdefault(key, []).append([x, value])
    return numbers, texts


def downsample(points: list[Point], limit: int) -> tuple[list[Point], int]:
    """At most ``limit`` points: (points, bucket size; 1 when untouched).

    Consecutive points are cut into buckets of ``k = ceil(2n / limit)``;
    each bucket keeps its lowest and highest values in order, so spikes
    survive, or, when it holds a gap (null), that gap and its last number,
    so gaps survive. The last point is always kept (the curve ends where
    the training is)."""
    n = len(points)
    if n <= limit:
        return points, 1
    k = math.ceil(2 * n / max(2, limit))
    kept: list[Point] = []
    for start in range(0, n, k):
        bucket = points[start : start + k]
        numbers = [p for p in bucket if p[1] is not None]
        gap = next((p for p in bucket if p[1] is None), None)
        if gap is not None:
            chosen = [gap, *numbers[-1:]]
        elif numbers:
            low = min(numbers, key=lambda p: p[1])
            high = max(numbers, key=lambda p: p[1])
            chosen = [low] if low is high else [low, high]
        else:
            chosen = []
        kept.extend(sorted(chosen, key=lambda p: bucket.index(p)))
    if kept[-1] is not points[-1]:
        kept[-1] = points[-1]
    return kept, k


def merge(stored: list[Report], unsaved: list[Report], since: int) -> list[Report]:
    """The stored reports, then the unsaved ones that follow them without a
    hole (one being written while the store was read comes with the next
    poll: a cursor never skips a report)."""
    last = stored[-1].seq if stored else since
    later = {r.seq: r for r in unsaved if r.seq > last}
    merged = list(stored)
    while last + 1 in later:
        last += 1
        merged.append(later[last])
    return merged
