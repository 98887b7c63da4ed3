"""The calls one worker holds, in the order it runs them, and how fast it is.

The :class:`~deepaas.engine.dispatcher.Dispatcher` decides which call goes
to which worker; it keeps, per *link* (a worker as it sees one: anything
with a ``label``, a ``board`` — the worker's
:class:`~deepaas.engine.protocol.Scoreboard` — and a ``write(bytes)``
method: the pool's worker handles, or a test's fakes), a :class:`Lane`.
The lane's bookkeeping lives here, apart from those decisions, because it
answers other questions: how many more calls may this worker take, which
calls is it running, and which may still be taken back.

- **Numbering**: calls are numbered in the order the worker will run them;
  a batch is one message and its numbers one range (``sent``), so the number
  the scoreboard shows running names the whole batch.
- **Pins**: each message keeps the calls it carried, and pins them
  (:attr:`~deepaas.engine.batching.Call.pins`), until the worker's answer
  to it arrives (:meth:`Lane.answered_message`) or the worker is gone
  (:meth:`Lane.unpin_all`): until then the worker may read their uploads,
  even for a call that was taken back or whose client left.
- **Pipelining**: its pace (a moving average of the seconds per call, or per
  batch) sets its room: one call (or batch) at a time, or more when its
  recent calls were very fast (about ``PIPELINE_BUDGET_S`` of work, at most
  ``PIPELINE_MAX``), so that a fast model does not wait for the round trip.
- **Stalls**: its running call has outrun its usual time once it ran
  ``STALL_AFTER_S`` and ``STALL_FACTOR`` times the lane's average; the calls
  waiting behind it are then taken back (:meth:`Lane.take_back`: revoked on
  the scoreboard, so the worker skips them), and the lane is ``stalled``: it
  takes one call at a time until that call is answered.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol

from deepaas.engine import protocol
from deepaas.engine.batching import Call
from deepaas.engine.outcomes import unpin

PIPELINE_BUDGET_S = 0.002
PIPELINE_MAX = 64
STALL_AFTER_S = 0.05
STALL_FACTOR = 10.0


class Link(Protocol):
    """What the dispatcher needs of a worker."""

    @property
    def label(self) -> str: ...

    @property
    def board(self) -> protocol.Scoreboard: ...

    def write(self, data: bytes | list[protocol.Part]) -> bool:
        """Send framed messages (bytes, or parts to write in order: see
        :func:`~deepaas.engine.protocol.coalesce`); False when the worker is
        gone."""
        ...


class Lane:
    """The calls one worker holds, in the order it runs them."""

    __slots__ = (
        "answered",
        "drained",
        "ewma",
        "feeding",
        "inflight",
        "link",
        "next_seq",
        "retiring",
        "sent",
        "stalled",
    )

    def __init__(self, link: Link) -> None:
        self.link = link
        self.inflight: dict[int, Call] = {}  # seq -> call, in seq order
        # The messages sent and not yet answered: (first seq, last seq, calls).
        self.sent: collections.deque[tuple[int, int, list[Call]]] = collections.deque()
        self.next_seq = 1
        self.ewma: float | None = None  # seconds per call, or per batch
        self.feeding = True  # takes new calls
        self.retiring = False  # being replaced: takes calls only if no other does
        self.stalled = False  # its running call outran its usual time
        self.answered = 0
        self.drained: asyncio.Future[None] | None = None

    # -- pipelining -----------------------------------------------------------

    def held(self, batched: bool) -> int:
        """What counts against its room: messages when batching, else calls."""
        return len(self.sent) if batched else len(self.inflight)

    def room(self, batched: bool) -> int:
        if not self.feeding:
            return 0
        ewma = self.ewma
        if ewma is None or self.stalled:
            capacity = 1
        else:
            capacity = max(
                1, min(PIPELINE_MAX, int(PIPELINE_BUDGET_S / max(ewma, 1e-7)))
            )
        return capacity - self.held(batched)

    def paced(self, seconds: float) -> None:
        """A call (or batch) took ``seconds``: fold it into the lane's pace."""
        ewma = self.ewma
        self.ewma = seconds if ewma is None else 0.8 * ewma + 0.2 * seconds

    def waiting_behind(self, batched: bool) -> bool:
        """Whether calls wait in the worker behind the one it runs."""
        return len(self.sent) > 1 if batched else len(self.inflight) > 1

    def frame(self, method: str, batch: list[Call]) -> list[protocol.Part]:
        """``batch`` as one message (the parts of its frame: see
        :func:`~deepaas.engine.protocol.pack_parts`), numbered after the
        calls the lane holds; the lane holds them from now on.

        Raises what pickling the arguments raised; the lane then holds
        nothing new.
        """
        seq = self.next_seq
        items = []
        ids = []
        for call in batch:
            call.seq = seq
            call.lane = self
            call.attempts += 1
            items.append((seq, call.payload))
            ids.append(call.request_id)
            seq += 1
        try:
            message = protocol.Invoke(method, items, ids)
            # A big tree of arguments pickles ten times faster without a
            # memo; small ones pay more for the pickler's set-up than that.
            big = any(call.big for call in batch)
            frame = protocol.pack_parts(message, tree=big)
        except Exception:
            for call in batch:
                call.lane = None
                call.attempts -= 1  # it was not sent
            raise
        self.next_seq = seq
        inflight = self.inflight
        for call in batch:
            inflight[call.seq] = call
            call.pins += 1
        self.sent.append((items[0][0], items[-1][0], list(batch)))
        return frame

    def send(self, parts: list[protocol.Part]) -> None:
        """Write the frames of :meth:`frame` to the worker in one write (a
        dead worker is reaped by its pool: the dispatcher's ``lost()``)."""
        written = protocol.coalesce(parts)
        first = written[0]
        if len(written) == 1 and isinstance(first, bytes):
            self.link.write(first)  # the usual case
        else:
            self.link.write(written)

    def answered_message(self) -> list[Call]:
        """The worker answered its oldest message (one ``Results`` per
        message, in order): the calls it carried, unpinned after the caller
        routed their answers."""
        if not self.sent:
            return []
        return self.sent.popleft()[2]

    def unpin_all(self) -> None:
        """The worker is gone (or the server stopped): it reads nothing more."""
        sent = self.sent
        while sent:
            unpin(sent.popleft()[2])

    # -- what it runs, and taking back the rest ---------------------------------

    def overrun(self, now: float) -> int:
        """The number of the call it runs if that call outran its usual
        time, else 0."""
        running, started = self.link.board.running()
        limit = max(STALL_AFTER_S, STALL_FACTOR * (self.ewma or 0.0))
        return running if running and now - started >= limit else 0

    def running_seqs(self, running: int, batched: bool) -> set[int]:
        """The seqs of the call, or the whole batch, that ``running`` names."""
        if not running:
            return set()
        if batched:
            for first, last, _ in self.sent:
                if first <= running <= last:
                    return set(range(first, last + 1))
        return {running}

    def take_back(self, running: int, batched: bool) -> list[Call]:
        """Remove and return every call it holds except what it runs.

        They are revoked on the worker's scoreboard first, so that the worker
        skips them; the caller puts them back in the queue.
        """
        last = self.next_seq - 1
        keep = self.running_seqs(running, batched)
        start = max(keep) + 1 if keep else 1
        if start <= last:
            # Everything revoked goes back, even a call the board now shows
            # running: the worker's second look may still skip it (a call
            # kept then would never be answered); at worst it runs twice.
            self.link.board.revoke(start, last)
        back = [call for seq, call in self.inflight.items() if seq not in keep]
        for call in back:
            del self.inflight[call.seq]
        return back

    def settle_drained(self) -> None:
        """Wake whoever waits for it to hold nothing, if it holds nothing."""
        drained = self.drained
        if drained is not None and not self.inflight and not drained.done():
            drained.set_result(None)


def least_loaded(
    lanes: list[Lane], takers: list[tuple[Lane, int]], last: Lane | None, batched: bool
) -> tuple[Lane, int]:
    """The taker (a lane and its room) holding least; among equals, the
    first after ``last``, the lane served last (in ``lanes`` order), so that
    idle workers take turns instead of the first one doing all the work."""
    count = len(lanes)
    after = lanes.index(last) if last in lanes else -1
    position = {lane: (i - after - 1) % count for i, lane in enumerate(lanes)}
    return min(takers, key=lambda taker: (taker[0].held(batched), position[taker[0]]))
