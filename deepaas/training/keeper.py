"""What the job manager shares with the other servers of a state directory.

The :class:`RecordKeeper` is the job manager's only writer to the database
after a training is submitted. It

- writes the records the manager changed, and keeps the ones it could not
  write (a full disk, a lock held for longer than the busy timeout) in
  memory, where the API reads them, until a later try succeeds: the manager
  never waits on the database to free a slot or settle a waiter. It logs
  once when writing starts to fail and once when it works again, however
  often it is tried in between;
- renews this server's lease every :data:`~deepaas.training.ownership.HEARTBEAT_S`
  seconds, and in the same transaction takes the cancel requests other
  servers wrote for our trainings and turns the unfinished records of
  servers that are gone into errors;
- notices when our own lease had lapsed (the process or its loop was
  stopped): the trainings another server marked meanwhile stay as marked
  (a finished record is final, see :meth:`TrainingStore.update`) and the
  manager stops their processes (``on_taken``);
- starts a pass over the left-over job directories (``on_leftovers``) every
  lease, and when a sweep marked trainings of a gone server;
- keeps the ``(model, status)`` counts that ``/metrics`` reads at scrape
  time: our own records counted in memory as they change, the others'
  re-read at each heartbeat;
- cancels a training owned by another server (:meth:`cancel_elsewhere`,
  see :mod:`deepaas.training.cancels`).

All of it runs in one background task owned by the manager's
:class:`~deepaas.tasks.TaskSet`; a change wakes it at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import sqlite3
from collections.abc import Callable

from deepaas.exceptions import DeepaasError
from deepaas.tasks import TaskSet
from deepaas.training import history
from deepaas.training import store as st
from deepaas.training.cancels import OwnerDidNotAct, cancel_elsewhere
from deepaas.training.ownership import HEARTBEAT_S, LEASE_S, ServerIdentity
from deepaas.training.servers import ServerTable, Tick

__all__ = ["DiskFull", "OwnerDidNotAct", "RecordKeeper", "client_error"]

LOG = logging.getLogger(__name__)

SQLITE_FULL = 13  # SQLite's primary result code for "database or disk is full"

StoreErrors = (sqlite3.Error, OSError)


class DiskFull(DeepaasError):
    """507: the state directory has no room for another training."""

    def __init__(self, where: str) -> None:
        super().__init__(
            507,
            f"the state directory {where} is full: no training can be recorded "
            "or run until space is freed there",
        )


def is_disk_full(exc: BaseException) -> bool:
    """An ``OSError`` or SQLite error that means "no space left"."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF == SQLITE_FULL
        return "full" in str(exc)
    return False


def client_error(exc: BaseException, where: str) -> DeepaasError | None:
    """The answer to a request whose record or files could not be written."""
    if is_disk_full(exc):
        return DiskFull(where)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return DeepaasError(
            503,
            f"the training records in {where} are locked by another process "
            f"(waited {st.BUSY_TIMEOUT_S:g}s); try again",
        )
    return None


class RecordKeeper:
    """The database side of one job manager (see the module docstring)."""

    def __init__(
        self,
        store: st.TrainingStore,
        identity: ServerIdentity,
        tasks: TaskSet,
        *,
        on_cancel: Callable[[str], None],
        on_taken: Callable[[st.Training], bool],
        on_leftovers: Callable[[], None],
        active: Callable[[], list[str]],
        heartbeat: float = HEARTBEAT_S,
        lease: float = LEASE_S,
    ) -> None:
        """``on_cancel(uuid)``: another server asked to cancel one of ours;
        ``on_taken(stored)``: another server finished one we hold as queued
        or running (True when the manager had it active); ``on_leftovers()``:
        time for a pass over left-over job directories; ``active()``: the
        trainings we hold as queued or running."""
        self.store = store
        self.servers = ServerTable(store)
        self.identity = identity
        self.tasks = tasks
        self.on_cancel = on_cancel
        self.on_taken = on_taken
        self.on_leftovers = on_leftovers
        self.active = active
        self.heartbeat = heartbeat
        self.lease = lease
        self.failure: str | None = None  # why the last write failed; None: fine
        self.failed_tries = 0  # writes failed since the last success
        self._failing: set[str] = set()  # "records", "reports", "heartbeat"
        self._beats = 0
        self._leftovers_every = max(1, round(lease / heartbeat))  # once a lease
        self._unsaved: dict[str, st.Training] = {}  # changed, not written yet
        self.reports = history.Unwritten()  # reports not written yet
        self._versions: dict[str, int] = {}
        self._own: collections.Counter[tuple[str, str]] = collections.Counter()
        self._others: dict[tuple[str, str], int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._restart: asyncio.TimerHandle | None = None
        self._closed = False

    # -- life cycle -----------------------------------------------------------

    async def open(self) -> list[tuple[str, str]]:
        """Take our lease; mark what servers that are gone left unfinished
        (returned); read the counts. Raises what the store raises."""
        await self.servers.register(self.identity)
        interrupted = await self.servers.sweep(self.identity, self.lease)
        self._others = await self.store.counts(self.identity.id)
        return interrupted

    def start(self) -> None:
        """Start the background task (renewing the lease from now on)."""
        if self._closed:
            return
        self._restart = None
        with contextlib.suppress(RuntimeError):  # the manager is stopping
            self._task = self.tasks.spawn(
                self._keep(), "training records", on_error=self._crashed
            )

    def _crashed(self, exc: BaseException) -> None:
        """A bug in the loop below: start it again after a heartbeat, so
        records keep being written and the lease renewed."""
        if not self._closed:
            loop = asyncio.get_running_loop()
            self._restart = loop.call_later(self.heartbeat, self.start)

    async def close(self, timeout: float) -> None:
        """Stop the task; write what is unwritten, give up our lease and close
        the store, all within ``timeout`` seconds (what cannot be written by
        then is lost, and the next server reports those trainings as
        interrupted)."""
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        async def last_writes() -> None:
            if await self.flush():
                await self.servers.unregister(self.identity)

        try:
            await asyncio.wait_for(last_writes(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            self.failure = self.failure or f"no answer in {timeout:.1f}s"
        except StoreErrors as exc:  # giving up the lease: it expires instead
            LOG.warning("stopping: our lease in %s stays: %s", self.store.path, exc)
        if self._unsaved:
            LOG.error(
                "stopping: %d training record(s) could not be written (%s); they "
                "are reported as interrupted by the next server on %s",
                len(self._unsaved),
                self.failure,
                self.store.state_dir,
            )
        await self.store.close(max(0.1, deadline - loop.time()))

    # -- changes from the manager ---------------------------------------------

    def created(self, record: st.Training) -> None:
        """A record we inserted (counted from now on)."""
        self._own[record.model, record.status] += 1

    def changed(self, record: st.Training, was: str | None = None) -> None:
        """``record`` changed (from status ``was``): written soon. A status
        change is written at once; progress with the next heartbeat."""
        if was is not None and was != record.status:
            self._own[record.model, was] -= 1
            self._own[record.model, record.status] += 1
        self._unsaved[record.uuid] = record
        self._versions[record.uuid] = self._versions.get(record.uuid, 0) + 1
        if was is not None:
            self._wake.set()

    def unsaved(self, uuid: str) -> st.Training | None:
        """Our latest copy of a record not written yet (the truth till then)."""
        return self._unsaved.get(uuid)

    def counts(self) -> list[tuple[str, str, int]]:
        """``(model, status, count)`` of every record, from memory."""
        total = collections.Counter(self._others)
        total.update(self._own)
        return sorted((m, s, n) for (m, s), n in total.items() if n > 0)

    # -- the background task ----------------------------------------------------

    async def _keep(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), max(0.0, next_beat - loop.time())
                )
            self._wake.clear()
            await self.flush()
            if loop.time() >= next_beat:
                next_beat = loop.time() + self.heartbeat
                await self._beat()

    async def flush(self) -> bool:
        """Write the records changed since their last write; False (and
        they are kept for the next try) when the store fails. A record the
        store refuses (another server finished it) is taken as stored.
        Reports go first (a record that says "done" has its history), but
        reports that cannot be written do not hold back the records (an
        UPDATE may fit where an INSERT does not, on a full disk)."""
        reported = await self._flush_reports()
        for uuid, record in list(self._unsaved.items()):
            version = self._versions[uuid]
            try:
                written, stored = await self.store.update(record)
            except StoreErrors as exc:
                self._failed("records", exc)
                return False
            if self._versions.get(uuid) != version:
                continue  # changed meanwhile: written (or refused) next time
            del self._unsaved[uuid]
            del self._versions[uuid]
            if not written:
                self._refused(record, stored)
        self._recovered("records")
        return reported

    async def _flush_reports(self) -> bool:
        """Write the reports received since the last flush (kept for the
        next try when the store fails)."""
        try:
            await self.reports.write(self.store)
        except StoreErrors as exc:
            self._failed("reports", exc)
            return False
        self._recovered("reports")
        return True

    def _refused(self, record: st.Training, stored: st.Training | None) -> None:
        """The store did not take ``record``: the stored one is the truth."""
        if stored is None:
            LOG.warning(
                "training %s: its record is gone from %s; not written",
                record.uuid,
                self.store.path,
            )
            return
        if (stored.status, stored.message) == (record.status, record.message):
            return  # ours already, as it is (written by an earlier try)
        LOG.warning(
            "training %s was marked %s (%s) by another server while our lease "
            "had lapsed; it stays so (ours said %s)",
            record.uuid,
            stored.status,
            stored.message,
            record.status,
        )
        if not self.on_taken(stored):  # not active here: adopt it in memory
            self._own[record.model, record.status] -= 1
            self._own[record.model, stored.status] += 1
            record.adopt(stored)

    async def _beat(self) -> None:
        self._beats += 1
        try:
            tick = await self.servers.tick(self.identity, self.lease, self.active())
            self._others = await self.store.counts(self.identity.id)
        except StoreErrors as exc:
            self._failed("heartbeat", exc)
            return
        self._recovered("heartbeat")
        self._lapsed(tick)
        for uuid in tick.cancels:
            LOG.info("training %s: cancel requested through another server", uuid)
            self.on_cancel(uuid)
        if tick.interrupted:
            log_interrupted(tick.interrupted)
        if tick.interrupted or self._beats % self._leftovers_every == 0:
            self.on_leftovers()

    def _lapsed(self, tick: Tick) -> None:
        """Our lease had lapsed: stop what another server marked meanwhile."""
        if tick.lapsed is not None:
            LOG.warning(
                "our lease in %s had lapsed (no heartbeat for %s: was the server "
                "stopped or stalled?); %d of our trainings were marked as stopped "
                "by another server meanwhile",
                self.store.path,
                "long" if tick.lapsed == float("inf") else f"{tick.lapsed:.1f}s",
                len(tick.taken),
            )
        for stored in tick.taken:
            self.on_taken(stored)

    def _failed(self, part: str, exc: BaseException) -> None:
        """A write failed: logged when writing starts to fail, not each try."""
        self.failure = f"{type(exc).__name__}: {exc}"
        self.failed_tries += 1
        if not self._failing:
            LOG.error(
                "cannot write the training records in %s (%s); %d kept in memory, "
                "will retry every %gs",
                self.store.state_dir,
                self.failure,
                len(self._unsaved),
                self.heartbeat,
            )
        self._failing.add(part)

    def _recovered(self, part: str) -> None:
        """``part`` works again: logged once everything does."""
        if part not in self._failing:
            return
        self._failing.discard(part)
        if not self._failing:
            LOG.warning(
                "training records in %s written again (after %d failed tries)",
                self.store.state_dir,
                self.failed_tries,
            )
            self.failure = None
            self.failed_tries = 0

    # -- cancel through a server that does not own the training -----------------

    async def cancel_elsewhere(self, record: st.Training, grace: float) -> st.Training:
        """Cancel a training another server owns
        (:func:`~deepaas.training.cancels.cancel_elsewhere`)."""
        return await cancel_elsewhere(
            self.servers,
            self.tasks,
            self.identity,
            record,
            grace=grace,
            heartbeat=self.heartbeat,
            lease=self.lease,
            on_gone=self.on_leftovers,
        )


def log_interrupted(found: list[tuple[str, str]]) -> None:
    if found:
        LOG.warning(
            "%d training(s) of servers that stopped marked as error: %s",
            len(found),
            ", ".join(f"{uuid} (was {status})" for uuid, status in found),
        )
