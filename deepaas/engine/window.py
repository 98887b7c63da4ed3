"""When a batch that is not full goes: the batch window.

A free worker takes a batch from its model's queue
(:mod:`deepaas.engine.batching`). A full batch goes at once. A smaller one
may wait a little for companions, since one call of a batched model costs
little more than a call for one request; how long is this module's
question. The queue asks its window, on the dispatcher's clock; a window
is a small object with no process, loop or clock of its own, so tests
drive it with plain numbers (see ``docs/batching.md`` for the reasoning
and the measurements behind it).

- :class:`FixedWindow` (the plugin's ``max_delay_ms`` or
  ``--max-batch-delay``): a batch is ready once its oldest call has waited
  the delay; 0 never waits (what is queued goes).
- :class:`AdaptiveWindow` (the default): a batch waits only while more
  calls are *expected soon*, and at most :data:`ADAPTIVE_CAP_S` after the
  window opened.
"""

from __future__ import annotations

import math

#: The adaptive window's upper bound: no batch waits longer than this for
#: companions after its window opened. 5 ms gathered the 32 requests of 32
#: clients into one batch on the benchmark's MLP, where a batch costs
#: 13-25 ms, and is a small part of any model that gains from batches.
ADAPTIVE_CAP_S = 0.005
#: Time constant of the arrival rate estimate (an exponentially decayed
#: count of arrivals): long enough to span many batches of a slow model,
#: short enough that a server left idle stops waiting within a second.
RATE_TAU_S = 0.1
#: The arrivals have stopped once none came for this many mean gaps (1/rate):
#: a Poisson stream stays silent that long 0.03 % of the time. (4 gaps, 2 %,
#: cut batches of 32 clients short whenever the API process was descheduled
#: for 2 ms on a busy 2-core machine.)
SILENCE_GAPS = 8.0
#: How long the largest number of calls seen in the system (queued or held
#: by workers) is remembered: the clients that will come back.
POPULATION_MEMORY_S = 0.5


class FixedWindow:
    """A batch is ready when its oldest call has waited ``delay`` seconds."""

    adaptive = False

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def arrived(self, now: float, in_system: int) -> None:
        """A call joined the queue (nothing to learn)."""

    def freed(self, now: float) -> None:
        """A worker has room again (the delay runs from the oldest call)."""

    def ready_at(
        self, now: float, oldest: float, queued: int, held: int = 0, free: int = 1
    ) -> float:
        """When a batch that is not full goes: ``now`` or later."""
        return max(now, oldest + self.delay) if self.delay else now


class AdaptiveWindow:
    """Wait for companions only while they are expected soon.

    Three things are learned as calls arrive (:meth:`arrived`): the
    *arrival rate* (an exponentially decayed count, so it falls when the
    queue is idle), the time of the last arrival, and the *population*: the
    most calls the model has had in the system (queued, or held by its
    workers) lately. The window *opens* when its oldest call arrived or, if
    that call waited for a busy worker, when one had room again
    (:meth:`freed`). A batch that is not full waits only if the rate says
    more than one call arrives per ``cap`` (an idle or slow queue never
    waits), and goes as soon as any of these holds:

    - every call of the population is in the system: when each client
      waits for its answer before sending again, no one else can come (one
      client alone never waits, however fast it sends). With several
      workers free, each batch waits only for its share of the calls the
      busy workers do not hold, so that the free workers share them;
    - no call arrived for :data:`SILENCE_GAPS` mean gaps (``1/rate``) since
      the last one, or since the window opened: the burst is over;
    - it waited ``cap`` since the window opened.

    The population and the window that opens when a worker frees up are
    what merge closed-loop clients into full batches: the worker answered
    a group of clients that will be back within a round trip, and the calls
    queued meanwhile wait for them instead of going on as a group of their
    own. The wait is not shortened as the rate falls (``cap - 1/rate``, as
    a Poisson stream would suggest): the rate of closed-loop clients falls
    with the server's own throughput when the machine is busy, and a window
    that shrinks with it splits the batches that keep throughput up.
    """

    adaptive = True

    def __init__(self, cap: float = ADAPTIVE_CAP_S) -> None:
        self.cap = cap
        self.rate = 0.0  # arrivals per second, as of self._rate_at
        self._rate_at = -math.inf
        self.last_arrival = -math.inf
        self.opened_at = -math.inf  # when a worker last had room again
        # The population: the largest count seen in the current and in the
        # previous period of POPULATION_MEMORY_S / 2.
        self._peak = 0
        self._previous_peak = 0
        self._period_at = -math.inf

    def arrived(self, now: float, in_system: int) -> None:
        """A call joined the queue; ``in_system`` counts it, the calls
        queued and those workers hold."""
        elapsed = now - self._rate_at
        decay = math.exp(-elapsed / RATE_TAU_S) if elapsed < math.inf else 0.0
        self.rate = self.rate * decay + 1.0 / RATE_TAU_S
        self._rate_at = now
        self.last_arrival = now
        self.population(now)
        if in_system > self._peak:
            self._peak = in_system

    def freed(self, now: float) -> None:
        """Every worker was full and one has room again: the window of the
        calls that waited for it opens now."""
        self.opened_at = now

    def rate_at(self, now: float) -> float:
        """The arrival rate at ``now``: what :meth:`arrived` learned,
        decayed over the time since."""
        if self.rate == 0.0:
            return 0.0
        return self.rate * math.exp(-(now - self._rate_at) / RATE_TAU_S)

    def population(self, now: float) -> int:
        """The most calls seen in the system in the last
        ``POPULATION_MEMORY_S / 2`` to ``POPULATION_MEMORY_S`` seconds."""
        half = POPULATION_MEMORY_S / 2
        if now - self._period_at >= half:
            recent = now - self._period_at < 2 * half
            self._previous_peak = self._peak if recent else 0
            self._peak = 0
            self._period_at = now
        return max(self._peak, self._previous_peak)

    def ready_at(
        self, now: float, oldest: float, queued: int, held: int = 0, free: int = 1
    ) -> float:
        """When a batch that is not full goes: ``now`` or later.

        ``oldest``: when its oldest call arrived; ``queued``: the calls
        waiting; ``held``: those the workers hold; ``free``: the workers
        with room.
        """
        if self.rate_at(now) * self.cap <= 1.0:
            return now  # idle, or slower than one call per window
        opened = max(oldest, self.opened_at)
        deadline = opened + self.cap
        if deadline <= now or queued * max(free, 1) + held >= self.population(now):
            return now
        quiet = max(self.last_arrival, opened) + SILENCE_GAPS / self.rate
        return max(now, min(deadline, quiet))
