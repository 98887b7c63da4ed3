"""A model's queue of calls, and how batches are formed from it.

Requests wait here until a worker has room. A model with ``predict_batch``
gets up to ``max_batch_size`` calls at once; when fewer are queued, the
queue's window (:mod:`deepaas.engine.window`) says how long a free worker
waits for companions: by default only while more calls are expected soon
(an idle server adds no latency), or a fixed ``max_delay`` after the oldest
call arrived when the plugin or ``--max-batch-delay`` sets one. Any other
model gets one call at a time.

Predict and infer calls of one model share the queue, and one message to a
worker carries calls of one method. Infer calls of a tensor-native plugin
whose signature has a batch axis are batched too, counted in rows (the
batch axis of each call's inputs) up to ``max_infer_rows``, and only with
calls of their ``group`` (the same non-batch shapes): a worker stacks them
into one ``infer`` call. A call too big to share (its rows alone reach the
limit) runs alone; it is never split.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import time
from collections.abc import Hashable
from typing import Any

from deepaas.engine.window import ADAPTIVE_CAP_S, AdaptiveWindow, FixedWindow
from deepaas.tracing import REQUEST_ID

_call_ids = itertools.count(1)

PREDICT = "predict"
INFER = "infer"
#: How far past the oldest call a batch looks for calls that may join it.
SCAN_LIMIT = 256


class Call:
    """One request for a worker and the future its caller awaits.

    ``queued`` is True while it waits in a :class:`CallQueue` (it counts
    towards the queue's length); ``seq`` and ``lane`` say where the
    dispatcher sent it. ``attempts`` counts how often it was sent to a
    worker (a call whose worker died before it started is sent again);
    ``deaths`` how many workers died holding it computed (see
    :data:`~deepaas.engine.dispatcher.MAX_DEATHS`).

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
        "deaths",
        "files",
        "future",
        "group",
        "id",
        "lane",
        "method",
        "payload",
        "pins",
        "queued",
        "queued_at",
        "request_id",
        "rows",
        "seq",
        "timer",
    )

    def __init__(
        self,
        payload: Any,
        future: asyncio.Future[Any],
        big: bool = False,
        method: str = PREDICT,
        rows: int = 1,
        group: Hashable = None,
    ) -> None:
        self.id = next(_call_ids)
        # The X-Request-ID of the request being served, sent to the worker
        # with the call (its output is logged under it: deepaas.tracing).
        self.request_id = REQUEST_ID.get()
        self.payload = payload
        self.big = big  # arguments from a big body: pickled without a memo
        self.method = method  # PREDICT or INFER
        self.rows = rows  # what it adds to a batch: rows for infer, else 1
        self.group = group  # infer calls batch only with calls of their group
        self.future = future
        self.queued_at = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None  # the deadline, if any
        self.queued = False
        self.seq = 0
        self.lane: Any = None
        self.attempts = 0
        self.deaths = 0
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
    # Seconds a batch that is not full waits after its oldest call arrived;
    # None: the adaptive window (deepaas.engine.window), 0: no wait.
    max_delay: float | None = None
    # Rows of infer calls stacked into one infer(); 0 or 1: none.
    max_infer_rows: int = 0

    @property
    def window_kind(self) -> str:
        """``adaptive``, ``fixed`` (a delay, 0 included) or ``none`` (calls
        are not batched, so nothing waits)."""
        if not self.batched:
            return "none"
        return "adaptive" if self.max_delay is None else "fixed"

    @property
    def window_bound(self) -> float:
        """The longest a batch waits for companions, in seconds: the fixed
        delay, or the adaptive window's cap."""
        if not self.batched:
            return 0.0
        return ADAPTIVE_CAP_S if self.max_delay is None else self.max_delay

    def window(self) -> AdaptiveWindow | FixedWindow:
        """A new window for one queue (the adaptive one learns from it)."""
        if self.batched and self.max_delay is None:
            return AdaptiveWindow()
        return FixedWindow(self.max_delay if self.batched and self.max_delay else 0.0)

    @property
    def batched(self) -> bool:
        """Workers get batches (one model call per message), not calls."""
        return self.max_batch_size > 1 or self.max_infer_rows > 1

    def method(self, batch: list[Call]) -> str:
        """What a worker runs for ``batch`` (calls of one method): each call
        on its own, or the batch as one model call."""
        method: str = batch[0].method
        if not self.batched:
            return method
        if method == INFER:
            return "infer_batch" if len(batch) > 1 else INFER
        return "predict_batch" if self.max_batch_size > 1 else PREDICT

    @property
    def full(self) -> int:
        """Queued rows that make a batch worth starting without delay."""
        return max(self.max_batch_size, self.max_infer_rows)


DEFAULT_BATCH_SIZE = 8


def resolve_policy(
    has_predict_batch: bool,
    plugin_batching: dict[str, Any] | None,
    max_batch_size: int | None,
    max_batch_delay_ms: int | None,
    infer_batch_size: int = 0,
) -> BatchPolicy:
    """The plugin's ``batching`` attribute, overridden by the flags.

    ``infer_batch_size``: the ``max_batch_size`` of a tensor-native
    plugin's signature (0: no batch axis); the flag lowers it (it cannot
    raise it: the signature says what the model takes).
    """
    infer_rows = infer_batch_size
    if infer_rows and max_batch_size:
        infer_rows = min(infer_rows, max_batch_size)
    if not has_predict_batch and infer_rows <= 1:
        return BatchPolicy()
    own = plugin_batching or {}
    size = 1
    if has_predict_batch:
        size = max_batch_size or own.get("max_batch_size") or DEFAULT_BATCH_SIZE
    # The flag, else the plugin's key; neither: the adaptive window.
    delay_ms = (
        max_batch_delay_ms
        if max_batch_delay_ms is not None
        else own.get("max_delay_ms")
    )
    return BatchPolicy(
        max_batch_size=int(size),
        max_delay=None if delay_ms is None else float(delay_ms) / 1000,
        max_infer_rows=infer_rows if infer_rows > 1 else 0,
    )


class CallQueue:
    """The calls waiting for a worker, oldest first.

    Its length counts only calls someone still awaits: a call whose client
    went away or whose deadline passed stops counting at once (it is
    :meth:`discard`-ed, or found settled), so ``--max-queue`` and the
    ``deepaas_queue_depth`` gauge see live clients only.
    """

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self.window = policy.window()
        self._calls: collections.deque[Call] = collections.deque()
        self._live = 0
        self._rows = 0  # of the live calls

    def __len__(self) -> int:
        return self._live

    def append(self, call: Call, held: int = 0) -> None:
        """A new call, which arrived at ``call.queued_at``; ``held``: the
        calls the workers hold (the window learns how many are in the
        system)."""
        call.queued = True
        self._live += 1
        self._rows += call.rows
        self._calls.append(call)
        self.window.arrived(call.queued_at, self._live + held)

    def freed(self, now: float) -> None:
        """Every worker was full and one has room again (the window of the
        calls that waited for it opens now)."""
        self.window.freed(now)

    def requeue(self, calls: list[Call]) -> None:
        """Put calls back at the head of the queue, in their order."""
        for call in reversed(calls):
            if call.future.done() or call.queued:
                continue
            call.queued = True
            self._live += 1
            self._rows += call.rows
            self._calls.appendleft(call)

    def discard(self, call: Call) -> None:
        """``call`` no longer waits (answered, timed out, its client left)."""
        if call.queued:
            call.queued = False
            self._live -= 1
            self._rows -= call.rows

    def _drop_settled(self) -> None:
        calls = self._calls
        while calls and (not calls[0].queued or calls[0].future.done()):
            self.discard(calls.popleft())

    def ready_at(self, now: float, held: int = 0, free: int = 1) -> float | None:
        """When a batch should be taken: ``now`` or later; None when empty.

        A full batch, or a model that does not batch, is ready now;
        otherwise the window says (``held``: the calls the workers hold;
        ``free``: the workers with room).
        """
        self._drop_settled()
        if not self._calls:
            return None
        policy = self.policy
        if not policy.batched or self._rows >= policy.full:
            return now
        oldest = self._calls[0].queued_at
        return self.window.ready_at(now, oldest, self._live, held, free)

    def take(self, limit: int | None = None) -> list[Call]:
        """Up to ``limit`` (``max_batch_size``) calls still awaited, oldest
        first, all of the oldest one's method (one message carries one)."""
        limit = limit or self.policy.max_batch_size
        batch: list[Call] = []
        calls = self._calls
        while calls and len(batch) < limit:
            call = calls[0]
            if call.queued and batch and call.method != batch[0].method:
                break
            calls.popleft()
            if not call.queued:
                continue
            self.discard(call)
            if not call.future.done():
                batch.append(call)
        return batch

    def take_batch(self) -> list[Call]:
        """One model call's worth: the oldest call still awaited, and the
        calls after it (at most ``SCAN_LIMIT`` looked at) that may join it,
        oldest first, within the policy's size: for predict, up to
        ``max_batch_size`` calls; for infer, calls of the same group up to
        ``max_infer_rows`` rows (none when the signature has no batch axis).
        The calls passed over keep their places."""
        self._drop_settled()
        calls = self._calls
        if not calls:
            return []
        head = calls.popleft()
        self.discard(head)
        batch = [head]
        policy = self.policy
        predict = head.method == PREDICT
        limit = policy.max_batch_size if predict else policy.max_infer_rows
        total = 1 if predict else head.rows
        passed: list[Call] = []
        scanned = 0
        while calls and scanned < SCAN_LIMIT and total < limit:
            call = calls.popleft()
            if not call.queued:
                continue
            scanned += 1
            weight = 1 if predict else call.rows
            if call.future.done():
                self.discard(call)
            elif (
                call.method == head.method
                and call.group == head.group
                and total + weight <= limit
            ):
                self.discard(call)
                batch.append(call)
                total += weight
            else:
                passed.append(call)
        calls.extendleft(reversed(passed))
        return batch

    def drain(self) -> list[Call]:
        """Every call still waiting (for failing them all at once)."""
        calls = [c for c in self._calls if c.queued and not c.future.done()]
        for call in self._calls:
            self.discard(call)
        self._calls.clear()
        return calls
