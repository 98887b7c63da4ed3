"""The batch window in the dispatcher, under synthetic arrival processes.

No process, no sleep: a :class:`Sim` steps an injected clock in ticks of
50 µs and plays, at each tick, the clients (open-loop arrivals at given
times, or closed-loop clients that send again a little after each answer)
and one fake worker (:mod:`tests.fakes.worker`) that computes a batch of
``n`` calls in ``service(n)`` seconds. Each batch the worker starts is
recorded with its size, when it started and when its oldest call arrived.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from deepaas.engine import dispatcher as dispatcher_module
from deepaas.engine.batching import BatchPolicy, Call, CallQueue
from deepaas.engine.dispatcher import Dispatcher
from deepaas.engine.window import ADAPTIVE_CAP_S, SILENCE_GAPS
from tests.fakes.worker import FakeClock, FakeWorker

pytestmark = pytest.mark.timeout(60)

TICK = 0.00005
CAP = ADAPTIVE_CAP_S


def mlp(size: int) -> float:
    """The benchmark's MLP: 2.8 ms alone, 13.5 ms for a batch of 32."""
    return 0.0028 + 0.000345 * (size - 1)


@pytest.fixture(autouse=True)
def _stalls_checked_by_the_tests(monkeypatch):
    monkeypatch.setattr(dispatcher_module, "STALL_CHECK_S", 3600.0)


@dataclasses.dataclass
class Batch:
    worker: int
    started: float  # when the worker started it
    size: int
    oldest: float  # when its oldest call arrived
    free_since: float  # when the worker had finished the batch before


class Sim:
    """One model's queue and dispatcher, fake workers, a fake clock."""

    def __init__(
        self, policy: BatchPolicy, service: Callable[[int], float], workers: int = 1
    ) -> None:
        self.clock = FakeClock(100.0)
        self.queue = CallQueue(policy)
        self.dispatcher = Dispatcher("m", self.queue, clock=self.clock)
        self.workers = [
            FakeWorker(f"m/{i}", self.clock, self.dispatcher) for i in range(workers)
        ]
        for worker in self.workers:
            self.dispatcher.add(worker)
        self.worker = self.workers[0]
        self.service = service
        self.batches: list[Batch] = []
        self.busy_until: list[float | None] = [None] * workers
        self.free_since = [self.clock()] * workers
        self.calls: list[Call] = []

    @property
    def now(self) -> float:
        return self.clock()

    def submit(self, payload: Any = None) -> Call:
        call = Call(payload, asyncio.get_running_loop().create_future())
        self.dispatcher.submit(call)
        self.calls.append(call)
        return call

    async def step(self) -> list[Call]:
        """One tick: the workers finish or start a batch, the dispatcher
        pumps (its timers are not waited for); returns the calls answered."""
        answered: list[Call] = []
        for i, worker in enumerate(self.workers):
            due = self.busy_until[i]
            if due is not None and self.now >= due - 1e-12:
                worker.finish(seconds=self.service(len(worker.running)))
                pending = [c for c in self.calls if not c.future.done()]
                worker.send()
                answered += [c for c in pending if c.future.done()]
                self.busy_until[i] = None
                self.free_since[i] = self.now
        await asyncio.sleep(0)  # the pumps scheduled so far
        self.dispatcher.pump()  # what a timer of the window would do
        for i, worker in enumerate(self.workers):
            if self.busy_until[i] is None:
                seqs = worker.start()
                if seqs:
                    items = {seq: p for m in worker.messages for seq, p in m.items}
                    oldest = min(items[seq] for seq in seqs)
                    self.batches.append(
                        Batch(i, self.now, len(seqs), oldest, self.free_since[i])
                    )
                    self.busy_until[i] = self.now + self.service(len(seqs))
        self.clock.advance(TICK)
        return answered

    async def open_loop(self, times: Iterable[float], until: float) -> None:
        """Calls arrive at ``times`` (offsets from now); run until ``until``."""
        start = self.now
        pending = sorted(start + t for t in times)
        while self.now < start + until:
            while pending and pending[0] <= self.now + 1e-12:
                pending.pop(0)
                self.submit(self.now)
            await self.step()

    async def closed_loop(
        self,
        clients: int,
        until: float,
        spacing: float = 0.0001,
        starts: list[float] | None = None,
    ) -> None:
        """``clients`` clients each send again once answered: the answers of
        one batch go out ``spacing`` apart (the API process writes them one
        by one), and each client sends its next call as soon as it has its
        answer. They start ``spacing`` apart, or at ``starts`` (offsets)."""
        start = self.now
        if starts is None:
            starts = [i * spacing for i in range(clients)]
        returns = [start + t for t in starts]
        while self.now < start + until:
            due = [t for t in returns if t <= self.now + 1e-12]
            for t in due:
                returns.remove(t)
                self.submit(self.now)
            answered = await self.step()
            for i, _ in enumerate(answered):
                returns.append(self.now + (i + 1) * spacing)

    def sizes(self, after: float = 0.0) -> list[int]:
        start = self.batches[0].started if self.batches else 0.0
        return [b.size for b in self.batches if b.started >= start + after]

    def waits(self) -> list[float]:
        """How long each batch waited after it could have started: after its
        oldest call arrived and the worker was free."""
        return [b.started - max(b.oldest, b.free_since) for b in self.batches]


ADAPTIVE = BatchPolicy(max_batch_size=32)  # no delay: the adaptive window
NO_DELAY = BatchPolicy(max_batch_size=32, max_delay=0.0)
FIVE_MS = BatchPolicy(max_batch_size=32, max_delay=0.005)


async def test_idle_server_does_not_wait():
    sim = Sim(ADAPTIVE, mlp)
    await sim.open_loop([0.0], until=0.02)
    assert [(b.size, b.started - b.oldest) for b in sim.batches] == [(1, 0.0)]


async def test_rare_calls_do_not_wait():
    sim = Sim(ADAPTIVE, mlp)
    await sim.open_loop([i * 0.02 for i in range(20)], until=0.4)
    assert sim.sizes() == [1] * 20
    assert max(sim.waits()) == 0.0


async def test_one_closed_loop_client_does_not_wait():
    """A fast arrival rate (a call every 3 ms), but no companion can come
    while the only client's call waits."""
    sim = Sim(ADAPTIVE, mlp)
    await sim.closed_loop(1, until=0.3)
    assert len(sim.batches) > 90
    assert set(sim.sizes()) == {1}
    assert max(sim.waits()) == 0.0


async def test_a_fixed_window_makes_one_client_wait_it():
    """What the adaptive window avoids: a fixed delay costs every lone call."""
    sim = Sim(FIVE_MS, mlp)
    await sim.closed_loop(1, until=0.3)
    assert set(sim.sizes()) == {1}
    assert min(sim.waits()) == pytest.approx(0.005, abs=2 * TICK)


async def test_closed_loop_clients_form_full_batches():
    """32 clients, one worker: once the window has learned them (a few
    batches), every batch holds all 32, and none waited more than the cap."""
    sim = Sim(ADAPTIVE, mlp)
    await sim.closed_loop(32, until=0.5)
    assert sim.sizes()[0] == 1  # the first call found an idle server
    assert set(sim.sizes(after=0.02)) == {32}
    assert max(sim.waits()) <= CAP


async def test_without_a_window_closed_loop_clients_split_into_groups():
    """The problem of issue 14: with delay 0, batches never hold the 32."""
    sim = Sim(NO_DELAY, mlp)
    await sim.closed_loop(32, until=0.5)
    later = sim.sizes(after=0.1)
    assert max(later) < 32
    assert sum(later) / len(later) < 24
    assert max(sim.waits()) == 0.0


@pytest.mark.parametrize(("policy", "merged"), [(ADAPTIVE, True), (NO_DELAY, False)])
async def test_groups_split_merge_when_the_worker_frees_up(policy, merged):
    """Two groups of 16 clients, the second sent while the first computes.
    With the adaptive window, the calls queued while the worker was busy
    wait, once it has room, for the group it just answered: one batch of
    32 from then on. Without a window the groups take turns for ever."""
    sim = Sim(policy, mlp)
    starts = [0.0] * 16 + [0.001] * 16
    await sim.closed_loop(32, until=0.3, spacing=0.00005, starts=starts)
    assert sim.sizes()[0] == 16
    if merged:
        assert set(sim.sizes()[1:]) == {32}
        assert max(sim.waits()) <= CAP
    else:
        assert set(sim.sizes()) == {16}


@pytest.mark.parametrize("clients", [8, 16])
async def test_fewer_clients_than_a_batch_go_once_all_are_in(clients):
    """Never full: the batch goes when every client's call is in, not at the
    cap or after a silence."""
    sim = Sim(ADAPTIVE, mlp)
    await sim.closed_loop(clients, until=0.4)
    assert set(sim.sizes(after=0.1)) == {clients}
    # The last call of a batch arrives (clients - 1) spacings after the
    # worker freed up: no batch waited longer than that.
    later = [w for b, w in zip(sim.batches, sim.waits(), strict=True) if b.size > 1]
    assert max(later) <= clients * 0.0001 + 2 * TICK


@pytest.mark.parametrize("clients", [32, 64])
async def test_two_workers_share_the_clients(clients):
    """Two workers, each free in turn: a batch waits for its worker's share
    of the clients, not for all of them (which would leave the other worker
    idle): batches of 16 each for 32 clients, full batches for 64."""
    sim = Sim(ADAPTIVE, mlp, workers=2)
    await sim.closed_loop(clients, until=0.4)
    later = [b for b in sim.batches if b.started >= sim.batches[0].started + 0.1]
    assert {b.worker for b in later} == {0, 1}
    share = min(32, clients // 2)
    sizes = [b.size for b in later]
    assert sum(sizes) / len(sizes) >= share - 1
    assert max(sim.waits()) <= CAP


async def test_steady_high_rate_waits_and_forms_full_batches():
    """Open loop, a call every 0.25 ms, batches of up to 8 that take 1 ms +
    0.1 ms a call: without a window they would hold about 6 and a half."""

    def service(size: int) -> float:
        return 0.001 + 0.0001 * size

    policy = BatchPolicy(max_batch_size=8)
    sim = Sim(policy, service)
    await sim.open_loop([i * 0.00025 for i in range(1600)], until=0.4)
    later = sim.sizes(after=0.05)
    assert sum(size == 8 for size in later) >= 0.95 * len(later)
    assert max(sim.waits()) > 0  # it did wait for companions
    assert max(sim.waits()) <= CAP

    fixed = Sim(BatchPolicy(max_batch_size=8, max_delay=0.0), service)
    await fixed.open_loop([i * 0.00025 for i in range(1600)], until=0.4)
    assert sum(fixed.sizes(after=0.05)) / len(fixed.sizes(after=0.05)) < 7.5


async def test_burst_then_silence_goes_when_the_burst_ends():
    """A busy queue (a call every 0.2 ms while the worker computes), then a
    burst of four while the worker is free, then nothing: the batch goes a
    few mean gaps after the burst, not at the cap."""
    sim = Sim(ADAPTIVE, lambda size: 0.004)
    await sim.open_loop([i * 0.0002 for i in range(500)], until=0.1)
    await sim.open_loop([], until=0.01)  # the queue drains; all answered
    assert not len(sim.queue) and not sim.dispatcher.held(sim.worker)
    before = len(sim.batches)
    burst = [i * 0.0001 for i in range(4)]
    await sim.open_loop(burst, until=0.02)
    (batch,) = sim.batches[before:]
    last = batch.oldest + burst[-1]
    rate = sim.queue.window.rate
    assert batch.size == 4
    assert batch.started == pytest.approx(last + SILENCE_GAPS / rate, abs=2 * TICK)
    assert batch.started - batch.oldest < CAP - 0.001


@pytest.mark.parametrize("gap", [0.0001, 0.0005, 0.002])
async def test_the_cap_bounds_every_wait(gap):
    """Calls every ``gap``, a worker that is fast (never the bottleneck):
    whatever the window decides, no batch waits more than the cap."""
    sim = Sim(ADAPTIVE, lambda size: 0.0003)
    await sim.open_loop([i * gap for i in range(int(0.3 / gap))], until=0.3)
    assert max(sim.waits()) <= CAP


async def test_a_full_batch_goes_at_once():
    """40 calls at once while more are expected (the window learned a busy
    queue of 64): the first 32 go in the tick they arrived."""
    sim = Sim(ADAPTIVE, mlp)
    await sim.open_loop([i * 0.0001 for i in range(64)], until=0.06)
    assert not len(sim.queue) and not sim.dispatcher.held(sim.worker)
    before = len(sim.batches)
    await sim.open_loop([0.0] * 40, until=0.03)
    full = sim.batches[before]
    assert full.size == 32
    assert full.started == full.oldest


async def test_explicit_delay_keeps_the_fixed_window():
    sim = Sim(FIVE_MS, mlp)
    await sim.open_loop([0.0, 0.001], until=0.03)
    (batch,) = sim.batches
    assert batch.size == 2
    assert batch.started - batch.oldest == pytest.approx(0.005, abs=2 * TICK)


async def test_delay_zero_never_waits():
    sim = Sim(NO_DELAY, mlp)
    await sim.closed_loop(32, until=0.3)
    await sim.open_loop([i * 0.0002 for i in range(200)], until=0.1)
    assert max(sim.waits()) == 0.0
