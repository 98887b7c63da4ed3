"""Queue to workers: who takes which call, when; deadlines; result routing.

The dispatcher knows nothing of processes. It is handed *links* (the pool's
worker handles, or a test's fakes; see :class:`~deepaas.engine.lanes.Link`)
and keeps, per link, a :class:`~deepaas.engine.lanes.Lane`: the calls it
holds, numbered in the order the worker will run them, how fast it has
been, and so how many more it may take (:mod:`deepaas.engine.lanes`). How
each call ends, with its answer or an error, is
:mod:`deepaas.engine.outcomes`.

- **Pull-based**: whenever a lane has room it gets the oldest calls, least
  loaded lane first (among equals, the one after the lane served last, so
  idle workers take turns): a batch (:meth:`CallQueue.take_batch
  <deepaas.engine.batching.CallQueue.take_batch>`) for a model that
  batches, else calls. Everything handed out in one turn of the event loop
  goes to a worker in one write. A batch that is not full goes when the
  queue's window says (:mod:`deepaas.engine.window`).
- **Retiring workers last**: a worker being replaced (:meth:`mark_retiring`:
  it passed its request or memory limit) takes no new calls while another
  ready worker takes calls, even a busy one (calls wait for it): what the
  worker already holds bounds what it still runs. When every worker that
  takes calls is retiring, they keep serving (capacity never drops to zero)
  until their replacements are ready (:meth:`retire`).
- **No head-of-line blocking**: while calls wait in a worker behind the one
  it runs, every ``STALL_CHECK_S`` the dispatcher asks each such lane whether
  its running call outran its usual time; if so, the calls waiting behind it
  go to the head of the queue for another worker, and the lane takes one
  call at a time until that call is answered.
- **Failures stay with their call**: when a worker dies (:meth:`lost`), only
  the call (or the batch) it was running fails; the calls it had not
  started, and those it had computed but not yet sent, go back to the head
  of the queue (those are computed again: their results died with the
  process), unless it is the :data:`MAX_DEATHS`-th worker to die holding
  it computed, or maybe computed (the worker died between calls): a call
  whose computing kills its worker after its answer is made (the model
  closed the worker's socket) fails then rather than kill every worker
  for good. A call past its deadline (:meth:`expire`) fails
  alone.
- **Uploads outlive their readers**: a call stays pinned to each message
  that carried it until its worker answers that message or dies
  (:mod:`deepaas.engine.lanes`); a caller that leaves earlier (hung up,
  timed out) hands its uploads to the call, removed at the last unpin
  (:func:`~deepaas.engine.outcomes.unpin`). At shutdown :meth:`release_all`
  unpins what workers that are now stopped still held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from deepaas.engine import protocol
from deepaas.engine.batching import BatchPolicy, Call, CallQueue
from deepaas.engine.lanes import Lane, Link, least_loaded
from deepaas.engine.outcomes import (
    Logged,
    answer,
    did_not_answer,
    did_not_start,
    fail,
    unanswered,
    unpin,
    unsendable,
)
from deepaas.exceptions import DeepaasError

STALL_CHECK_S = 0.025
#: A call that this many workers died holding, after it may have been
#: computed (not behind the call they ran), fails with the last death's
#: error instead of going back to the queue once more.
MAX_DEATHS = 3


class DispatchEvents:
    """What the dispatcher reports as it works (the metrics listen); no-ops."""

    def dispatched(self, model: str, waited: list[float]) -> None:
        """Calls left the queue for a worker for the first time, after
        waiting these many seconds each."""

    def computed(self, model: str, size: int, seconds: float, times: int = 1) -> None:
        """A worker called the model ``times`` times, each with ``size``
        requests (a batch, or 1) and taking ``seconds``."""


class Dispatcher:
    """Hands one model's queued calls to its workers and routes the answers."""

    def __init__(
        self,
        model: str,
        queue: CallQueue,
        events: DispatchEvents | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.queue = queue
        self.policy: BatchPolicy = queue.policy
        self.events = events or DispatchEvents()
        self.clock = clock
        self.lanes: dict[Link, Lane] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_scheduled = False
        self._pump_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._last: Lane | None = None  # served last: ties go to the next one
        self._adaptive = queue.window.adaptive  # told of held calls and rooms

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # -- workers come and go ------------------------------------------------

    def add(self, link: Link) -> None:
        """A worker is ready: it takes calls from now on."""
        self.lanes[link] = Lane(link)
        self.queue.freed(self.clock())
        self.schedule_pump()

    def held(self, link: Link) -> int:
        """Calls ``link`` holds (running, waiting in it, or not yet sent back)."""
        lane = self.lanes.get(link)
        return len(lane.inflight) if lane is not None else 0

    def answered(self, link: Link) -> int:
        lane = self.lanes.get(link)
        return lane.answered if lane is not None else 0

    def mark_retiring(self, link: Link) -> None:
        """``link`` is being replaced: it keeps what it holds, and takes new
        calls only while no other worker takes calls (see the module doc)."""
        lane = self.lanes.get(link)
        if lane is not None:
            lane.retiring = True

    def takes_calls(self, link: Link) -> bool:
        """``link`` takes new calls as any other (not retired, nor marked
        retiring)."""
        lane = self.lanes.get(link)
        return lane is not None and lane.feeding and not lane.retiring

    def retire(self, link: Link) -> None:
        """No new calls for ``link``; those it has not started go elsewhere."""
        lane = self.lanes.get(link)
        if lane is None:
            return
        lane.feeding = False
        running, _ = link.board.running()
        self._take_back(lane, running)

    async def drained(self, link: Link) -> None:
        """Wait until ``link`` holds no call (it was retired first)."""
        lane = self.lanes.get(link)
        if lane is None or not lane.inflight:
            return
        if lane.drained is None:
            lane.drained = self.loop.create_future()
        await asyncio.shield(lane.drained)

    def lost(self, link: Link, error: DeepaasError, fail_running: bool = True) -> None:
        """``link`` died: the call (or batch) it ran fails with ``error``
        (unless ``fail_running`` is False); the others go back to the queue."""
        lane = self.lanes.pop(link, None)
        if lane is None:
            return
        if self._last is lane:
            self._last = None
        running, _ = link.board.running()
        batched = self.policy.batched
        doomed = lane.running_seqs(running, batched) if fail_running else set()
        back = []
        for seq, call in lane.inflight.items():
            if seq in doomed:
                fail(call, error)
                continue
            if not running or seq < running:  # computed, maybe: what killed it?
                call.deaths += 1
                if call.deaths >= MAX_DEATHS:
                    fail(call, error)
                    continue
            back.append(call)
        lane.inflight.clear()
        lane.unpin_all()  # the process is gone: it reads no upload any more
        self._requeue(back)
        lane.settle_drained()

    def fail_all(self, error: DeepaasError) -> None:
        """Fail every call, queued or held (the server stops).

        What the workers hold stays pinned: they may still be reading the
        uploads until they stop (:meth:`release_all`, or :meth:`lost`).
        """
        for lane in self.lanes.values():
            for call in lane.inflight.values():
                fail(call, error)
            lane.inflight.clear()
            lane.settle_drained()
        for call in self.queue.drain():
            fail(call, error)

    def release_all(self) -> None:
        """The workers are stopped: unpin every call they were sent, so that
        uploads left behind by callers that went away are removed."""
        for lane in self.lanes.values():
            lane.unpin_all()

    # -- calls ----------------------------------------------------------------

    def submit(self, call: Call) -> None:
        call.queued_at = self.clock()  # the batch window runs on our clock
        self.queue.append(call, self._load()[0])
        self.schedule_pump()

    def expire(self, call: Call, seconds: float) -> Link | None:
        """``call`` reached its deadline: it answers 504.

        Returns the link that was running it (the caller replaces that
        worker: there is no safe way to interrupt model code), or None.
        """
        if call.future.done():
            return None
        lane: Lane | None = call.lane
        if lane is None or lane.inflight.get(call.seq) is not call:
            self.queue.discard(call)
            fail(call, did_not_start(self.model, seconds, ready=bool(self.lanes)))
            return None
        running, _ = lane.link.board.running()
        del lane.inflight[call.seq]
        if call.seq in lane.running_seqs(running, self.policy.batched):
            lane.feeding = False  # to be replaced: no new calls meanwhile
            fail(call, did_not_answer(self.model, seconds))
            lane.settle_drained()
            return lane.link
        fail(call, did_not_start(self.model, seconds))
        # Revoke it (the worker must not run it for nobody), and the others
        # waiting there would wait too: they go to the queue.
        self._take_back(lane, running)
        lane.stalled = True
        return None

    # -- answers --------------------------------------------------------------

    def on_results(self, link: Link, message: protocol.Results) -> None:
        lane = self.lanes.get(link)
        logged: Logged = {}  # the tracebacks of this message's failures
        if lane is None:  # it was given up on (died, timed out): nobody waits
            for _, ok, value in message.items:
                unanswered(self.model, None, ok, value, logged)
            return
        batched = self.policy.batched
        full = not self._load()[1]  # no worker had room (adaptive window only)
        # A message's answers may come in parts (its calls as they are
        # computed); its uploads stay pinned until the final one.
        carried = lane.answered_message() if message.final else []
        items = message.items
        if items:
            seconds = message.seconds
            if batched:
                per = seconds
                self.events.computed(self.model, len(items), seconds)
            else:
                per = seconds / len(items)
                self.events.computed(self.model, 1, per, len(items))
            lane.paced(per)
        inflight = lane.inflight
        for seq, ok, value in items:
            call = inflight.pop(seq, None)
            if call is None or call.future.done():
                # taken back, timed out, or its client left
                unanswered(self.model, call, ok, value, logged)
                continue
            lane.answered += 1
            answer(call, ok, value, logged)
        unpin(carried)  # the worker is done with that message's uploads
        if not inflight and message.final:
            lane.stalled = False
            lane.settle_drained()
        if full and self._load()[1]:
            self.queue.freed(self.clock())
        self.schedule_pump()

    # -- handing out ----------------------------------------------------------

    def schedule_pump(self) -> None:
        """Pump once at the end of this loop iteration.

        Every call queued during one iteration of the event loop then goes
        to a worker in a single write: one system call for many requests.
        """
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.loop.call_soon(self.pump)

    def pump(self) -> None:
        """Hand calls (or batches) to lanes with room, least loaded first."""
        self._pump_scheduled = False
        queue = self.queue
        now = self.clock()
        ready_at = queue.ready_at(now, *self._load())
        if ready_at is None:
            return
        lanes = [lane for lane in self.lanes.values() if lane.feeding]
        # A retiring worker (over its memory or request limit) gets new calls
        # only when it is all there is: what it runs then is bounded.
        lanes = [lane for lane in lanes if not lane.retiring] or lanes
        if not lanes:
            return
        if ready_at > now:  # waiting for companions: come back when due
            self._pump_later(ready_at)
            return
        batched = self.policy.batched
        frames: dict[Lane, list[protocol.Part]] = {}
        pipelined = False
        while True:
            takers = [
                (lane, room) for lane in lanes if (room := lane.room(batched)) > 0
            ]
            if not takers:
                break
            lane, room = (
                takers[0]
                if len(takers) == 1
                else least_loaded(lanes, takers, self._last, batched)
            )
            ready_at = queue.ready_at(now, *self._load())
            if ready_at is None:
                break
            if ready_at > now:
                self._pump_later(ready_at)
                break
            if batched:
                batch = queue.take_batch()
            else:
                # Several calls in one message to a fast worker, shared fairly.
                share = -(-len(queue) // len(takers))
                batch = queue.take(min(room, share))
            if not batch:
                break
            self._last = lane
            frame = self._frame(lane, self.policy.method(batch), batch)
            if frame is None:
                continue
            frames.setdefault(lane, []).extend(frame)
            pipelined = pipelined or lane.waiting_behind(batched)
            waited = [now - call.queued_at for call in batch if call.attempts == 1]
            if waited:
                self.events.dispatched(self.model, waited)
        for lane, parts in frames.items():
            lane.send(parts)  # one write per lane
        if pipelined:
            self._watch_stalls()

    def _load(self) -> tuple[int, int]:
        """What the adaptive window weighs (other windows do not): the calls
        the workers hold (running, waiting in them, not yet sent back), and
        how many workers have room."""
        if not self._adaptive:
            return 0, 1
        batched = self.policy.batched
        lanes = self.lanes.values()
        held = sum(len(lane.inflight) for lane in lanes)
        return held, sum(lane.room(batched) > 0 for lane in lanes)

    def _frame(
        self, lane: Lane, method: str, batch: list[Call]
    ) -> list[protocol.Part] | None:
        try:
            return lane.frame(method, batch)
        except Exception as exc:  # an argument that cannot be pickled
            if len(batch) > 1:  # each on its own: only the culprit fails
                frames = [self._frame(lane, method, [call]) for call in batch]
                return [part for frame in frames if frame for part in frame] or None
            fail(batch[0], unsendable(exc))
            return None

    def _pump_later(self, when: float) -> None:
        if self._pump_timer is not None:
            self._pump_timer.cancel()
        delay = max(0.0, when - self.clock())
        self._pump_timer = self.loop.call_later(delay, self.schedule_pump)

    # -- stalls ---------------------------------------------------------------

    def _watch_stalls(self) -> None:
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(STALL_CHECK_S, self.check_stalls)

    def check_stalls(self) -> None:
        """Take back the calls waiting behind a call that runs too long."""
        self._stall_timer = None
        batched = self.policy.batched
        now = self.clock()
        watching = False
        for lane in list(self.lanes.values()):
            if lane.stalled or not lane.waiting_behind(batched):
                continue
            running = lane.overrun(now)
            if running:
                self._take_back(lane, running)
                lane.stalled = True
            else:
                watching = True
        if watching:
            self._watch_stalls()

    def _take_back(self, lane: Lane, running: int) -> None:
        """Every call ``lane`` holds except what it runs goes back to the
        queue; every message after what it runs is revoked on its scoreboard,
        even when the lane holds no call any more (a call just expired there
        must not run for nobody)."""
        self._requeue(lane.take_back(running, self.policy.batched))
        if not lane.inflight:
            lane.settle_drained()

    def _requeue(self, calls: Iterable[Call]) -> None:
        back = []
        for call in calls:
            call.lane = None
            if not call.future.done():
                back.append(call)
        if back:
            self.queue.requeue(back)
            self.schedule_pump()
