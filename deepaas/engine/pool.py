"""A model's worker processes: start, ready, respawn, recycle, stop.

Each worker is a child process (:mod:`deepaas.engine.process`) running
:mod:`deepaas.engine.worker` on one device (round robin over the devices
given), known here by its handle (:mod:`deepaas.engine.worker_handle`). The
pool only keeps processes alive; which call goes where is the
:class:`~deepaas.engine.dispatcher.Dispatcher`'s business: the pool adds a
worker to it when the worker says it is ready, hands it the worker's
results, and tells it when a worker died. When a worker must be replaced,
and why, is :mod:`deepaas.engine.replacement`'s policy; the pool carries it
out:

- **Respawn**: a worker that dies is replaced after the policy's backoff
  (at once the first time).
- **Recycle** (warm before retire): a worker past its request or memory
  limit takes no new calls while another worker is ready (so the limit
  holds: it only finishes what it was handed); if it is the only one, it
  keeps serving while its replacement starts and warms. Once the
  replacement is ready it takes no new calls, finishes those it holds, and
  exits. Each replacement is counted once, with its reason, whatever
  happens to the old process then. A worker whose model raised
  ``MemoryError`` stops taking calls at once (its heap is likely exhausted:
  more calls would fail too); calls wait in the queue for its replacement.
- **Reload** (:mod:`deepaas.engine.reload` drives it, one worker at a time):
  the model's files changed (a training ended), so a healthy worker is
  recycled like above, except that it keeps taking calls as usual until its
  replacement is ready (capacity never drops). Should that replacement fail
  to start, the old worker simply keeps its slot and serves on. Each worker
  carries the pool's ``generation`` at the time it was started: those of an
  older generation still run the old files.
- **Stop**: end-of-file to every worker, then SIGTERM and SIGKILL to their
  process groups if they do not exit within the grace period.

What happens when a worker exits (respawn, backoff, a failed reload keeping
the old worker) is :mod:`deepaas.engine.respawn`, the base class.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from deepaas.engine import leftovers, process, protocol
from deepaas.engine.devices import CPU, Device
from deepaas.engine.dispatcher import Dispatcher
from deepaas.engine.replacement import (
    OUT_OF_MEMORY,
    RELOAD,
    START_TIMEOUT,
    recycle_reason,
    request_limit,
)
from deepaas.engine.respawn import RespawningPool
from deepaas.engine.worker_handle import Worker, WorkerState
from deepaas.exceptions import ShuttingDown
from deepaas.log import with_detail, worker_record
from deepaas.tasks import TaskSet
from deepaas.tracing import untag

LOG = logging.getLogger(__name__)
WORKER_LOG = logging.getLogger("deepaas.worker")
# What a model prints is shown whatever --log-level says, as with DEEPaaS 2.x.
WORKER_LOG.setLevel(logging.INFO)

STOP_GRACE_S = 5.0
KILL_AFTER_S = 1.0  # after the grace period, SIGTERM; SIGKILL this much later


def log_output(label: str, line: str) -> None:
    """Default sink of workers' output: the server's log (console,
    ``--log-file``, ``/v2/debug/``); a line written while the worker ran a
    call is logged under that call's request id (:mod:`deepaas.tracing`).
    What a plugin prints is INFO; a record it logged with no handler of its
    own keeps its level and its traceback (:class:`deepaas.log.RecordLines`)."""
    request_id, text = untag(line)
    level, text = worker_record(text)
    if request_id is None:
        WORKER_LOG.log(level, "[%s] %s", label, text)
    else:
        extra = {"request_id": request_id}
        WORKER_LOG.log(level, "[%s] %s", label, text, extra=extra)


class PoolEvents:
    """What a pool reports (the metrics listen); no-ops here."""

    def restarted(self, model: str, device: str, reason: str) -> None:
        """A worker of ``model`` on ``device`` is being replaced (see
        :data:`~deepaas.engine.replacement.REASONS`)."""


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """How to start the workers of one model."""

    model: str  # the model name
    target: str  # "module" or "module:Attribute", as the entry point says
    size: int  # worker processes
    tmp_dir: str  # where uploads and large results live
    origin: str = "entry point"  # or "plugin" (deepaas-run FILE): errors say it
    warm: bool = True
    start_timeout: float = 0.0  # import + warm() past this: killed; 0: no limit
    env: Mapping[str, str] | None = None  # None: this process's environment
    output: Callable[[str, str], None] = log_output  # (worker, line) of output
    extra_path: tuple[str, ...] = ()  # prepended to the workers' PYTHONPATH
    devices: tuple[Device, ...] = (CPU,)  # worker i runs on devices[i % len]
    max_requests: int = 0  # recycle after about this many calls; 0: never
    max_memory: int = 0  # recycle past this resident size, bytes; 0: never


class WorkerPool(RespawningPool):
    """Starts, watches, recycles and stops the workers of one model."""

    def __init__(
        self,
        config: PoolConfig,
        dispatcher: Dispatcher,
        events: PoolEvents | None = None,
    ) -> None:
        self.config = config
        self.model = config.model
        self.dispatcher = dispatcher
        self.events = events or PoolEvents()
        self.env = dict(os.environ if config.env is None else config.env)
        devices = config.devices or (CPU,)
        self.slots = [
            Worker(self.model, i, devices[i % len(devices)]) for i in range(config.size)
        ]
        self.restarts = [0] * config.size
        self.failures_in_a_row = [0] * config.size
        self.retired: set[Worker] = set()  # replaced, finishing their calls
        self.stopping = False
        # Bumped each time the model's files change (a training ended): a
        # worker started before then runs older files (Worker.generation).
        self.generation = 0
        self.tasks = TaskSet(f"model {self.model!r}")
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()  # a worker got ready or exited
        self._timers: dict[Worker, asyncio.TimerHandle] = {}  # pending respawns

    # -- state ----------------------------------------------------------------

    @property
    def workers(self) -> list[Worker]:
        """Every live worker: one per slot, and those being retired."""
        return [*self.slots, *self.retired]

    @property
    def ready_workers(self) -> int:
        return sum(
            w.state in (WorkerState.READY, WorkerState.RETIRING) for w in self.workers
        )

    @property
    def start_error(self) -> str | None:
        """Why the model cannot run, when no worker is ready and one failed
        with the model's current files. A failure with files that changed
        since (a reload followed it) says nothing of the new ones: calls then
        wait for the workers starting with them, as at start-up."""
        if self.ready_workers:
            return None
        errors = [
            w.start_error
            for w in self.slots
            if w.start_error and w.generation == self.generation
        ]
        return errors[0] if errors else None

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start every worker; returns at once (they warm in the background)."""
        for worker in self.slots:
            await self._spawn(worker)

    async def changed(self) -> None:
        """Wait until a worker got ready or exited (or the pool stops)."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until at least one worker is ready; False on timeout."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Stop every worker within about ``grace`` + 1 s.

        End-of-file first (a worker exits once its calls are done), SIGTERM
        after ``grace`` seconds, SIGKILL one second later.
        """
        self.stopping = True
        self._notify()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        children = []
        for worker in self.workers:
            worker.state = WorkerState.STOPPING
            if worker.child is not None:
                worker.child.channel.close()
                children.append(worker.child)
        if children:
            await asyncio.gather(
                *(self._stop_child(child, grace) for child in children),
                return_exceptions=True,
            )
        await self.tasks.close(timeout=process.EOF_WAIT_S + 1)
        self.dispatcher.fail_all(ShuttingDown())

    @staticmethod
    async def _stop_child(child: process.Child, grace: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(child.exited), grace)
        except asyncio.TimeoutError:
            await child.terminate(KILL_AFTER_S)

    def kill(self, worker: Worker, reason: str) -> None:
        """Kill a worker now (its group too); it is reaped and replaced."""
        self.dispatcher.retire(worker)
        worker.killed_for = reason
        if worker.child is not None:
            worker.child.kill()

    def recycle(self, worker: Worker, reason: str) -> None:
        """Replace a healthy worker: warm the new one, then retire this one."""
        if reason == OUT_OF_MEMORY:
            # No new calls, and those it skipped go elsewhere, even when it
            # was already being replaced for another reason.
            self.dispatcher.retire(worker)
        elif worker.retiring == RELOAD and reason != RELOAD:
            # Being reloaded, and now past its own limit too: that holds.
            self.dispatcher.mark_retiring(worker)
        if (
            self.stopping
            or worker.retiring
            or worker.killed_for  # being killed: its exit replaces it
            or worker.state is not WorkerState.READY
        ):
            return
        LOG.info(
            "model %s: replacing worker %s (pid %s): %s",
            self.model,
            worker.index,
            worker.pid,
            reason.replace("_", " "),
        )
        worker.retiring = reason
        worker.state = WorkerState.RETIRING
        if reason != RELOAD:  # a reloaded worker is healthy: it serves as usual
            self.dispatcher.mark_retiring(worker)  # new calls to the others first
        self.retired.add(worker)
        replacement = Worker(self.model, worker.index, worker.device)
        replacement.replaces = worker
        replacement.generation = self.generation
        replacement.reload = reason == RELOAD
        self.slots[worker.index] = replacement
        self.restarts[worker.index] += 1
        self.events.restarted(self.model, worker.device.label, reason)
        self.tasks.spawn(self._spawn(replacement), f"spawn {replacement.label}")

    # -- processes ------------------------------------------------------------

    async def _spawn(self, worker: Worker) -> None:
        if self.stopping:
            return
        if worker.generation != self.generation:
            # The failure it carries was with files that changed since.
            worker.start_error = None
        worker.generation = self.generation  # it reads the files as they are now
        board = protocol.Scoreboard.create()
        worker.result_prefix = leftovers.new_prefix()
        worker.results_received = 0
        spec = worker.spec(self.config, self.env, board)
        worker.board = board
        try:
            worker.child = await process.spawn(
                spec, lambda message: self._on_message(worker, message)
            )
        except OSError as exc:
            worker.start_error = f"cannot start a worker process: {exc}"
            LOG.error("model %s: %s", self.model, worker.start_error)
            worker.state = WorkerState.DEAD
            board.release()
            self._schedule_respawn(worker)
            self._notify()
            return
        finally:
            board.close_fd()
        worker.max_requests = request_limit(self.config.max_requests)
        if self.config.start_timeout:
            worker.start_timer = asyncio.get_running_loop().call_later(
                self.config.start_timeout, self._start_overdue, worker
            )
        LOG.debug("started worker %s (pid %s)", worker.label, worker.pid)
        self.tasks.spawn(
            self._watch(worker),
            f"watch {worker.label}",
            on_error=lambda exc: self._schedule_respawn(worker),
        )

    async def _watch(self, worker: Worker) -> None:
        assert worker.child is not None
        await worker.child.ended()
        _cancel_start_timer(worker)
        prefix, received = worker.result_prefix, worker.results_received
        try:
            self._on_exit(worker)
        finally:
            where = f"model {self.model}: worker {worker.label}"
            await leftovers.sweep(where, self.config.tmp_dir, prefix, received)

    # -- events from workers --------------------------------------------------

    def _on_message(self, worker: Worker, message: Any) -> None:
        kind = type(message)
        if kind is protocol.Results:
            worker.results_received = leftovers.last_received(
                message.items, worker.result_prefix, worker.results_received
            )
            self.dispatcher.on_results(worker, message)
            self.failures_in_a_row[worker.index] = 0
            reason = recycle_reason(
                message.retire, self.dispatcher.answered(worker), worker.max_requests
            )
            if reason:
                self.recycle(worker, reason)
        elif kind is protocol.Ready:
            self._on_ready(worker)
        elif kind is protocol.StartFailed:
            worker.start_error = message.message
            summary = f"model {self.model}: worker failed at {message.stage}: "
            LOG.error("%s", with_detail(summary + message.message, message.traceback))
        else:
            LOG.error("model %s: unexpected message %r", self.model, kind.__name__)

    def _start_overdue(self, worker: Worker) -> None:
        """Its import or warm() passed --worker-start-timeout: kill it; it
        fails to start (readiness and requests say why) and is respawned
        with the failed-start backoff."""
        worker.start_timer = None
        if worker.state is not WorkerState.STARTING or worker.child is None:
            return
        what = "import or warm()" if self.config.warm else "import"
        worker.start_error = (
            f"the worker of model {self.model!r} did not start within "
            f"{self.config.start_timeout:g} s (--worker-start-timeout): its "
            f"{what} is slow or stuck; it was killed"
        )
        worker.killed_for = START_TIMEOUT
        worker.child.kill()

    def _on_ready(self, worker: Worker) -> None:
        _cancel_start_timer(worker)
        if worker.state is not WorkerState.STARTING:
            return
        worker.state = WorkerState.READY
        worker.ready_once = True
        worker.start_error = None
        LOG.info(
            "model %s: worker %s ready (pid %s)", self.model, worker.index, worker.pid
        )
        old, worker.replaces = worker.replaces, None
        self.dispatcher.add(worker)
        if old is not None:
            self.tasks.spawn(self._retire(old), f"retire {old.label}")
        self._ready.set()
        self._notify()

    async def _retire(self, worker: Worker) -> None:
        """Its replacement is ready: no new calls; exit once it finished."""
        self.dispatcher.retire(worker)
        await self.dispatcher.drained(worker)
        if worker.child is not None:
            # End-of-file, not a close: it answers what it had already read
            # (calls taken back get empty answers), then exits 0.
            worker.child.channel.finish()


def _cancel_start_timer(worker: Worker) -> None:
    if worker.start_timer is not None:
        worker.start_timer.cancel()
        worker.start_timer = None
