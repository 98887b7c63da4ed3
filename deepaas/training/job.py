"""One training job: its record, its process, how it ended, its files.

The scheduler (:mod:`deepaas.training.scheduler`) decides when a job runs
and holds its devices; this module knows what one job is: the arguments as
clients see them (:func:`shown_args`), the child process that runs it
(:func:`job_spec`, :meth:`Job.on_message`), the status it ends with
(:meth:`Job.end`), and the files it has in the state directory (written
and removed off the event loop: :func:`remove_job_dirs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from typing import Any

from deepaas.engine import process, protocol
from deepaas.engine.devices import Device
from deepaas.model.v2.wrapper import UploadedFile
from deepaas.tasks import TaskSet
from deepaas.training import history
from deepaas.training import store as st

LOG = logging.getLogger(__name__)

MIN_FREE_BYTES = 1 << 20  # below this, the state directory is full: 507


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
    # "plugin" (given to deepaas-run) or "entry point", as load errors say
    # it; "": the runner tells by the target (a file is a plugin).
    origin: str = ""
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    child: process.Child | None = None
    leased: tuple[Device, ...] = ()
    cancelling: bool = False
    stopping: bool = False
    kill_after: float = 0.0  # the SIGKILL delay stop() gave it
    # The record as another server finished it (our lease had lapsed): the
    # job is stopped and ends so, whatever its process did.
    taken: st.Training | None = None
    output: str | None = None  # JSON text of train()'s return value
    failure: str | None = None
    failure_detail: str = ""  # its traceback, for the server's log
    started: float = 0.0  # time.monotonic() when it started running
    tracker: history.Tracker = dataclasses.field(default_factory=history.Tracker)

    @property
    def uuid(self) -> str:
        return self.record.uuid

    def on_message(self, message: Any) -> bool:
        """Take a message from the job's process; True when its record
        changed (progress)."""
        kind = type(message)
        if kind is protocol.Progress:
            values = message.values
            progress = self.record.progress
            progress.update({key: history.shown(v) for key, v in values.items()})
            self.tracker.add(time.monotonic() - self.started, values, progress)
            self.record.eta_seconds = self.tracker.eta_seconds
            return True
        if kind is protocol.TrainDone:
            self.output = message.output
        elif kind is protocol.StartFailed:
            self.failure = message.message
            self.failure_detail = message.traceback
        else:
            LOG.error("training %s sent %r: ignored", self.uuid, kind.__name__)
        return False

    def end(self) -> str:
        """Set the record's final status (and message, output, finish date)
        from how the job ended; returns the status it had."""
        record = self.record
        was = record.status
        if self.taken is not None:
            record.adopt(self.taken)
        elif self.output is not None:
            record.status = st.DONE
            record.output = json.loads(self.output)
        elif self.cancelling:
            record.status = st.CANCELLED
        elif self.stopping:
            record.status = st.ERROR
            record.message = st.STOPPED_WHILE_RUNNING
        elif self.failure is not None:
            record.status = st.ERROR
            record.message = self.failure
        else:
            how = self.child.describe_exit() if self.child is not None else "ended"
            record.status = st.ERROR
            record.message = f"the training process {how} before it finished"
        record.finish_date, record.finish_time = st.stamp()
        record.eta_seconds = None
        return was


def job_spec(
    job: Job,
    base_env: Mapping[str, str],
    extra_path: tuple[str, ...],
    job_dir: str,
    warm: bool,
) -> process.ChildSpec:
    """The job's process: the runner, seeing only its leased devices, its
    output appended to its log, its job directory as working directory."""
    env = process.child_env(
        base_env, job.leased, {"DEEPAAS_TRAINING": job.uuid}, extra_path
    )
    return process.ChildSpec(
        module="deepaas.training.runner",
        config={
            "uuid": job.uuid,
            "model": job.record.model,
            "target": job.target,
            "origin": job.origin,
            "devices": env["DEEPAAS_DEVICES"].split(","),
            "job_dir": job_dir,
            "log_path": job.record.log_path,
            "warm": warm,
        },
        env=env,
        label=f"training {job.uuid}",
        output=job.record.log_path,
        cwd=job_dir,
    )


# -- files (called in the executor) ---------------------------------------------


def make_job_dir(path: str) -> None:
    """The job's directory, refused (ENOSPC) when the disk is all but full:
    a training there could not write its log, nor its record its end."""
    parent = os.path.dirname(path)
    stat = os.statvfs(parent)
    if stat.f_bavail * stat.f_frsize < MIN_FREE_BYTES:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), parent)
    os.makedirs(path, mode=0o700, exist_ok=True)


def create_log(path: str) -> None:
    with open(path, "ab"):
        pass


def remove_trees(paths: list[str]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def list_dir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


# -- removal off the loop ------------------------------------------------------


def remove_job_dirs(store: st.TrainingStore, tasks: TaskSet, uuids: list[str]) -> None:
    """Remove the job directories of ``uuids`` off the loop (a big upload
    takes a while), in a task of ``tasks``."""
    if not uuids:
        return
    paths = [store.job_dir(uuid) for uuid in uuids]
    loop = asyncio.get_running_loop()
    try:
        future = loop.run_in_executor(None, remove_trees, paths)
    except RuntimeError:  # the executor is shut down: the loop is closing
        return  # (the next server removes them: they are finished)
    with contextlib.suppress(RuntimeError):  # stopped: it runs on, unwatched
        tasks.spawn(_wait(future), f"remove {len(paths)} job dir(s)")


async def _wait(future: asyncio.Future[None]) -> None:
    await future
