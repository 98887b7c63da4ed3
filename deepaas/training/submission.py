"""Submitting a training: the half of the
:class:`~deepaas.training.jobs.JobManager` that the train route drives.

A training is submitted in two steps, because its uploads arrive between
them: :meth:`SubmissionMixin.prepare` creates its job directory (the
uploads go there), then :meth:`SubmissionMixin.submit` checks the GPUs it
asks for, creates its log file, inserts its ``queued`` record and hands it
to the :class:`~deepaas.training.scheduler.JobScheduler`; a request that
goes away during the insert leaves no record behind queued (it is closed as
an error), and one that is not submitted after all has its files removed
(:meth:`SubmissionMixin.discard`). A full disk answers 507
(:class:`~deepaas.training.keeper.DiskFull`), a server that stops 503.

It is apart from :mod:`deepaas.training.jobs` (records, cancel, the
manager's life cycle) because it is the one path that creates trainings.
It is a mixin so that ``JobManager.submit`` and the rest stay where the API
calls them; the attributes it declares are what it uses of the manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from deepaas.exceptions import DeepaasError, ShuttingDown
from deepaas.tasks import TaskSet
from deepaas.training import store as st
from deepaas.training.job import Job, create_log, make_job_dir, shown_args
from deepaas.training.keeper import RecordKeeper, StoreErrors, client_error
from deepaas.training.ownership import ServerIdentity
from deepaas.training.scheduler import JobScheduler


class SubmissionMixin:
    """Job directories, GPUs checked, records inserted and queued: how a
    :class:`~deepaas.training.jobs.JobManager` takes a training."""

    # What submitting uses of the manager (set by JobManager.__init__).
    store: st.TrainingStore
    targets: dict[str, str]
    origins: dict[str, str]
    identity: ServerIdentity
    opened: bool
    tasks: TaskSet
    keeper: RecordKeeper
    scheduler: JobScheduler
    default_gpus: int
    _remove_job_dirs: Callable[[list[str]], None]

    def new_id(self) -> str:
        return uuidlib.uuid4().hex

    def resolve_gpus(self, gpus: int | None) -> int:
        wanted = self.default_gpus if gpus is None else gpus
        have = self.scheduler.gpus
        if wanted > len(have):
            names = ", ".join(d.label for d in have) or "none"
            raise DeepaasError(
                422,
                f"this training asks for {wanted} GPU(s) but the server has "
                f"{len(have)} ({names})",
            )
        return wanted

    def _check_taking(self) -> None:
        if self.scheduler.stopping or not self.opened:
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
        self,
        model: str,
        uuid: str,
        kwargs: dict[str, Any],
        gpus: int | None,
        request_id: str | None = None,
    ) -> st.Training:
        """Record a training and queue it (it starts at once when it can);
        ``request_id``: the X-Request-ID of the request that asked for it,
        kept in the record."""
        self._check_taking()
        wanted = self.resolve_gpus(gpus)
        date, submit_time = st.stamp()
        record = st.Training(
            uuid=uuid,
            model=model,
            args=shown_args(kwargs),
            status=st.QUEUED,
            date=date,
            submit_time=submit_time,
            log_path=self.store.log_path(uuid),
            owner_pid=self.identity.pid,
            owner=self.identity.id,
            gpus=wanted,
            request_id=request_id,
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
        # (refused if the server began to stop during the insert)
        self.scheduler.enqueue(self._job(record, kwargs))
        return record

    async def _abandon(self, insert: asyncio.Future[None], record: st.Training) -> None:
        with contextlib.suppress(*StoreErrors):
            await insert
            self.keeper.created(record)
            job = self._job(record, {})
            message = "the request that submitted this training was cancelled"
            self.scheduler.finish_unstarted(job, st.ERROR, message)

    def _job(self, record: st.Training, kwargs: dict[str, Any]) -> Job:
        model = record.model
        return Job(
            record, self.targets[model], kwargs, origin=self.origins.get(model, "")
        )

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
