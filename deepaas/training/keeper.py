"""What the job manager shares with the other servers of a state directory.

The :class:`RecordKeeper` is the job manager's only writer to the database
after a training is submitted. It

- writes the records the manager changed, and keeps the ones it could not
  write (a full disk, a lock held for longer than the busy timeout) in
  memory, where the API reads them, until a later try succeeds: the manager
  never waits on the database to free a slot or settle a waiter;
- renews this server's lease every :data:`~deepaas.training.ownership.HEARTBEAT_S`
  seconds, and in the same transaction takes the cancel requests other
  servers wrote for our trainings and turns the unfinished records of
  servers that are gone into errors;
- keeps the ``(model, status)`` counts that ``/metrics`` reads at scrape
  time: our own records counted in memory as they change, the others'
  re-read at each heartbeat;
- cancels a training owned by another server (:meth:`cancel_elsewhere`).

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

from deepaas.engine.process import EOF_WAIT_S
from deepaas.exceptions import DeepaasError
from deepaas.tasks import TaskSet
from deepaas.training import store as st
from deepaas.training.ownership import HEARTBEAT_S, LEASE_S, ServerIdentity
from deepaas.training.servers import CancelView, ServerTable

LOG = logging.getLogger(__name__)

SQLITE_FULL = 13  # SQLite's primary result code for "database or disk is full"
CANCEL_POLL_S = 0.1  # how often a cancel through another server looks again

StoreErrors = (sqlite3.Error, OSError)


class DiskFull(DeepaasError):
    """507: the state directory has no room for another training."""

    def __init__(self, where: str) -> None:
        super().__init__(
            507,
            f"the state directory {where} is full: no training can be recorded "
            "or run until space is freed there",
        )


class OwnerDidNotAct(DeepaasError):
    """409: another server owns the training and did not cancel it in time."""

    def __init__(self, message: str, owner: dict[str, object]) -> None:
        super().__init__(409, message)
        self.owner = owner


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
        on_interrupted: Callable[[list[str]], None],
        heartbeat: float = HEARTBEAT_S,
        lease: float = LEASE_S,
    ) -> None:
        self.store = store
        self.servers = ServerTable(store)
        self.identity = identity
        self.tasks = tasks
        self.on_cancel = on_cancel
        self.on_interrupted = on_interrupted
        self.heartbeat = heartbeat
        self.lease = lease
        self.failure: str | None = None  # why the last write failed; None: fine
        self._unsaved: dict[str, st.Training] = {}  # changed, not written yet
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

    def unsaved_records(self) -> list[st.Training]:
        return list(self._unsaved.values())

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
        they are kept for the next try) when the store fails."""
        for uuid, record in list(self._unsaved.items()):
            version = self._versions[uuid]
            try:
                await self.store.update(record)
            except StoreErrors as exc:
                self._failed(exc)
                return False
            if self._versions.get(uuid) == version:  # unchanged meanwhile
                del self._unsaved[uuid]
                del self._versions[uuid]
        self._recovered()
        return True

    async def _beat(self) -> None:
        try:
            tick = await self.servers.tick(self.identity, self.lease)
            self._others = await self.store.counts(self.identity.id)
        except StoreErrors as exc:
            self._failed(exc)
            return
        for uuid in tick.cancels:
            LOG.info("training %s: cancel requested through another server", uuid)
            self.on_cancel(uuid)
        if tick.interrupted:
            log_interrupted(tick.interrupted)
            self.on_interrupted([uuid for uuid, _ in tick.interrupted])

    def _failed(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if text != self.failure:
            LOG.error(
                "cannot write the training records in %s (%s); %d kept in memory "
                "and tried again every %gs",
                self.store.state_dir,
                text,
                len(self._unsaved),
                self.heartbeat,
            )
        self.failure = text

    def _recovered(self) -> None:
        if self.failure is not None:
            LOG.warning("training records in %s written again", self.store.state_dir)
            self.failure = None

    # -- cancel through a server that does not own the training -----------------

    async def cancel_elsewhere(self, record: st.Training, grace: float) -> st.Training:
        """Cancel a training another server owns: ask it through the database
        and wait until it did. Its record when finished (cancelled, or ended
        meanwhile, or marked because its owner is gone); raises
        :class:`OwnerDidNotAct` when the owner does not take the request
        within two heartbeats, or does not finish the cancel in about
        ``grace`` seconds more."""
        loop = asyncio.get_running_loop()
        uuid = record.uuid
        if record.owner is not None:
            await self.servers.request_cancel(uuid)
        asked = loop.time()
        ack_by = asked + 2 * self.heartbeat + 1.0
        done_by = ack_by + grace + EOF_WAIT_S + self.heartbeat
        while True:
            view = await self.servers.cancel_view(uuid, self.identity, self.lease)
            if view.record is None or view.record.finished:
                if view.record is not None and view.record.message in (
                    st.STOPPED_WHILE_RUNNING,
                    st.STOPPED_WHILE_QUEUED,
                ):
                    self.on_interrupted([uuid])  # its owner is gone: its files too
                return view.record or record
            now = loop.time()
            if record.owner is None or (not view.acked and now > ack_by):
                if record.owner is None or await self.servers.withdraw_cancel(uuid):
                    raise _did_not_act(view, "did not take the cancel request")
                continue  # taken just now
            if view.acked and now > done_by:
                raise _did_not_act(view, "took the cancel request but it still runs")
            await asyncio.sleep(CANCEL_POLL_S)


def _did_not_act(view: CancelView, what: str) -> OwnerDidNotAct:
    assert view.record is not None
    record = view.record
    if view.owner is not None:
        owner = view.owner.describe()
        who = f"server {owner['id']} (pid {owner['pid']} on {owner['host']})"
    else:  # a record written before server identities: only its PID is known
        owner = {"id": None, "pid": record.owner_pid, "host": None}
        who = f"the server with pid {record.owner_pid} (an older deepaas)"
    return OwnerDidNotAct(
        f"training {record.uuid} is {record.status} on {who}, which {what}; "
        "cancel it through that server, or try again",
        owner,
    )


def log_interrupted(found: list[tuple[str, str]]) -> None:
    if found:
        LOG.warning(
            "%d training(s) of servers that stopped marked as error: %s",
            len(found),
            ", ".join(f"{uuid} (was {status})" for uuid, status in found),
        )
