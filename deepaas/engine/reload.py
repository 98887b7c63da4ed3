"""Reloading a model's workers after its files changed.

Two things change a model's files (:data:`TRAINED`, :data:`EDITED`):

- a training ended ``done``. DEEPaaS 2.x ran ``train()`` in the predict
  worker, so predictions used what a training changed. Here a training runs
  in its own process, so when one ends the server asks the model's
  :class:`Reloader` to replace its workers: fresh processes import the
  plugin and call ``warm()`` again, which loads what the training saved;
- ``deepaas-run --reload`` saw the plugin's source change
  (:mod:`deepaas.devloop`): fresh processes import the new version.

- **One at a time, warm before retire**: the first worker that runs older
  files is recycled (:meth:`~deepaas.engine.pool.WorkerPool.recycle` with
  the reason ``reload``): it keeps serving as usual while its replacement
  starts and warms, and retires (finishing what it holds) once the
  replacement is ready; then the next. No request fails and capacity never
  drops.
- **Newest files win**: each reload bumps the pool's ``generation``; a worker
  runs older files when it was started before the latest bump. A reload
  asked while one rolls restarts the roll (never two at once): every worker
  started before the newest bump is replaced, those replaced by the previous
  roll included; a replacement already warming is waited for first.
- **Bad new files**: when a replacement fails to start (its ``warm()``
  raises), its old worker keeps its slot and serves on, the roll stops, and
  the error is logged (saying what reloads again: the next training, or
  the next save of the plugin) and kept in the status
  (:class:`ReloadStatus`) until the next reload.
- Workers that wait to be restarted after failures are started at once
  (a model that could not start without trained files starts now), and
  their earlier failures are forgotten: calls wait for them as at start-up
  (:attr:`~deepaas.engine.pool.WorkerPool.start_error` counts only
  failures with the newest files). The reload is done once they are
  ready; one that fails to start fails the reload (logged with its
  reason), as a replacement does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from deepaas.engine.pool import WorkerPool
from deepaas.engine.replacement import RELOAD
from deepaas.engine.worker_handle import Worker, WorkerState

LOG = logging.getLogger(__name__)

ROLLING = "rolling"
DONE = "done"
FAILED = "failed"

# Why the files changed: what the workers that keep serving after a failed
# reload run, and what reloads again.
TRAINED = "trained"  # a training ended done
EDITED = "edited"  # --reload: the plugin's source was saved
_AFTER_FAILURE = {
    TRAINED: (
        "the other workers keep the files they loaded (the next training that "
        "ends reloads again)"
    ),
    EDITED: (
        "the other workers keep the version they loaded (fix the file to reload again)"
    ),
}


@dataclasses.dataclass(frozen=True)
class ReloadStatus:
    """The latest reload of a model's workers, at the time of the snapshot."""

    cause: str  # what asked for it, e.g. "training 3f1c... ended"
    state: str  # rolling | done | failed
    started: float  # time.time() when it was asked for
    replaced: int  # workers replaced so far by this roll
    error: str | None  # why it failed


class Reloader:
    """Replaces the workers of one pool that run older files, one at a time."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.model = pool.model
        self.status: ReloadStatus | None = None
        self.kind = TRAINED  # of the latest request
        self._task: asyncio.Task[None] | None = None

    @property
    def rolling(self) -> bool:
        return self._task is not None and not self._task.done()

    def request(self, cause: str, kind: str = TRAINED) -> None:
        """The model's files changed (``cause`` says how, ``kind`` is
        :data:`TRAINED` or :data:`EDITED`): replace every worker, restarting
        the roll in progress if there is one."""
        pool = self.pool
        if pool.stopping:
            return
        pool.generation += 1
        self.kind = kind
        restarted = self.rolling
        self.status = ReloadStatus(cause, ROLLING, time.time(), 0, None)
        LOG.info(
            "model %s: %s reloading its %d worker(s) one at a time (%s)",
            self.model,
            "restarted" if restarted else "started",
            len(pool.slots),
            cause,
        )
        pool.respawn_now()
        if not restarted:
            self._task = pool.tasks.spawn(
                self._roll(), f"reload {self.model}", on_error=self._crashed
            )
        # else: the roll in progress sees the new generation at its next step

    def _crashed(self, exc: BaseException) -> None:
        self._end(FAILED, f"the reload failed: {exc}")

    def _end(self, state: str, error: str | None = None) -> None:
        if self.status is not None:
            self.status = dataclasses.replace(self.status, state=state, error=error)

    def _replaced(self) -> None:
        if self.status is not None:
            self.status = dataclasses.replace(
                self.status, replaced=self.status.replaced + 1
            )

    async def _roll(self) -> None:
        pool = self.pool
        while not pool.stopping:
            target = pool.generation
            stale = next((w for w in pool.slots if w.generation < target), None)
            if stale is None:
                # Every slot has the newest files, but one that was not
                # running (it was restarting after failures) only starts
                # now: the reload is done once it is ready.
                starting = next((w for w in pool.slots if not w.ready_once), None)
                if starting is None:
                    self._end(DONE)
                    LOG.info("model %s: every worker reloaded", self.model)
                    return
                if not await self._started(starting):
                    if pool.stopping:
                        return
                    if pool.generation > starting.generation:
                        continue  # newer files came meanwhile: try those
                    self._fail(None, starting)
                    return
                continue
            if stale.state is not WorkerState.READY or stale.retiring:
                # Starting (a replacement warming, a respawn), or waiting to
                # be respawned: it is replaced, or starts anew, meanwhile.
                await pool.changed()
                continue
            pool.recycle(stale, RELOAD)
            replacement = pool.slots[stale.index]
            if replacement is stale:  # not replaceable now (being killed...)
                await pool.changed()
                continue
            while replacement.state is WorkerState.STARTING and not pool.stopping:
                await pool.changed()
            if replacement.ready_once:
                self._replaced()
                continue
            if pool.stopping:
                return
            if pool.generation > replacement.generation:
                continue  # newer files came meanwhile: try those
            self._fail(stale, replacement)
            return

    async def _started(self, worker: Worker) -> bool:
        """Wait until ``worker`` (in its slot, not ready yet) is ready
        (True), or failed to start (False), or the pool stops (False)."""
        pool = self.pool
        while (
            pool.slots[worker.index] is worker
            and worker.state is WorkerState.STARTING
            and not pool.stopping
        ):
            await pool.changed()
        return worker.ready_once

    def _fail(self, old: Worker | None, new: Worker) -> None:
        """``new`` could not start: ``old``, the worker it was to replace,
        keeps serving if it can; None when there was none (``new`` was
        restarting after failures)."""
        error = new.start_error or "the new worker did not start"
        self._end(FAILED, error)
        if old is None:
            what = (
                f"worker {new.index} is being restarted (no worker of the "
                "previous version was left to serve)"
            )
        elif self.pool.slots[old.index] is old:
            what = f"worker {old.index} (pid {old.pid}) keeps serving"
        else:
            what = f"worker {old.index} is being restarted"
        LOG.error(
            "model %s: reload failed, a new worker could not start: %s; %s, and %s",
            self.model,
            error,
            what,
            _AFTER_FAILURE[self.kind],
        )
