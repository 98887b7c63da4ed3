"""The training job manager, in the API process (asyncio): what the API asks
of trainings.

A submitted training gets its job directory (its uploads go there) and its
log file, is recorded ``queued`` and handed to the
:class:`~deepaas.training.scheduler.JobScheduler`, which decides when it
runs, on which GPUs, and finishes it (``prepare``, ``submit`` and
``discard`` come from :class:`~deepaas.training.submission.SubmissionMixin`,
which the manager inherits). The manager answers for records
(:meth:`JobManager.get`, :meth:`JobManager.records`, the counts for the
metrics), cancels a training here or through the server that owns it, and
opens and stops the whole at the server's start and stop.

States: ``queued -> running -> done | error | cancelled`` and
``queued -> cancelled``; a server stop turns ``queued``/``running`` into
``error``; a finished record is final. When the server drains
(:meth:`JobManager.drain`), queued trainings become errors at once and
running ones get until the shutdown timeout to finish; :meth:`JobManager.stop`
stops what is left. The manager's memory is the truth for its own trainings: a
status change frees the slot, starts the next job and settles waiters at
once, and the :class:`~deepaas.training.keeper.RecordKeeper` writes it to
the database (retrying while the disk is full). Records are owned by this
server run's identity (:mod:`deepaas.training.ownership`), so other servers
sharing the state directory can tell when it is gone, and cancel through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence

from deepaas.config import ConfigError
from deepaas.engine.devices import Device
from deepaas.tasks import TaskSet
from deepaas.training import history
from deepaas.training import store as st
from deepaas.training.job import (
    Job,
    list_dir,
    remove_job_dirs,
    shown_args,
)
from deepaas.training.keeper import (
    DiskFull,
    OwnerDidNotAct,
    RecordKeeper,
    StoreErrors,
    client_error,
    log_interrupted,
)
from deepaas.training.launch import outside_any_group
from deepaas.training.ownership import HEARTBEAT_S, LEASE_S, ServerIdentity
from deepaas.training.scheduler import JobScheduler, all_set
from deepaas.training.submission import SubmissionMixin

__all__ = ["DiskFull", "Job", "JobManager", "OwnerDidNotAct", "shown_args"]

LOG = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # stop()'s default: SIGKILL after min(cancel_grace, this)


class JobManager(SubmissionMixin):
    """Records, queues, cancels and answers for the trainings of an app."""

    def __init__(
        self,
        store: st.TrainingStore,
        targets: Mapping[str, str],
        devices: Sequence[Device] = (),
        *,
        origins: Mapping[str, str] | None = None,
        max_trainings: int = 1,
        default_gpus: int | None = None,
        cancel_grace: float = 10.0,
        env: Mapping[str, str] | None = None,
        extra_path: tuple[str, ...] = (),
        warm: bool = True,
        on_done: Callable[[str, str], None] | None = None,  # (model, uuid) done
        identity: ServerIdentity | None = None,
        heartbeat: float = HEARTBEAT_S,
        lease: float = LEASE_S,
    ) -> None:
        self.store = store
        self.targets = dict(targets)
        # "plugin" or "entry point", as load errors say (by default the
        # runner tells a file, a plugin, from a module, an entry point).
        self.origins = dict(origins or {})
        self.cancel_grace = cancel_grace
        self.identity = identity or ServerIdentity.new()
        self.opened = False
        self.tasks = TaskSet("training jobs")
        self.keeper = RecordKeeper(
            store,
            self.identity,
            self.tasks,
            on_cancel=self._cancel_requested,
            on_taken=self._taken,
            on_leftovers=self._leftovers_pass,
            active=self._active_uuids,
            heartbeat=heartbeat,
            lease=lease,
        )
        self.scheduler = JobScheduler(
            store,
            self.keeper,
            self.tasks,
            devices,
            max_trainings=max_trainings,
            cancel_grace=cancel_grace,
            # A job is never a task of a launcher's group (launch.py).
            env=outside_any_group(os.environ if env is None else env),
            extra_path=extra_path,
            warm=warm,
            on_done=on_done,
        )
        self._leftovers: asyncio.Task[None] | None = None
        self.default_gpus = (
            default_gpus
            if default_gpus is not None
            else (1 if self.scheduler.gpus else 0)
        )

    # -- life cycle ---------------------------------------------------------

    async def open(self) -> None:
        """Open the store and take our lease; records of servers that are
        gone become errors; job directories left behind are removed."""
        try:
            await self.store.open()
            interrupted = await self.keeper.open()
        except StoreErrors as exc:
            await self.store.close(1.0)
            raise ConfigError(
                f"state_dir: cannot keep training records in {self.store.state_dir}: "
                f"{exc}"
            ) from exc
        self.opened = True
        log_interrupted(interrupted)
        self._leftovers_pass()
        self.keeper.start()

    async def drain(self, timeout: float, hurry: asyncio.Event) -> None:
        """The server drains: new trainings are refused, queued ones become
        errors at once (none would start), running ones get ``timeout``
        seconds to finish, or until ``hurry`` is set (a second signal).
        :meth:`stop` stops those still running after that."""
        if not self.opened:
            return
        jobs = self.scheduler.drain()
        if not jobs:
            return
        LOG.info(
            "stopping: %d training(s) running get up to %gs to finish",
            len(jobs),
            timeout,
        )
        loop = asyncio.get_running_loop()
        began = loop.time()
        finished = asyncio.ensure_future(all_set([j.done for j in jobs], timeout))
        hurried = asyncio.ensure_future(hurry.wait())
        try:
            await asyncio.wait({finished, hurried}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (finished, hurried):
                waiter.cancel()
        left = sum(not job.done.is_set() for job in jobs)
        if left:
            LOG.warning(
                "stopping: %d training(s) still running after %.1fs%s: they are "
                "stopped and recorded as errors",
                left,
                loop.time() - began,
                " (a second signal)" if hurry.is_set() else "",
            )

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Server stop, within about ``grace`` + 1 s: queued jobs become
        errors; running ones get SIGTERM, SIGKILL after ``min(cancel_grace,
        grace)`` seconds, and become errors; records are written (if the
        store can take them in time) and our lease is given up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace + 1.0
        await self.scheduler.stop(grace, wait=deadline - 0.5 - loop.time())
        await self.tasks.close(timeout=0.2)
        if self.opened:
            self.opened = False
            await self.keeper.close(max(0.1, deadline - loop.time()))

    def _leftovers_pass(self) -> None:
        """Start a pass over left-over job directories, unless one runs."""
        if self._leftovers is not None and not self._leftovers.done():
            return
        with contextlib.suppress(RuntimeError):  # stopping
            self._leftovers = self.tasks.spawn(
                self._remove_leftovers(), "remove left-over job dirs"
            )

    async def _remove_leftovers(self) -> None:
        """Remove the job directories that are no server's any more: of
        finished trainings whose owner is surely gone
        (:meth:`ServerTable.leftovers`); none of a training still being
        submitted, nor of one whose owner may still run it."""
        loop = asyncio.get_running_loop()
        names = await loop.run_in_executor(None, list_dir, str(self.store.jobs_dir))
        if not names:
            return
        try:
            found = await self.keeper.servers.leftovers(
                names, self.identity, self.keeper.lease
            )
        except StoreErrors as exc:  # tried again with the next pass
            LOG.debug("left-over job dirs: %s", exc)
            return
        self._remove_job_dirs(found)

    def _remove_job_dirs(self, uuids: list[str]) -> None:
        remove_job_dirs(self.store, self.tasks, uuids)

    # -- queries ------------------------------------------------------------

    def active(self, uuid: str) -> Job | None:
        """The queued or running job of ``uuid``, if it is one of ours."""
        return self.scheduler.active(uuid)

    def _local(self, uuid: str) -> st.Training | None:
        job = self.active(uuid)
        return job.record if job is not None else self.keeper.unsaved(uuid)

    async def get(self, uuid: str, model: str | None = None) -> st.Training | None:
        """A record: ours from memory (the truth, even when not written yet),
        others' from the store."""
        record = self._local(uuid)
        if record is None:
            record = await self.store.get(uuid)
        if record is None or (model is not None and record.model != model):
            return None
        return record

    async def records(self, model: str) -> list[st.Training]:
        stored = await self.store.records(model)
        return [self._local(r.uuid) or r for r in stored]

    async def reports(self, uuid: str, since: int) -> history.Read:
        """What training ``uuid`` reported after ``since``, and its last
        report's number (:meth:`history.Unwritten.read`: the stored ones and
        ours unwritten, one trip to the store)."""
        return await self.keeper.reports.read(self.store, uuid, since)

    def counts(self) -> list[tuple[str, str, int]]:
        """(model, status, count) of every record, for the metrics: from
        memory (the keeper's snapshot), never the database."""
        return self.keeper.counts()

    def progress(self) -> list[tuple[str, str, str, float]]:
        """(model, uuid, key, value) of the numeric progress of running jobs."""
        return self.scheduler.progress()

    # -- cancel ---------------------------------------------------------------

    async def cancel(self, uuid: str, model: str | None = None) -> st.Training | None:
        """Stop a queued or running training; a finished one is left as is.

        A training of another server sharing the state directory is
        cancelled by that server (:meth:`RecordKeeper.cancel_elsewhere`);
        raises :class:`OwnerDidNotAct` (409) when it does not.
        """
        record = await self.get(uuid, model)
        if record is None:
            return None
        job = self.active(uuid)
        if job is not None:
            self.scheduler.cancel(job)
            await job.done.wait()
            return job.record
        if record.finished or record.owner == self.identity.id:
            return record
        try:
            return await self.keeper.cancel_elsewhere(record, self.cancel_grace)
        except StoreErrors as exc:
            answer = client_error(exc, str(self.store.state_dir))
            if answer is None:
                raise
            raise answer from exc

    def _active_uuids(self) -> list[str]:
        scheduler = self.scheduler
        return [*scheduler.running, *(job.uuid for job in scheduler.queue)]

    def _taken(self, stored: st.Training) -> bool:
        """Another server finished one of ours (our lease had lapsed): stop
        it; False when it is not queued or running here."""
        job = self.active(stored.uuid)
        if job is None:
            return False
        self.scheduler.taken(job, stored)
        return True

    def _cancel_requested(self, uuid: str) -> None:
        """Another server wrote a cancel request for one of ours."""
        job = self.active(uuid)
        if job is not None:
            self.scheduler.cancel(job)
