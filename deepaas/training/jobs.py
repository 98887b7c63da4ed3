"""The training job manager, in the API process (asyncio).

A submitted training is recorded ``queued``; jobs start in submission order
(FIFO: a job waiting for GPUs holds back the jobs behind it, so a large job
is never starved by small ones) when fewer than ``max_trainings`` run and
enough GPUs are free. GPUs are leased from the devices ``--devices``
selected, exclusively among trainings (predict workers are not counted: a
training shares its GPUs with the predict workers placed there). A job that
asks no GPU runs on the CPU.

Each job is a fresh process (:mod:`deepaas.training.runner`) in its own
session; it sees only its leased GPUs. Cancel sends SIGTERM to its process
group and SIGKILL after ``cancel_grace`` seconds. The files a job was given
live in its job directory until it ends.

States: ``queued -> running -> done | error | cancelled`` and
``queued -> cancelled``; a server stop turns ``queued``/``running`` into
``error``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from typing import Any

from deepaas.config import ConfigError
from deepaas.engine import protocol
from deepaas.engine.devices import Device
from deepaas.engine.process import describe_exit
from deepaas.exceptions import DeepaasError
from deepaas.model.v2.wrapper import UploadedFile
from deepaas.training import store as st
from deepaas.training.runner import PROGRESS

LOG = logging.getLogger(__name__)

PROGRESS_FLUSH_S = 1.0  # progress is written to the database at most this often
STOP_GRACE_MAX_S = 5.0  # at server stop, SIGKILL after min(cancel_grace, this)
EOF_WAIT_S = 2.0


def shown_args(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments as clients see them: files reduced to their description."""

    def show(value: Any) -> Any:
        if isinstance(value, UploadedFile):
            return {
                "name": value.name,
                "content_type": value.content_type,
                "original_filename": value.original_filename,
            }
        if isinstance(value, (list, tuple)):
            return [show(v) for v in value]
        if isinstance(value, dict):
            return {str(k): show(v) for k, v in value.items()}
        return value

    shown = {key: show(value) for key, value in kwargs.items()}
    return json.loads(json.dumps(shown, default=str))


@dataclasses.dataclass(eq=False)
class Job:
    """A queued or running training."""

    record: st.Training
    target: str
    kwargs: dict[str, Any]
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    process: subprocess.Popen[bytes] | None = None
    transport: asyncio.Transport | None = None
    eof: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    leased: tuple[Device, ...] = ()
    cancelling: bool = False
    stopping: bool = False
    output: str | None = None  # JSON text of train()'s return value
    failure: str | None = None
    flush_timer: asyncio.TimerHandle | None = None
    kill_timer: asyncio.TimerHandle | None = None

    @property
    def uuid(self) -> str:
        return self.record.uuid


class _JobProtocol(asyncio.Protocol):
    def __init__(self, manager: JobManager, job: Job) -> None:
        self.manager = manager
        self.job = job
        self.decoder = protocol.FrameDecoder()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.job.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except Exception as exc:
            LOG.error("training %s sent garbage (%s)", self.job.uuid, exc)
            return
        for message in messages:
            self.manager._on_message(self.job, message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.job.transport = None
        self.job.eof.set()


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
        self.queue: collections.deque[Job] = collections.deque()
        self.running: dict[str, Job] = {}
        self.stopping = False
        self.opened = False

    # -- life cycle ---------------------------------------------------------

    def open(self) -> None:
        """Open the store; records of servers that are gone become errors."""
        try:
            self.store.open()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"state_dir: cannot keep training records in {self.store.state_dir}: "
                f"{exc}"
            ) from exc
        self.opened = True
        changed = self.store.mark_interrupted()
        if changed:
            LOG.warning(
                "%d training(s) were interrupted when a server stopped; "
                "marked as error",
                len(changed),
            )

    async def stop(self) -> None:
        """Server stop: queued jobs and running ones (killed) become errors."""
        self.stopping = True
        while self.queue:
            job = self.queue.popleft()
            self._finish_unstarted(job, st.ERROR, st.STOPPED_WHILE_QUEUED)
        jobs = list(self.running.values())
        grace = min(self.cancel_grace, STOP_GRACE_MAX_S)
        for job in jobs:
            job.stopping = True
            self._signal(job, signal.SIGTERM)
            self._kill_later(job, grace)
        if jobs:
            waiters = [asyncio.ensure_future(job.done.wait()) for job in jobs]
            _, pending = await asyncio.wait(waiters, timeout=grace + EOF_WAIT_S + 2.0)
            for waiter in pending:
                waiter.cancel()
        if self.opened:
            self.store.close()
            self.opened = False

    # -- queries ------------------------------------------------------------

    def active(self, uuid: str) -> Job | None:
        job = self.running.get(uuid)
        if job is not None:
            return job
        return next((j for j in self.queue if j.uuid == uuid), None)

    def get(self, uuid: str, model: str | None = None) -> st.Training | None:
        job = self.active(uuid)
        record = job.record if job is not None else self.store.get(uuid)
        if record is None or (model is not None and record.model != model):
            return None
        return record

    def records(self, model: str) -> list[st.Training]:
        live = {job.uuid: job.record for job in self._active_jobs()}
        return [live.get(r.uuid, r) for r in self.store.records(model)]

    def _active_jobs(self) -> list[Job]:
        return [*self.running.values(), *self.queue]

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

    def submit(
        self, model: str, uuid: str, kwargs: dict[str, Any], gpus: int | None
    ) -> st.Training:
        """Record a training and queue it (it starts at once when it can)."""
        if self.stopping:
            raise DeepaasError(503, "the server is shutting down")
        wanted = self.resolve_gpus(gpus)
        log_path = self.store.log_path(uuid)
        open(log_path, "ab").close()
        record = st.Training(
            uuid=uuid,
            model=model,
            args=shown_args(kwargs),
            status=st.QUEUED,
            date=st.now(),
            log_path=log_path,
            owner_pid=os.getpid(),
            gpus=wanted,
        )
        self.store.insert(record)
        job = Job(record, self.targets[model], kwargs)
        self.queue.append(job)
        LOG.info("training %s of model %s queued (%d GPU(s))", uuid, model, wanted)
        self._schedule()
        return record

    # -- cancel ---------------------------------------------------------------

    async def cancel(self, uuid: str, model: str | None = None) -> st.Training | None:
        """Stop a queued or running training; a finished one is left as is."""
        record = self.get(uuid, model)
        if record is None:
            return None
        job = self.active(uuid)
        if job is None:
            return record
        if job in self.queue:
            self.queue.remove(job)
            self._finish_unstarted(job, st.CANCELLED, None)
            self._schedule()
            return job.record
        if not job.cancelling:
            job.cancelling = True
            LOG.info("training %s: cancelling (SIGTERM)", uuid)
            self._signal(job, signal.SIGTERM)
            self._kill_later(job, self.cancel_grace)
        await job.done.wait()
        return job.record

    def _signal(self, job: Job, sig: int) -> None:
        if job.process is not None and job.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.process.pid, sig)

    def _kill_later(self, job: Job, delay: float) -> None:
        if job.kill_timer is not None:
            job.kill_timer.cancel()
        loop = asyncio.get_running_loop()
        job.kill_timer = loop.call_later(delay, self._signal, job, signal.SIGKILL)

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

    def _job_env(self, job: Job) -> tuple[dict[str, str], list[str]]:
        env = dict(self.env)
        if job.leased:
            if all(d.uuid for d in job.leased):
                visible = ",".join(str(d.uuid) for d in job.leased)
            else:
                visible = ",".join(
                    str(d.index if d.index is not None else d.uuid) for d in job.leased
                )
                env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            seen = [f"cuda:{i}" for i in range(len(job.leased))]
            env["CUDA_VISIBLE_DEVICES"] = visible
            env["DEEPAAS_DEVICE"] = "cuda:0"
        else:
            seen = ["cpu"]
            env["CUDA_VISIBLE_DEVICES"] = ""
            env["DEEPAAS_DEVICE"] = "cpu"
        env["DEEPAAS_DEVICES"] = ",".join(seen)
        env["DEEPAAS_TRAINING"] = job.uuid
        env["PYTHONUNBUFFERED"] = "1"
        if self.extra_path:
            old = env.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join(
                [*self.extra_path, *([old] if old else [])]
            )
        return env, seen

    def _start(self, job: Job) -> None:
        record = job.record
        record.status = st.RUNNING
        record.start_date = st.now()
        record.devices = [d.label for d in job.leased] or ["cpu"]
        try:
            frame = protocol.pack((protocol.CALL, "train", job.kwargs))
        except Exception as exc:
            job.failure = f"the arguments could not be sent to the training: {exc}"
            self._finish(job)
            return
        env, seen = self._job_env(job)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        config = {
            "uuid": job.uuid,
            "model": record.model,
            "target": job.target,
            "fd": theirs.fileno(),
            "parent_pid": os.getpid(),
            "devices": seen,
            "job_dir": self.store.job_dir(job.uuid),
            "log_path": record.log_path,
            "warm": self.warm,
        }
        command = [sys.executable, "-m", "deepaas.training.runner", json.dumps(config)]
        try:
            with open(record.log_path, "ab") as log:
                job.process = subprocess.Popen(
                    command,
                    pass_fds=(theirs.fileno(),),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.store.job_dir(job.uuid),
                    start_new_session=True,  # its own process group: killed whole
                )
        except OSError as exc:
            ours.close()
            job.failure = f"cannot start the training process: {exc}"
            self._finish(job)
            return
        finally:
            theirs.close()
        self.store.update(record, "status", "start_date", "devices")
        LOG.info(
            "training %s of model %s started on %s (pid %s)",
            job.uuid,
            record.model,
            ",".join(record.devices),
            job.process.pid,
        )
        asyncio.get_running_loop().create_task(self._run(job, ours, frame))

    async def _run(self, job: Job, sock: socket.socket, frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        assert job.process is not None
        try:
            transport, _ = await loop.create_unix_connection(
                lambda: _JobProtocol(self, job), sock=sock
            )
            transport.write(frame)
        except OSError as exc:
            LOG.error("training %s: cannot talk to its process: %s", job.uuid, exc)
            sock.close()
            job.eof.set()
        process = job.process
        while process.poll() is None:
            await asyncio.sleep(0.05)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(job.eof.wait(), EOF_WAIT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # anything it left behind
        if job.transport is not None:
            job.transport.abort()
        self._finish(job)

    def _on_message(self, job: Job, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == PROGRESS:
            job.record.progress.update(message[1])
            if job.flush_timer is None:
                loop = asyncio.get_running_loop()
                job.flush_timer = loop.call_later(
                    PROGRESS_FLUSH_S, self._flush_progress, job
                )
        elif kind == protocol.RESULT:
            job.output = message[1]
        elif kind == protocol.FAILED:
            job.failure = message[2]

    def _flush_progress(self, job: Job) -> None:
        job.flush_timer = None
        if self.opened and not job.record.finished:
            self.store.update(job.record, "progress")

    # -- endings ----------------------------------------------------------------

    def _finish(self, job: Job) -> None:
        record = job.record
        for timer in (job.flush_timer, job.kill_timer):
            if timer is not None:
                timer.cancel()
        process = job.process
        how = describe_exit(process.returncode if process else None)
        if job.output is not None:
            record.status = st.DONE
            record.output = json.loads(job.output)
        elif job.cancelling:
            record.status = st.CANCELLED
        elif job.stopping:
            record.status = st.ERROR
            record.message = st.STOPPED_WHILE_RUNNING
        elif job.failure is not None:
            record.status = st.ERROR
            record.message = job.failure
        else:
            record.status = st.ERROR
            record.message = f"the training process {how} before it finished"
        record.finish_date = st.now()
        self.running.pop(job.uuid, None)
        self.free.extend(job.leased)
        self.free.sort(key=self.gpus.index)  # lowest devices first, as listed
        job.leased = ()
        if self.opened:
            self.store.update(record)
        self.store.remove_job_dir(job.uuid)
        LOG.info("training %s of model %s: %s", job.uuid, record.model, record.status)
        job.done.set()
        self._schedule()

    def _finish_unstarted(self, job: Job, status: str, message: str | None) -> None:
        record = job.record
        record.status = status
        record.message = message
        record.finish_date = st.now()
        if self.opened:
            self.store.update(record, "status", "message", "finish_date")
        self.store.remove_job_dir(job.uuid)
        job.done.set()

    # -- metrics ----------------------------------------------------------------

    def counts(self) -> list[tuple[str, str, int]]:
        """(model, status, count) of every record, for the metrics."""
        if not self.opened:
            return []
        return list(self.store.counts())

    def progress(self) -> list[tuple[str, str, str, float]]:
        """(model, uuid, key, value) of the numeric progress of running jobs."""
        found = []
        for job in self.running.values():
            for key, value in job.record.progress.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    found.append((job.record.model, job.uuid, key, float(value)))
        return found
