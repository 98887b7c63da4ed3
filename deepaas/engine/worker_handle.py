"""One worker process as the API process sees it: its handle, and what it
is started with.

The :class:`~deepaas.engine.pool.WorkerPool` keeps one :class:`Worker` per
worker process, and the same object is the
:class:`~deepaas.engine.dispatcher.Dispatcher`'s *link* to that process
(``label``, ``board``, ``write``): the pool decides whether it lives, the
dispatcher what it runs. Its :class:`WorkerState` is what the runtime's
status snapshot reports. :meth:`Worker.spec` is everything the process is
started with (the configuration :mod:`deepaas.engine.worker` reads, its
device environment, its scoreboard, where its output goes), so that what
crosses into the child is in one place.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING

from deepaas.engine import process, protocol
from deepaas.engine.devices import Device

if TYPE_CHECKING:  # the pool imports this module
    from deepaas.engine.pool import PoolConfig


class WorkerState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RETIRING = "retiring"  # being replaced: finishes its calls, then exits
    STOPPING = "stopping"
    DEAD = "dead"


class Worker:
    """One worker process as the pool sees it (a dispatcher link)."""

    def __init__(self, model: str, index: int, device: Device) -> None:
        self.index = index
        self.device = device
        self.label = f"{model}/{index}"
        self.state = WorkerState.STARTING
        self.child: process.Child | None = None
        self.board = protocol.Scoreboard(bytearray(protocol.SCOREBOARD_SIZE))
        self.start_error: str | None = None
        self.retiring: str | None = None  # why it is being replaced
        self.replaces: Worker | None = None  # the worker it will take over from
        self.killed_for: str | None = None  # why we killed it
        self.max_requests = 0
        self.generation = 0  # the pool's generation (model files) it started with
        self.reload = False  # started to reload the model's files
        self.ready_once = False  # it said it was ready
        self.start_timer: asyncio.TimerHandle | None = None  # its start deadline
        # Its process's result files: their prefix, and the highest number
        # received (see deepaas.engine.leftovers).
        self.result_prefix = "result-"
        self.results_received = 0

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    def write(self, data: bytes | list[protocol.Part]) -> bool:
        return self.child is not None and self.child.channel.write(data)

    def spec(
        self, config: PoolConfig, env: Mapping[str, str], board: protocol.Scoreboard
    ) -> process.ChildSpec:
        """How to start its process: ``env`` is the server's environment,
        ``board`` a fresh scoreboard whose descriptor the child inherits."""
        return process.ChildSpec(
            module="deepaas.engine.worker",
            config={
                "model": config.model,
                "target": config.target,
                "origin": config.origin,
                "warm": config.warm,
                "tmp_dir": config.tmp_dir,
                "result_prefix": self.result_prefix,
                "board_fd": board.fd,
                "max_memory": config.max_memory,
                # A start that failed before with these files: its traceback
                # was shown then (the one-line reason is logged each time).
                "traceback": self.start_error is None,
            },
            env=process.child_env(
                env,
                [self.device],
                {"DEEPAAS_WORKER": self.label},
                config.extra_path,
            ),
            label=f"worker {self.label}",
            output=lambda line: config.output(self.label, line),
            pass_fds=(board.fd,) if board.fd is not None else (),
        )
