"""A model's queue of calls, and how batches are formed from it.

Requests wait here until a worker has room. A model with ``predict_batch``
gets up to ``max_batch_size`` calls at once; when fewer are queued, a free
worker waits for companions at most ``max_delay`` seconds after the oldest
call arrived (0, the default, takes what is queued: an idle server adds no
latency). Any other model gets one call at a time.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import time
from typing import Any

_call_ids = itertools.count(1)


class Call:
    """One request for a worker and the future its caller awaits.

    ``queued`` is True while it waits in a :class:`CallQueue` (it counts
    towards the queue's length); ``seq`` and ``lane`` say where the
    dispatcher sent it. ``attempts`` counts how often it was sent to a
    worker (a call whose worker died before it started is sent again).

    ``pins`` counts the messages to workers that carry it and that a worker
    may still read: sent, and neither answered (the worker's ``Results`` for
    that message) nor lost with their worker. A taken-back call stays pinned
    until then, since the worker may still have started it (see
    :class:`~deepaas.engine.protocol.Scoreboard`). While it is pinned, the
    files its arguments name must stay: a caller that leaves then hands them
    to the call (:meth:`adopt`), and the last unpin removes them
    (:func:`deepaas.engine.outcomes.unpin`).
    """

    __slots__ = (
        "attempts",
        "big",
        "files",
        "future",
        "id",
        "lane",
        "payload",
        "pins",
        "queued",
        "queued_at",
        "seq",
        "timer",
    )

    def __init__(
        self, payload: Any, future: asyncio.Future[Any], big: bool = False
    ) -> None:
        self.id = next(_call_ids)
        self.payload = payload
        self.big = big  # arguments from a big body: pickled without a memo
        self.future = future
        self.queued_at = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None  # the deadline, if any
        self.queued = False
        self.seq = 0
        self.lane: Any = None
        self.attempts = 0
        self.pins = 0
        self.files: list[str] = []  # removed at the last unpin (adopted)

    def adopt(self, files: list[str]) -> bool:
        """Take over ``files`` (emptied in place) if a worker may still read
        them; False, and ``files`` left to the caller, if none may."""
        if not self.pins or not files:
            return False
        self.files.extend(files)
        files.clear()
        return True

    def settle(self) -> None:
        """The call is answered: its deadline no longer matters."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclasses.dataclass(frozen=True)
class BatchPolicy:
    """How many calls a worker takes at once, and how long it waits for them."""

    max_batch_size: int = 1  # 1: no batching (the plugin's predict)
    max_delay: float = 0.0  # seconds

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 1


DEFAULT_BATCH_SIZE = 8


def resolve_policy(
    has_predict_batch: bool,
    plugin_batching: dict[str, Any] | None,
    max_batch_size: int | None,
    max_batch_delay_ms: int | None,
) -> BatchPolicy:
    """The plugin's ``batching`` attribute, overridden by the flags."""
    if not has_predict_batch:
        return BatchPolicy()
    own = plugin_batching or {}
    size = max_batch_size or own.get("max_batch_size") or DEFAULT_BATCH_SIZE
    delay_ms = (
        max_batch_delay_ms
        if max_batch_delay_ms is not None
        else own.get("max_delay_ms", 0)
    )
    return BatchPolicy(max_batch_size=int(size), max_delay=float(delay_ms) / 1000)


class CallQueue:
    """The calls waiting for a worker, oldest first.

    Its length counts only calls someone still awaits: a call whose client
    went away or whose deadline passed stops counting at once (it is
    :meth:`discard`-ed, or found settled), so ``--max-queue`` and the
    ``deepaas_queue_depth`` gauge see live clients only.
    """

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._calls: collections.deque[Call] = collections.deque()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def append(self, call: Call) -> None:
        call.queued = True
        self._live += 1
        self._calls.append(call)

    def requeue(self, calls: list[Call]) -> None:
        """Put calls back at the head of the queue, in their order."""
        for call in reversed(calls):
            if call.future.done() or call.queued:
                continue
            call.queued = True
            self._live += 1
            self._calls.appendleft(call)

    def discard(self, call: Call) -> None:
        """``call`` no longer waits (answered, timed out, its client left)."""
        if call.queued:
            call.queued = False
            self._live -= 1

    def _drop_settled(self) -> None:
        calls = self._calls
        while calls and (not calls[0].queued or calls[0].future.done()):
            self.discard(calls.popleft())

    def ready_at(self, now: float) -> float | None:
        """When a batch should be taken: ``now`` or later; None when empty.

        A full batch, or a policy without delay, is ready now; otherwise the
        batch is ready when the oldest call has waited ``max_delay``.
        """
        self._drop_settled()
        if not self._calls:
            return None
        policy = self.policy
        if not policy.max_delay or self._live >= policy.max_batch_size:
            return now
        return max(now, self._calls[0].queued_at + policy.max_delay)

    def take(self, limit: int | None = None) -> list[Call]:
        """Up to ``limit`` (``max_batch_size``) calls still awaited, oldest first."""
        limit = limit or self.policy.max_batch_size
        batch: list[Call] = []
        calls = self._calls
        while calls and len(batch) < limit:
            call = calls.popleft()
            if not call.queued:
                continue
            self.discard(call)
            if not call.future.done():
                batch.append(call)
        return batch

    def drain(self) -> list[Call]:
        """Every call still waiting (for failing them all at once)."""
        calls = [c for c in self._calls if c.queued and not c.future.done()]
        for call in self._calls:
            self.discard(call)
        self._calls.clear()
        return calls
