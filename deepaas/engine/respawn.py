"""A model's workers that exit: why, whether they are replaced, and when.

The half of :class:`~deepaas.engine.pool.WorkerPool` that handles a
worker's end (its watch task calls :meth:`RespawningPool._on_exit`), kept
apart from the half that starts, feeds and stops workers because it holds
the decisions that are easy to get wrong: a crash fails only the call it
ran (the dispatcher's ``lost()``), a worker that fails while starting is
respawned after :func:`~deepaas.engine.replacement.respawn_delay`'s
backoff, a reload's replacement that fails to start leaves the old worker
in its slot (:meth:`RespawningPool._keep_old`), and when no worker can run
the model's current files the queued calls fail at once rather than wait.
It logs as ``deepaas.engine.pool``, the name operators already filter on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from deepaas.engine.dispatcher import Dispatcher
from deepaas.engine.outcomes import fail
from deepaas.engine.replacement import (
    CRASHED,
    START_FAILED,
    TIMED_OUT,
    respawn_delay,
)
from deepaas.engine.worker_handle import Worker, WorkerState
from deepaas.exceptions import DeepaasError, ModelUnavailable, WorkerDied
from deepaas.tasks import TaskSet

if TYPE_CHECKING:
    from deepaas.engine.pool import PoolEvents

LOG = logging.getLogger("deepaas.engine.pool")


class RespawningPool:
    """Exit handling and respawns; :class:`~deepaas.engine.pool.WorkerPool`
    provides the state and the spawning declared here."""

    model: str
    dispatcher: Dispatcher
    events: PoolEvents
    slots: list[Worker]
    retired: set[Worker]
    restarts: list[int]
    failures_in_a_row: list[int]
    stopping: bool
    generation: int
    tasks: TaskSet
    _timers: dict[Worker, asyncio.TimerHandle]

    if TYPE_CHECKING:  # provided by WorkerPool

        @property
        def ready_workers(self) -> int: ...

        @property
        def start_error(self) -> str | None: ...

        async def _spawn(self, worker: Worker) -> None: ...

        def _notify(self) -> None: ...

    def respawn_now(self) -> None:
        """Start the workers waiting for their respawn backoff now, with a
        fresh backoff (the model's files changed: they may start now)."""
        for worker, timer in list(self._timers.items()):
            timer.cancel()
            del self._timers[worker]
            self.failures_in_a_row[worker.index] = 0
            self.tasks.spawn(self._spawn(worker), f"spawn {worker.label}")

    def _on_exit(self, worker: Worker) -> None:
        child = worker.child
        assert child is not None
        worker.board.release()  # its descriptor, now that nobody shares it
        how = child.describe_exit()
        timed_out = worker.killed_for == TIMED_OUT
        self.dispatcher.lost(
            worker,
            WorkerDied(
                f"the worker process of model {self.model!r} {how} while handling "
                "this request; it is being restarted"
            ),
            fail_running=not timed_out,
        )
        was = worker.state
        worker.state = WorkerState.DEAD
        self._notify()
        if worker in self.retired:
            self.retired.discard(worker)
            if worker.retiring and was is WorkerState.RETIRING and child.returncode:
                LOG.warning(
                    "model %s: retired worker %s (pid %s) %s",
                    self.model,
                    worker.index,
                    worker.pid,
                    how,
                )
            return
        if self.stopping or self.slots[worker.index] is not worker:
            return
        if was is WorkerState.STARTING and worker.start_error is None:
            worker.start_error = (
                f"the worker of model {self.model!r} {how} while starting"
            )
        if was is WorkerState.STARTING and self._keep_old(worker):
            return
        LOG.warning(
            "model %s: worker %s (pid %s) %s", self.model, worker.index, child.pid, how
        )
        reason = (
            TIMED_OUT
            if timed_out
            else START_FAILED
            if was is WorkerState.STARTING
            else CRASHED
        )
        if not self.ready_workers and self.start_error:
            self.fail_queued(
                ModelUnavailable(
                    f"model {self.model!r} cannot start: {self.start_error}"
                )
            )
        self.restarts[worker.index] += 1
        self.failures_in_a_row[worker.index] += 1
        self.events.restarted(self.model, worker.device.label, reason)
        self._schedule_respawn(worker)

    def _keep_old(self, failed: Worker) -> bool:
        """A reload's replacement failed to start: the worker it was to
        replace, still serving, keeps its slot (True); False when that one
        cannot serve on (it died, was killed, or must be replaced anyway)."""
        old = failed.replaces
        if (
            not failed.reload
            or old is None
            or old not in self.retired
            or old.state is not WorkerState.RETIRING
            or old.killed_for
            or not self.dispatcher.takes_calls(old)
        ):
            return False
        self.retired.discard(old)
        old.retiring = None
        old.state = WorkerState.READY
        self.slots[old.index] = old
        LOG.info(
            "model %s: worker %s (pid %s) keeps serving: its replacement failed "
            "to start",
            self.model,
            old.index,
            old.pid,
        )
        return True

    def fail_queued(self, error: DeepaasError) -> None:
        for call in self.dispatcher.queue.drain():
            fail(call, error)

    def _schedule_respawn(self, worker: Worker) -> None:
        if self.stopping:
            return
        index = worker.index
        current = worker.generation == self.generation
        if not current:
            # It ran files that changed since (a reload came while it
            # started): its failure says nothing of the new ones, which
            # start at once, as after respawn_now().
            self.failures_in_a_row[index] = 0
        delay = respawn_delay(self.failures_in_a_row[index])
        if delay:
            LOG.info(
                "model %s: restarting worker %s in %.2fs", self.model, index, delay
            )
        fresh = Worker(self.model, index, worker.device)
        fresh.start_error = worker.start_error if current else None
        fresh.replaces = worker.replaces
        fresh.generation = self.generation
        self.slots[index] = fresh
        loop = asyncio.get_running_loop()

        def respawn() -> None:
            self._timers.pop(fresh, None)
            self.tasks.spawn(self._spawn(fresh), f"spawn {fresh.label}")

        self._timers[fresh] = loop.call_later(delay, respawn)
