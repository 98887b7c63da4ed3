"""One worker process as the API process sees it.

Its socket (an asyncio protocol read by the event loop), its output (logged
line by line), how it ended, and how much work it may hold. What to do with
it (dispatch, reaping, respawning) is the pool's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any, Protocol

from deepaas.engine import protocol
from deepaas.engine.batching import Call
from deepaas.engine.devices import Device

LOG = logging.getLogger(__name__)

# A fast model gets several calls at once so it never waits for our event
# loop; a slow one gets one at a time so calls spread over the workers.
PIPELINE_BUDGET_S = 0.002
PIPELINE_MAX = 64


class Owner(Protocol):
    """What a worker reports to (the pool)."""

    model: str

    def on_message(self, worker: Worker, message: tuple[Any, ...]) -> None: ...

    def on_disconnect(self, worker: Worker) -> None: ...

    def kill(self, worker: Worker) -> None: ...


class WorkerState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    DEAD = "dead"


def describe_exit(returncode: int | None) -> str:
    """Say how a process ended, in words a user understands."""
    if returncode is None:
        return "closed its connection"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


class Worker(asyncio.Protocol):
    """One worker process: its socket, state and calls in flight."""

    def __init__(self, pool: Owner, index: int, device: Device) -> None:
        self.pool = pool
        self.index = index
        self.device = device
        self.state = WorkerState.STARTING
        self.process: subprocess.Popen[bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self.inflight: dict[int, Call] = {}
        self.batches = 0  # messages sent and not yet answered
        self.restarts = 0
        self.failures_in_a_row = 0
        self.compute_ewma: float | None = None
        self.start_error: str | None = None
        self._decoder = protocol.FrameDecoder()
        self._pidfd: int | None = None
        self._reaping = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def label(self) -> str:
        return f"{self.pool.model}/{self.index}"

    def capacity(self) -> int:
        """How many batches (or, without batching, calls) it may hold at once."""
        if self.compute_ewma is None:
            return 1
        room = int(PIPELINE_BUDGET_S / max(self.compute_ewma, 1e-7))
        return max(1, min(PIPELINE_MAX, room))

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except Exception as exc:  # a corrupt stream: treat as a dead worker
            LOG.error("worker %s sent garbage (%s); restarting it", self.label, exc)
            self.pool.kill(self)
            return
        for message in messages:
            self.pool.on_message(self, message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.on_disconnect(self)

    # -- process ------------------------------------------------------------

    def watch_exit(self, loop: asyncio.AbstractEventLoop) -> None:
        """Get called back the moment the process exits (Linux pidfd)."""
        assert self.process is not None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is None:
            return
        try:
            self._pidfd = pidfd_open(self.process.pid)
        except OSError:
            return
        loop.add_reader(self._pidfd, self.pool.on_disconnect, self)

    def close_watch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._pidfd is not None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


class OutputForwarder(asyncio.Protocol):
    """Reads a worker's stdout/stderr and hands it on line by line."""

    def __init__(self, label: str, sink: Callable[[str, str], None]) -> None:
        self.label = label
        self.sink = sink
        self.partial = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > 65536:  # a huge line with no newline: flush it
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            self.sink(self.label, line.decode(errors="replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.partial:
            self.sink(self.label, self.partial.decode(errors="replace"))
            self.partial = b""


WORKER_LOG = logging.getLogger("deepaas.worker")
# What a model prints is shown whatever --log-level says, as with DEEPaaS 2.x.
WORKER_LOG.setLevel(logging.INFO)


def log_output(label: str, line: str) -> None:
    """Default sink: the server's log (console, --log-file, /v2/debug/)."""
    WORKER_LOG.info("[%s] %s", label, line)


def killpg(worker: Worker, sig: int) -> None:
    """Signal the worker's process group (it and anything it started)."""
    if worker.process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(worker.process.pid, sig)
