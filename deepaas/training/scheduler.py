"""Which training runs when, on which GPUs, and how each one ends.

The :class:`JobScheduler` holds one server's queued and running trainings.
Jobs start in submission order (FIFO: a job waiting for GPUs holds back the
jobs behind it, so a large job is never starved by small ones) when fewer
than ``max_trainings`` run and enough GPUs are free. GPUs are leased from the
devices ``--devices`` selected, exclusively among trainings (predict workers
are not counted: a training shares its GPUs with the predict workers placed
there). A job that asks no GPU runs on the CPU.

Each job is a child process (:mod:`deepaas.training.runner`) started by the
engine's supervisor (:mod:`deepaas.engine.process`): its own session, only
its leased GPUs visible, its output appended to its log file, its job
directory as working directory. Cancel sends SIGTERM to its process group
and SIGKILL after ``cancel_grace`` seconds.

When a job ends, or is given up, everything follows at once and nothing
waits on the database: its record gets its final status (the
:class:`~deepaas.training.keeper.RecordKeeper` writes it), its slot and GPUs
are freed, its waiters settled, its job directory removed, and the next job
starts. A job that ends ``done`` is announced (``on_done(model, uuid)``: the
server reloads that model's predict workers, which load what it saved).
The :class:`~deepaas.training.jobs.JobManager` records the jobs it hands
over here, and answers for them.

When the server drains (:meth:`JobScheduler.drain`) no job starts any more
and the queued ones end; :meth:`JobScheduler.stop` then stops the running
ones. A job whose record another server finished while our lease had lapsed
is stopped too (:meth:`JobScheduler.taken`), and ends as that record says.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deepaas.engine import process, protocol
from deepaas.engine.devices import Device
from deepaas.exceptions import ShuttingDown
from deepaas.log import with_detail
from deepaas.tasks import TaskSet
from deepaas.training import store as st
from deepaas.training.job import Job, job_spec, remove_job_dirs
from deepaas.training.keeper import RecordKeeper

LOG = logging.getLogger(__name__)


class JobScheduler:
    """Queues, starts, watches, cancels and finishes the trainings of a
    server; their records change here, in memory, and ``keeper`` writes them."""

    def __init__(
        self,
        store: st.TrainingStore,
        keeper: RecordKeeper,
        tasks: TaskSet,
        devices: Sequence[Device],
        *,
        max_trainings: int,
        cancel_grace: float,
        env: Mapping[str, str],
        extra_path: tuple[str, ...],
        warm: bool,
        on_done: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.keeper = keeper
        self.tasks = tasks
        self.gpus = [d for d in devices if d.kind == "cuda"]
        self.free = list(self.gpus)
        self.max_trainings = max_trainings
        self.cancel_grace = cancel_grace
        self.env = env
        self.extra_path = extra_path
        self.warm = warm
        self.on_done = on_done
        self.queue: collections.deque[Job] = collections.deque()
        self.running: dict[str, Job] = {}
        self.stopping = False

    # -- queries ------------------------------------------------------------

    def active(self, uuid: str) -> Job | None:
        job = self.running.get(uuid)
        if job is not None:
            return job
        return next((j for j in self.queue if j.uuid == uuid), None)

    def progress(self) -> list[tuple[str, str, str, float]]:
        """(model, uuid, key, value) of the numeric progress of running jobs."""
        found = []
        for job in self.running.values():
            for key, value in job.record.progress.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    found.append((job.record.model, job.uuid, key, float(value)))
        return found

    # -- in and out -----------------------------------------------------------

    def enqueue(self, job: Job) -> None:
        """Queue a recorded job; it starts at once when it can. One that
        arrives once the server stops is recorded an error and refused."""
        if self.stopping:
            self.finish_unstarted(job, st.ERROR, st.STOPPED_WHILE_QUEUED)
            raise ShuttingDown()
        self.queue.append(job)
        LOG.info(
            "training %s of model %s queued (%d GPU(s))",
            job.uuid,
            job.record.model,
            job.record.gpus,
        )
        self._schedule()

    def cancel(self, job: Job) -> None:
        """A queued job is cancelled at once; a running one gets SIGTERM, and
        SIGKILL after ``cancel_grace`` (``job.done`` is set when it ended)."""
        if job in self.queue:
            self.queue.remove(job)
            self.finish_unstarted(job, st.CANCELLED, None)
            self._schedule()
            return
        if job.cancelling:
            return
        job.cancelling = True
        LOG.info("training %s: cancelling (SIGTERM)", job.uuid)
        if job.child is not None:
            self._terminate(job.child, self.cancel_grace)
        # else: still starting; _run terminates it once it exists

    def taken(self, job: Job, stored: st.Training) -> None:
        """Another server finished ``job``'s record while our lease had
        lapsed: the record stays as stored, the job stops (a queued one at
        once; a running one gets SIGTERM, SIGKILL after ``cancel_grace``)."""
        if job.taken is not None or job.done.is_set():
            return
        job.taken = stored
        LOG.warning(
            "training %s was marked %s by another server while our lease had "
            "lapsed: stopping it",
            job.uuid,
            stored.status,
        )
        was = job.record.status
        job.record.adopt(stored)  # shown so from now on
        self.keeper.changed(job.record, was=was)
        if job in self.queue:
            self.queue.remove(job)
            remove_job_dirs(self.store, self.tasks, [job.uuid])
            job.done.set()
            self._schedule()
        elif job.child is not None and not (job.cancelling or job.stopping):
            self._terminate(job.child, self.cancel_grace)
        # else: being stopped already, or still starting (_run stops it)

    def drain(self) -> list[Job]:
        """The server drains: no training starts any more (queued ones
        become errors, new ones are refused); the running ones go on and
        are returned."""
        self.stopping = True
        while self.queue:
            self.finish_unstarted(
                self.queue.popleft(), st.ERROR, st.STOPPED_WHILE_QUEUED
            )
        return list(self.running.values())

    async def stop(self, grace: float, wait: float) -> None:
        """Server stop: queued jobs become errors; running ones get SIGTERM,
        SIGKILL after ``min(cancel_grace, grace)`` seconds, and become errors.
        Those not reaped within ``wait`` seconds are given up (killed)."""
        jobs = self.drain()
        kill_after = min(self.cancel_grace, grace)
        for job in jobs:
            job.stopping = True
            job.kill_after = kill_after
            if job.child is not None:
                self._terminate(job.child, kill_after)
        await all_set([job.done for job in jobs], wait)
        for job in jobs:
            self._finish(job)  # those not reaped in time: killed, recorded

    def _terminate(self, child: process.Child, grace: float) -> None:
        """SIGTERM the child's group, SIGKILL after ``grace`` (in the
        background; should that fail, SIGKILL at once)."""
        self.tasks.spawn(
            child.terminate(grace),
            f"terminate {child.label}",
            on_error=lambda exc: child.kill(),
        )

    # -- starting -------------------------------------------------------------

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
        record.start_date, record.start_time = st.stamp()
        record.devices = [d.label for d in job.leased] or ["cpu"]
        job.started = time.monotonic()
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
        if job.stopping or job.cancelling or job.taken is not None:  # meanwhile
            grace = job.kill_after if job.stopping else self.cancel_grace
            self._terminate(child, grace)
        elif not child.channel.write(frame):
            job.failure = "the training process closed its connection at once"
        await child.ended()
        self._finish(job)

    def _on_message(self, job: Job, message: Any) -> None:
        if job.on_message(message):
            self.keeper.changed(job.record)  # written with the next heartbeat
            self.keeper.reports.add(job.uuid, job.tracker)  # (its history, too)

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
        remove_job_dirs(self.store, self.tasks, [job.uuid])
        summary = f"training {job.uuid} of model {record.model}: {record.status}"
        if record.status == st.ERROR:  # why, and where it was raised
            detail = job.failure_detail if record.message == job.failure else ""
            LOG.warning("%s", with_detail(f"{summary}: {record.message}", detail))
        else:
            LOG.info("%s", summary)
        job.done.set()
        self._schedule()
        if record.status == st.DONE and job.taken is None and self.on_done:
            try:
                self.on_done(record.model, job.uuid)
            except Exception:
                LOG.exception("training %s: announcing its end failed", job.uuid)

    def finish_unstarted(self, job: Job, status: str, message: str | None) -> None:
        """A job that never ran ends with ``status`` (and ``message``)."""
        record = job.record
        was = record.status
        record.status = status
        record.message = message
        record.finish_date, record.finish_time = st.stamp()
        self.keeper.changed(record, was=was)
        remove_job_dirs(self.store, self.tasks, [job.uuid])
        job.done.set()


async def all_set(events: list[asyncio.Event], timeout: float) -> None:
    """Wait until every event is set, at most ``timeout`` seconds."""
    if not events:
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, timeout))
    finally:
        for waiter in waiters:
            waiter.cancel()
