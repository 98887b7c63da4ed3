"""An in-memory predict worker for dispatcher tests: no process, no sleep.

:class:`FakeWorker` is a dispatcher *link* (``label``, ``board``,
``write``). It decodes what the dispatcher writes with the real
:class:`~deepaas.engine.protocol.FrameDecoder` and lets a test play the
worker one step at a time, the way :mod:`deepaas.engine.worker` runs::

    worker.start()        # mark the next call (or batch) running; skips
                          # calls taken back, exactly like worker.py
    worker.finish()       # it is computed (the answer waits in the outbox)
    worker.send()         # Results for every finished message, and for the
                          # calls of a message answered before its next one
                          # started (not final) -> on_results
    worker.die(error)     # the process is gone -> dispatcher.lost

Results are one per :class:`~deepaas.engine.protocol.Invoke`, in order, and
leave out the calls the parent took back, as in the real worker. Answers
echo the payload unless the test gives values; a
:class:`~deepaas.engine.protocol.RemoteError` given as a value is sent as a
failure of that call.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any

from deepaas.engine import protocol
from deepaas.exceptions import DeepaasError


class RacyScoreboard(protocol.Scoreboard):
    """A real scoreboard on which the parent can act *while* the worker marks
    a call running, as another process can.

    With :meth:`meanwhile` set, the worker's :meth:`start` runs it after it
    wrote "running" and before its second look at "taken back"; inside it,
    the parent's first read of "running" is one update late (it sees the
    value from before the mark), which the protocol allows.
    """

    __slots__ = ("_before", "_meanwhile", "_stale")

    def __init__(self) -> None:
        super().__init__(bytearray(protocol.SCOREBOARD_SIZE))
        self._meanwhile: Callable[[], None] | None = None
        self._before: tuple[int, float] | None = None
        self._stale: tuple[int, float] | None = None

    def meanwhile(self, action: Callable[[], None]) -> None:
        self._meanwhile = action

    def _revoked(self, seq: int) -> bool:
        action = self._meanwhile
        if action is not None:
            if super().running()[0] != seq:  # first look: not marked yet
                self._before = super().running()
            else:  # marked: the parent acts now, its first read late
                self._meanwhile = None
                self._stale = self._before
                action()
                self._stale = None
        return super()._revoked(seq)

    def running(self) -> tuple[int, float]:
        stale, self._stale = self._stale, None
        return stale if stale is not None else super().running()


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclasses.dataclass
class _Message:
    """One Invoke as the worker works through it."""

    invoke: protocol.Invoke
    position: int = 0  # index of the next item to consider
    results: list[tuple[int, bool, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def batched(self) -> bool:
        return self.invoke.method in ("predict_batch", "infer_batch")

    @property
    def done(self) -> bool:
        return self.position >= len(self.invoke.items)


class FakeWorker:
    """A dispatcher link played by the test, step by step."""

    def __init__(self, label: str, clock: FakeClock, dispatcher: Any) -> None:
        self.label = label
        self.board = RacyScoreboard()
        self.clock = clock
        self.dispatcher = dispatcher
        self.alive = True
        self.writes: list[list[protocol.Invoke]] = []  # what each write carried
        self.skipped: list[int] = []  # seqs it skipped (taken back)
        self._decoder = protocol.FrameDecoder()
        self._inbox: collections.deque[_Message] = collections.deque()
        self._current: _Message | None = None
        self._running: list[tuple[int, Any]] = []  # the (seq, payload) it computes
        self._outbox: list[protocol.Results] = []

    def __repr__(self) -> str:
        return f"FakeWorker({self.label!r})"

    # -- the link -------------------------------------------------------------

    def write(self, data: bytes | list[Any]) -> bool:
        if not self.alive:
            return False
        if isinstance(data, list):  # a frame's parts (big arrays)
            data = b"".join(data)
        messages = self._decoder.feed(data)
        assert all(type(m) is protocol.Invoke for m in messages), messages
        self.writes.append(messages)
        self._inbox.extend(_Message(m) for m in messages)
        return True

    # -- what it was given ----------------------------------------------------

    @property
    def messages(self) -> list[protocol.Invoke]:
        return [m for write in self.writes for m in write]

    def received(self) -> list[Any]:
        """Every payload it was sent, in order."""
        return [payload for m in self.messages for _, payload in m.items]

    def seqs(self) -> list[list[int]]:
        """The seqs of each message it was sent."""
        return [[seq for seq, _ in m.items] for m in self.messages]

    @property
    def running(self) -> list[int]:
        return [seq for seq, _ in self._running]

    # -- playing the worker ---------------------------------------------------

    def start(self, meanwhile: Callable[[], None] | None = None) -> list[int]:
        """Start the next call (or batch) not taken back; its seqs, or [].

        ``meanwhile``: what the parent does while the worker marks that call
        running (see :class:`RacyScoreboard`).
        """
        assert not self._running, f"{self.label} is already running {self.running}"
        if meanwhile is not None:
            self.board.meanwhile(meanwhile)
        while True:
            message = self._current
            if message is None:
                if not self._inbox:
                    return []
                message = self._current = self._inbox.popleft()
            items = message.invoke.items
            if message.batched:
                if not message.done:  # worker.py checks only the first seq
                    message.position = len(items)
                    if self.board.start(items[0][0], self.clock()):
                        self._running = list(items)
                        return self.running
                    self.skipped.extend(seq for seq, _ in items)
            else:
                while not message.done:
                    if message.results:  # answered before the next call starts
                        self._send_so_far(message)
                    seq, payload = items[message.position]
                    message.position += 1
                    if self.board.start(seq, self.clock()):
                        self._running = [(seq, payload)]
                        return self.running
                    self.skipped.append(seq)
            self._complete(message)

    def finish(self, *values: Any, seconds: float = 0.001) -> None:
        """The running call (or batch) is computed, taking ``seconds``.

        ``values`` are its answers, one per call (default: the payloads).
        """
        assert self._running, f"{self.label} runs nothing"
        message = self._current
        assert message is not None
        if not values:
            values = tuple(payload for _, payload in self._running)
        assert len(values) == len(self._running)
        for (seq, _), value in zip(self._running, values, strict=True):
            ok = not isinstance(value, protocol.RemoteError)
            message.results.append((seq, ok, value))
        message.seconds += seconds
        self._running = []
        self.board.finish()
        if message.done:
            self._complete(message)

    def run(self, *values: Any, seconds: float = 0.001) -> list[int]:
        """Start and finish the next call; its seqs ([] when none is left)."""
        seqs = self.start()
        if seqs:
            self.finish(*values, seconds=seconds)
        return seqs

    def send(self) -> list[protocol.Results]:
        """Send the answers of every finished message to the dispatcher."""
        outbox, self._outbox = self._outbox, []
        for results in outbox:
            self.dispatcher.on_results(self, results)
        return outbox

    def serve(self, seconds: float = 0.001) -> None:
        """Run everything it holds, then send the answers (an idle worker)."""
        while self.run(seconds=seconds):
            pass
        self.send()

    def die(self, error: DeepaasError, fail_running: bool = True) -> None:
        """The process is gone: the dispatcher is told (as the pool would)."""
        self.alive = False
        self.dispatcher.lost(self, error, fail_running=fail_running)

    def _send_so_far(self, message: _Message) -> None:
        self._outbox.append(
            protocol.Results(message.results, message.seconds, final=False)
        )
        message.results = []
        message.seconds = 0.0

    def _complete(self, message: _Message) -> None:
        self._current = None
        self._outbox.append(protocol.Results(message.results, message.seconds))
