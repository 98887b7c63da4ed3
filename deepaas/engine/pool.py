"""The API process's handle on one model's worker processes.

Each worker is a fresh interpreter (``python -m deepaas.engine.worker``)
with one stream socket to us, read by the event loop: no thread per request.
Workers pull work: whenever one has room, it gets the next batch from the
model's :class:`~deepaas.engine.batching.CallQueue`. Each worker runs on one
device (round robin), whose environment it gets before Python starts. A
worker that dies fails its calls in flight at once, saying how it died, and
is started again with a capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from deepaas.engine import protocol
from deepaas.engine.batching import Call, CallQueue
from deepaas.engine.devices import CPU, Device
from deepaas.engine.handle import (
    OutputForwarder,
    Worker,
    WorkerState,
    describe_exit,
    killpg,
    log_output,
)
from deepaas.exceptions import DeepaasError, ModelUnavailable, WorkerDied

LOG = logging.getLogger(__name__)

RESPAWN_BACKOFF_S = 0.25
RESPAWN_BACKOFF_MAX_S = 30.0
STOP_GRACE_S = 5.0


class PoolEvents:
    """What a pool reports as it works (the metrics listen); no-ops here."""

    def dispatched(self, model: str, calls: list[Call], now: float) -> None:
        """A batch left the queue for a worker."""

    def computed(self, model: str, size: int, seconds: float, times: int = 1) -> None:
        """A worker called the model ``times`` times, each with ``size``
        requests (a batch, or 1) and taking ``seconds``."""

    def restarted(self, model: str, device: str) -> None:
        """A worker of ``model`` on ``device`` died and is being replaced."""


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """How to start the workers of one model."""

    model: str  # the model name
    target: str  # "module" or "module:Attribute", as the entry point says
    size: int  # worker processes
    tmp_dir: str  # where uploads and large results live
    warm: bool = True
    env: Mapping[str, str] | None = None  # None: this process's environment
    output: Callable[[str, str], None] = log_output  # (worker, line) of output
    extra_path: tuple[str, ...] = ()  # prepended to the workers' PYTHONPATH
    devices: tuple[Device, ...] = (CPU,)  # worker i runs on devices[i % len]
    events: PoolEvents = dataclasses.field(default_factory=PoolEvents)


class WorkerPool:
    """Starts, feeds, watches and stops the workers of one model."""

    def __init__(self, config: PoolConfig, queue: CallQueue) -> None:
        self.config = config
        self.model = config.model
        self.queue = queue
        self.events = config.events
        self.env = dict(os.environ if config.env is None else config.env)
        devices = config.devices or (CPU,)
        self.workers = [
            Worker(self, i, devices[i % len(devices)]) for i in range(config.size)
        ]
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()
        self._pump_scheduled = False
        self._pump_timer: asyncio.TimerHandle | None = None

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        """Start every worker; returns at once (they warm in the background)."""
        self._loop = asyncio.get_running_loop()
        for worker in self.workers:
            await self._spawn(worker)

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until at least one worker is ready; False on timeout."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    @property
    def ready_workers(self) -> int:
        return sum(w.state is WorkerState.READY for w in self.workers)

    @property
    def start_error(self) -> str | None:
        """Why the model cannot run, when no worker is ready and one failed."""
        if self.ready_workers:
            return None
        errors = [w.start_error for w in self.workers if w.start_error]
        return errors[0] if errors else None

    def _worker_env(self, worker: Worker) -> dict[str, str]:
        env = dict(self.env)
        env.update(worker.device.worker_env())
        env["PYTHONUNBUFFERED"] = "1"
        env["DEEPAAS_WORKER"] = worker.label
        if self.config.extra_path:
            old = env.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join(
                [*self.config.extra_path, *([old] if old else [])]
            )
        return env

    async def _spawn(self, worker: Worker) -> None:
        assert self._loop is not None
        if self.stopping:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for sock in (ours, theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        config = {
            "model": self.model,
            "target": self.config.target,
            "fd": theirs.fileno(),
            "warm": self.config.warm,
            "tmp_dir": self.config.tmp_dir,
            "parent_pid": os.getpid(),
        }
        worker.state = WorkerState.STARTING
        worker._decoder = protocol.FrameDecoder()
        worker._reaping = False
        try:
            worker.process = subprocess.Popen(
                [sys.executable, "-m", "deepaas.engine.worker", json.dumps(config)],
                pass_fds=(theirs.fileno(),),
                env=self._worker_env(worker),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we kill it whole
            )
        except OSError as exc:
            ours.close()
            theirs.close()
            worker.start_error = f"cannot start a worker process: {exc}"
            LOG.error("model %s: %s", self.model, worker.start_error)
            self._schedule_respawn(worker)
            return
        finally:
            theirs.close()
        LOG.debug("started worker %s (pid %s)", worker.label, worker.pid)
        await self._loop.create_unix_connection(lambda: worker, sock=ours)
        assert worker.process.stdout is not None
        await self._loop.connect_read_pipe(
            lambda: OutputForwarder(worker.label, self.config.output),
            worker.process.stdout,
        )
        worker.watch_exit(self._loop)

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Stop every worker: ask nicely, then SIGTERM, then SIGKILL."""
        self.stopping = True
        if self._pump_timer is not None:
            self._pump_timer.cancel()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for worker in self.workers:
            worker.state = WorkerState.STOPPING
            if worker.transport is not None:
                worker.transport.close()  # the worker exits on end-of-file
        deadline = time.monotonic() + grace
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            alive = [w for w in self.workers if w.process and w.process.poll() is None]
            if not alive:
                break
            for worker in alive:
                if sig is not None:
                    killpg(worker, sig)
            while time.monotonic() < deadline and any(
                w.process.poll() is None for w in alive if w.process
            ):
                await asyncio.sleep(0.02)
            deadline = time.monotonic() + 2.0
        for worker in self.workers:
            self._finish(worker, ModelUnavailable("the server is shutting down"))

    def kill(self, worker: Worker) -> None:
        """Kill a worker now (its group too); it is reaped and respawned."""
        if worker.state is WorkerState.READY:
            worker.state = WorkerState.STOPPING  # takes no new work meanwhile
        killpg(worker, signal.SIGKILL)

    # -- dispatch -----------------------------------------------------------

    def schedule_pump(self) -> None:
        """Pump once at the end of this loop iteration.

        Every call queued during one iteration of the event loop then goes
        to a worker in a single write: one system call for many requests.
        """
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self.pump)

    def pump(self) -> None:
        """Hand batches to workers with room, least loaded first."""
        self._pump_scheduled = False
        queue = self.queue
        assert self._loop is not None
        now = time.monotonic()
        ready_at = queue.ready_at(now)
        if ready_at is None:
            return
        ready = [w for w in self.workers if w.state is WorkerState.READY]
        if not ready:
            return
        if ready_at > now:  # waiting for companions: come back when due
            self._pump_later(ready_at)
            return
        batched = queue.policy.batched
        method = "predict_batch" if batched else "predict"
        frames: dict[Worker, list[bytes]] = {}
        while True:
            # Room is counted in batches for a batching model, else in calls.
            free = {
                w: w.capacity() - (w.batches if batched else len(w.inflight))
                for w in ready
            }
            takers = [w for w in ready if free[w] > 0]
            if not takers:
                break
            best = min(takers, key=lambda w: w.batches if batched else len(w.inflight))
            ready_at = queue.ready_at(now)
            if ready_at is None:
                break
            if ready_at > now:
                self._pump_later(ready_at)
                break
            if batched:
                batch = queue.take()
            else:
                # Several calls in one message to a fast worker, shared fairly.
                share = -(-len(queue) // len(takers))
                batch = queue.take(min(free[best], share))
            if not batch:
                break
            items = [(call.id, call.payload) for call in batch]
            try:
                frame = protocol.pack((protocol.CALL, method, items))
            except Exception as exc:
                error = DeepaasError(
                    500, f"the arguments could not be sent to the worker: {exc}"
                )
                for call in batch:
                    _fail(call, error)
                continue
            for call in batch:
                best.inflight[call.id] = call
            best.batches += 1
            frames.setdefault(best, []).append(frame)
            self.events.dispatched(self.model, batch, now)
        for worker, chunks in frames.items():
            assert worker.transport is not None
            worker.transport.write(b"".join(chunks))

    def _pump_later(self, when: float) -> None:
        assert self._loop is not None
        if self._pump_timer is not None:
            self._pump_timer.cancel()
        delay = max(0.0, when - time.monotonic())
        self._pump_timer = self._loop.call_later(delay, self.schedule_pump)

    def holds(self, call: Call) -> Worker | None:
        """The worker running ``call``, if one is."""
        for worker in self.workers:
            if call.id in worker.inflight:
                return worker
        return None

    # -- events from workers -----------------------------------------------

    def on_message(self, worker: Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == protocol.RESULT:
            _, results, seconds = message
            worker.batches -= 1
            # The worker's pace: per batch when batching, else per call.
            if self.queue.policy.batched:
                per = seconds
                self.events.computed(self.model, len(results), seconds)
            else:
                per = seconds / len(results)
                self.events.computed(self.model, 1, per, len(results))
            ewma = worker.compute_ewma
            worker.compute_ewma = per if ewma is None else 0.8 * ewma + 0.2 * per
            for call_id, ok, value in results:
                call = worker.inflight.pop(call_id, None)
                if call is None or call.future.done():
                    _discard(value)  # nobody waits for it (the client went away)
                    continue
                call.settle()
                if ok:
                    call.future.set_result(value)
                else:
                    call.future.set_exception(DeepaasError(value.status, value.message))
            worker.failures_in_a_row = 0
            self.schedule_pump()
        elif kind == protocol.READY:
            worker.state = WorkerState.READY
            worker.start_error = None
            LOG.info(
                "model %s: worker %s ready (pid %s)",
                self.model,
                worker.index,
                worker.pid,
            )
            self._ready.set()
            self.schedule_pump()
        elif kind == protocol.FAILED:
            _, stage, text = message
            worker.start_error = text
            LOG.error("model %s: worker failed at %s: %s", self.model, stage, text)

    def on_disconnect(self, worker: Worker) -> None:
        """The socket closed or the process exited: reap it once."""
        if worker._reaping or worker.process is None:
            return
        worker._reaping = True
        assert self._loop is not None
        self._loop.create_task(self._reap(worker))

    async def _reap(self, worker: Worker) -> None:
        assert self._loop is not None and worker.process is not None
        process = worker.process
        deadline = time.monotonic() + 2.0
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if process.poll() is None:  # it closed its socket but lingers: end it
            killpg(worker, signal.SIGKILL)
            while process.poll() is None:
                await asyncio.sleep(0.01)
        worker.close_watch(self._loop)
        if worker.transport is not None:
            worker.transport.abort()
        killpg(worker, signal.SIGKILL)  # anything it left in its group
        how = describe_exit(process.returncode)
        if self.stopping:
            worker.state = WorkerState.DEAD
            return
        was_starting = worker.state is WorkerState.STARTING
        worker.state = WorkerState.DEAD
        if was_starting and worker.start_error is None:
            worker.start_error = (
                f"the worker of model {self.model!r} {how} while starting"
            )
        LOG.warning(
            "model %s: worker %s (pid %s) %s",
            self.model,
            worker.index,
            process.pid,
            how,
        )
        self._finish(
            worker,
            WorkerDied(
                f"the worker process of model {self.model!r} {how} while handling "
                "this request; it is being restarted"
            ),
        )
        if not self.ready_workers and self.start_error:
            self.fail_queued(
                ModelUnavailable(
                    f"model {self.model!r} cannot start: {self.start_error}"
                )
            )
        worker.restarts += 1
        worker.failures_in_a_row += 1
        self.events.restarted(self.model, worker.device.label)
        self._schedule_respawn(worker)

    def _finish(self, worker: Worker, error: DeepaasError) -> None:
        calls, worker.inflight = worker.inflight, {}
        worker.batches = 0
        for call in calls.values():
            _fail(call, error)

    def fail_queued(self, error: DeepaasError) -> None:
        for call in self.queue.drain():
            _fail(call, error)

    def _schedule_respawn(self, worker: Worker) -> None:
        assert self._loop is not None
        n = worker.failures_in_a_row
        delay = (
            0.0
            if n <= 1
            else min(RESPAWN_BACKOFF_MAX_S, RESPAWN_BACKOFF_S * 2 ** (n - 2))
        )
        if delay:
            LOG.info(
                "model %s: restarting worker %s in %.2fs",
                self.model,
                worker.index,
                delay,
            )

        def respawn() -> None:
            self._timers.discard(timer)
            assert self._loop is not None
            self._loop.create_task(self._spawn(worker))

        timer = self._loop.call_later(delay, respawn)
        self._timers.add(timer)


def _discard(value: Any) -> None:
    """Remove the temporary file of a result no one will send."""
    path = getattr(value, "path", None)
    if path and getattr(value, "delete", False):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _fail(call: Call, error: BaseException) -> None:
    call.settle()
    if not call.future.done():
        call.future.set_exception(error)
