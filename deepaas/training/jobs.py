"""The training job manager, in the API process (asyncio).

A submitted training is recorded ``queued``; jobs start in submission order
(FIFO: a job waiting for GPUs holds back the jobs behind it, so a large job
is never starved by small ones) when fewer than ``max_trainings`` run and
enough GPUs are free. GPUs are leased from the devices ``--devices``
selected, exclusively among trainings (predict workers are not counted: a
training shares its GPUs with the predict workers placed there). A job that
asks no GPU runs on the CPU.

Each job is a child process (:mod:`deepaas.training.runner`) started by the
engine's supervisor (:mod:`deepaas.engine.process`): its own session, only
its leased GPUs visible, its output appended to its log file, its job
directory as working directory. Cancel sends SIGTERM to its process group
and SIGKILL after ``cancel_grace`` seconds. The files a job was given live
in its job directory until it ends.

States: ``queued -> running -> done | error | cancelled`` and
``queued -> cancelled``; a server stop turns ``queued``/``running`` into
``error``. The manager's memory is the truth for its own trainings: a
status change frees the slot, starts the next job and settles waiters at
once, and the :class:`~deepaas.training.keeper.RecordKeeper` writes it to
the database (retrying while the disk is full). Records are owned by this
server run's identity (:mod:`deepaas.training.ownership`), so other servers
sharing the state directory can tell when it is gone, and cancel through it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from typing import Any

from deepaas.config import ConfigError
from deepaas.engine import process, protocol
from deepaas.engine.devices import Device
from deepaas.exceptions import DeepaasError, ShuttingDown
from deepaas.tasks import TaskSet
from deepaas.training import store as st
from deepaas.training.job import (
    Job,
    create_log,
    job_spec,
    list_dir,
    make_job_dir,
    remove_trees,
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
from deepaas.training.ownership import HEARTBEAT_S, LEASE_S, ServerIdentity

__all__ = ["DiskFull", "Job", "JobManager", "OwnerDidNotAct", "shown_args"]

LOG = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # stop()'s default: SIGKILL after min(cancel_grace, this)


class JobManager:
    """Queues, starts, watches, cancels and records the trainings of an app."""

    def __init__(
        self,
        store: st.TrainingStore,
        targets: Mapping[str, str],
        devices: Sequence[Device] = (),
        *,
        max_trainings: int = 1,
        default_gpus: int | None = None,
        cancel_grace: float = 10.0,
        env: Mapping[str, str] | None = None,
        extra_path: tuple[str, ...] = (),
        warm: bool = True,
        identity: ServerIdentity | None = None,
        heartbeat: float = HEARTBEAT_S,
        lease: float = LEASE_S,
    ) -> None:
        self.store = store
        self.targets = dict(targets)
        self.gpus = [d for d in devices if d.kind == "cuda"]
        self.free = list(self.gpus)
        self.max_trainings = max_trainings
        self.default_gpus = (
            default_gpus if default_gpus is not None else (1 if self.gpus else 0)
        )
        self.cancel_grace = cancel_grace
        self.env = dict(os.environ if env is None else env)
        self.extra_path = extra_path
        self.warm = warm
        self.identity = identity or ServerIdentity.new()
        self.queue: collections.deque[Job] = collections.deque()
        self.running: dict[str, Job] = {}
        self.stopping = False
        self.opened = False
        self.tasks = TaskSet("training jobs")
        self.keeper = RecordKeeper(
            store,
            self.identity,
            self.tasks,
            on_cancel=self._cancel_requested,
            on_interrupted=self._remove_job_dirs,
            heartbeat=heartbeat,
            lease=lease,
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
        self._remove_job_dirs([uuid for uuid, _ in interrupted])
        self.tasks.spawn(self._remove_leftovers(), "remove left-over job dirs")
        self.keeper.start()

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Server stop, within about ``grace`` + 1 s: queued jobs become
        errors; running ones get SIGTERM, SIGKILL after ``min(cancel_grace,
        grace)`` seconds, and become errors; records are written (if the
        store can take them in time) and our lease is given up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace + 1.0
        self.stopping = True
        while self.queue:
            self._finish_unstarted(
                self.queue.popleft(), st.ERROR, st.STOPPED_WHILE_QUEUED
            )
        jobs = list(self.running.values())
        kill_after = min(self.cancel_grace, grace)
        for job in jobs:
            job.stopping = True
            job.kill_after = kill_after
            if job.child is not None:
                self._terminate(job.child, kill_after)
        await _all_set([job.done for job in jobs], deadline - 0.5 - loop.time())
        for job in jobs:
            self._finish(job)  # those not reaped in time: killed, recorded
        await self.tasks.close(timeout=0.2)
        if self.opened:
            self.opened = False
            await self.keeper.close(max(0.1, deadline - loop.time()))

    async def _remove_leftovers(self) -> None:
        """Remove the job directories of finished trainings (a server
        killed before it could; none of a training still being submitted)."""
        loop = asyncio.get_running_loop()
        names = await loop.run_in_executor(None, list_dir, str(self.store.jobs_dir))
        finished = await self.store.finished_among(names)
        self._remove_job_dirs(finished)

    # -- queries ------------------------------------------------------------

    def active(self, uuid: str) -> Job | None:
        job = self.running.get(uuid)
        if job is not None:
            return job
        return next((j for j in self.queue if j.uuid == uuid), None)

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

    def counts(self) -> list[tuple[str, str, int]]:
        """(model, status, count) of every record, for the metrics: from
        memory (the keeper's snapshot), never the database."""
        return self.keeper.counts()

    def progress(self) -> list[tuple[str, str, str, float]]:
        """(model, uuid, key, value) of the numeric progress of running jobs."""
        found = []
        for job in self.running.values():
            for key, value in job.record.progress.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    found.append((job.record.model, job.uuid, key, float(value)))
        return found

    # -- submit ---------------------------------------------------------------

    def new_id(self) -> str:
        return uuidlib.uuid4().hex

    def resolve_gpus(self, gpus: int | None) -> int:
        wanted = self.default_gpus if gpus is None else gpus
        if wanted > len(self.gpus):
            have = ", ".join(d.label for d in self.gpus) or "none"
            raise DeepaasError(
                422,
                f"this training asks for {wanted} GPU(s) but the server has "
                f"{len(self.gpus)} ({have})",
            )
        return wanted

    def _check_taking(self) -> None:
        if self.stopping or not self.opened:
            raise ShuttingDown()

    async def prepare(self, uuid: str) -> str:
        """Create the job directory (its uploads go there); raises
        :class:`DiskFull` (507) when the state directory has no room."""
        self._check_taking()
        job_dir = self.store.job_dir(uuid)
        await self._io(make_job_dir, job_dir)
        return job_dir

    def discard(self, uuid: str) -> None:
        """A training that was not submitted after all: remove its files."""
        self._remove_job_dirs([uuid])

    async def submit(
        self, model: str, uuid: str, kwargs: dict[str, Any], gpus: int | None
    ) -> st.Training:
        """Record a training and queue it (it starts at once when it can)."""
        self._check_taking()
        wanted = self.resolve_gpus(gpus)
        record = st.Training(
            uuid=uuid,
            model=model,
            args=shown_args(kwargs),
            status=st.QUEUED,
            date=st.now(),
            log_path=self.store.log_path(uuid),
            owner_pid=self.identity.pid,
            owner=self.identity.id,
            gpus=wanted,
        )
        await self._io(create_log, record.log_path)
        insert = asyncio.ensure_future(self.store.insert(record))
        try:
            await asyncio.shield(insert)
        except asyncio.CancelledError:
            # The request went away while the insert waited (a lock, a
            # client that hung up): the record may exist now; close it.
            # (Once stopped, our lease is given up: the next sweep does.)
            with contextlib.suppress(RuntimeError):
                self.tasks.spawn(self._abandon(insert, record), f"abandon {uuid}")
            raise
        except StoreErrors as exc:
            answer = client_error(exc, str(self.store.state_dir))
            if answer is None:
                raise
            raise answer from exc
        self.keeper.created(record)
        job = Job(record, self.targets[model], kwargs)
        if self.stopping:  # the server began to stop during the insert
            self._finish_unstarted(job, st.ERROR, st.STOPPED_WHILE_QUEUED)
            raise ShuttingDown()
        self.queue.append(job)
        LOG.info("training %s of model %s queued (%d GPU(s))", uuid, model, wanted)
        self._schedule()
        return record

    async def _abandon(self, insert: asyncio.Future[None], record: st.Training) -> None:
        with contextlib.suppress(*StoreErrors):
            await insert
            self.keeper.created(record)
            job = Job(record, self.targets[record.model], {})
            message = "the request that submitted this training was cancelled"
            self._finish_unstarted(job, st.ERROR, message)

    async def _io(self, fn: Any, *args: Any) -> None:
        """File work for a request, off the loop; a full disk is a 507."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, fn, *args)
        except OSError as exc:
            answer = client_error(exc, str(self.store.state_dir))
            if answer is None:
                raise
            raise answer from exc

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
            self._cancel(job)
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

    def _cancel_requested(self, uuid: str) -> None:
        """Another server wrote a cancel request for one of ours."""
        job = self.active(uuid)
        if job is not None:
            self._cancel(job)

    def _cancel(self, job: Job) -> None:
        if job in self.queue:
            self.queue.remove(job)
            self._finish_unstarted(job, st.CANCELLED, None)
            self._schedule()
            return
        if job.cancelling:
            return
        job.cancelling = True
        LOG.info("training %s: cancelling (SIGTERM)", job.uuid)
        if job.child is not None:
            self._terminate(job.child, self.cancel_grace)
        # else: still starting; _run terminates it once it exists

    def _terminate(self, child: process.Child, grace: float) -> None:
        """SIGTERM the child's group, SIGKILL after ``grace`` (in the
        background; should that fail, SIGKILL at once)."""
        self.tasks.spawn(
            child.terminate(grace),
            f"terminate {child.label}",
            on_error=lambda exc: child.kill(),
        )

    # -- scheduling -----------------------------------------------------------

    def _schedule(self) -> None:
        while self.queue and not self.stopping:
            if len(self.running) >= self.max_trainings:
                return
            job = self.queue[0]
            if job.record.gpus > len(self.free):
                return  # FIFO: the head waits for its GPUs, the rest behind it
            self.queue.popleft()
            job.leased = tuple(self.free[: job.record.gpus])
            del self.free[: job.record.gpus]
            self.running[job.uuid] = job
            self._start(job)

    def _start(self, job: Job) -> None:
        record = job.record
        record.status = st.RUNNING
        record.start_date = st.now()
        record.devices = [d.label for d in job.leased] or ["cpu"]
        self.keeper.changed(record, was=st.QUEUED)
        self.tasks.spawn(
            self._run(job),
            f"training {job.uuid}",
            on_error=lambda exc: self._finish(
                job, f"the server failed to run this training: {exc}"
            ),
        )

    async def _run(self, job: Job) -> None:
        """Start the job's process, hand it its arguments, wait for its end."""
        try:
            frame = protocol.pack(protocol.Train(job.kwargs))
        except Exception as exc:
            self._finish(job, f"the arguments could not be sent to the training: {exc}")
            return
        job_dir = self.store.job_dir(job.uuid)
        spec = job_spec(job, self.env, self.extra_path, job_dir, self.warm)
        try:
            child = await process.spawn(spec, lambda m: self._on_message(job, m))
        except OSError as exc:
            self._finish(job, f"cannot start the training process: {exc}")
            return
        job.child = child
        if job.done.is_set():  # given up (stop) while it was being started
            child.kill()
            await child.ended()
            return
        LOG.info(
            "training %s of model %s started on %s (pid %s)",
            job.uuid,
            job.record.model,
            ",".join(job.record.devices),
            child.pid,
        )
        if job.stopping or job.cancelling:  # while it was being started
            grace = job.kill_after if job.stopping else self.cancel_grace
            self._terminate(child, grace)
        elif not child.channel.write(frame):
            job.failure = "the training process closed its connection at once"
        await child.ended()
        self._finish(job)

    def _on_message(self, job: Job, message: Any) -> None:
        if job.on_message(message):
            self.keeper.changed(job.record)  # written with the next heartbeat

    # -- endings ----------------------------------------------------------------

    def _finish(self, job: Job, failure: str | None = None) -> None:
        """The job ended (or must be given up): record how, free its slot and
        devices, settle its waiters, start the next. Never waits, never
        fails on the store: the keeper writes the record."""
        if job.done.is_set():
            return
        record = job.record
        child = job.child
        if child is not None and child.returncode is None:
            child.kill()  # given up before it exited: its group goes
        if failure is not None and job.failure is None:
            job.failure = failure
        was = job.end()
        self.running.pop(job.uuid, None)
        self.free.extend(job.leased)
        self.free.sort(key=self.gpus.index)  # lowest devices first, as listed
        job.leased = ()
        self.keeper.changed(record, was=was)
        self._remove_job_dirs([job.uuid])
        LOG.info("training %s of model %s: %s", job.uuid, record.model, record.status)
        job.done.set()
        self._schedule()

    def _finish_unstarted(self, job: Job, status: str, message: str | None) -> None:
        record = job.record
        was = record.status
        record.status = status
        record.message = message
        record.finish_date = st.now()
        self.keeper.changed(record, was=was)
        self._remove_job_dirs([job.uuid])
        job.done.set()

    def _remove_job_dirs(self, uuids: list[str]) -> None:
        """Remove job directories off the loop (a big upload takes a while)."""
        if not uuids:
            return
        paths = [self.store.job_dir(uuid) for uuid in uuids]
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(None, remove_trees, paths)
        except RuntimeError:  # the executor is shut down: the loop is closing
            return  # (the next server removes them: they are finished)
        with contextlib.suppress(RuntimeError):  # stopped: it runs on, unwatched
            self.tasks.spawn(_wait(future), f"remove {len(paths)} job dir(s)")


async def _wait(future: asyncio.Future[None]) -> None:
    await future


async def _all_set(events: list[asyncio.Event], timeout: float) -> None:
    """Wait until every event is set, at most ``timeout`` seconds."""
    if not events:
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, timeout))
    finally:
        for waiter in waiters:
            waiter.cancel()
