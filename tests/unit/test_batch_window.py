"""The batch windows alone: times are plain numbers, nothing runs.

Times are seconds on an arbitrary clock (the dispatcher's); each test plays
arrivals (:meth:`arrived`, with the calls then in the system) and asks when
a batch that is not full goes (:meth:`ready_at`).
"""

from __future__ import annotations

import math

import pytest

from deepaas.engine.window import (
    ADAPTIVE_CAP_S,
    POPULATION_MEMORY_S,
    RATE_TAU_S,
    SILENCE_GAPS,
    AdaptiveWindow,
    FixedWindow,
)

CAP = ADAPTIVE_CAP_S
GAP = 0.0002  # 5,000 calls a second: a busy queue


def busy(window: AdaptiveWindow, until: float, population: int = 32) -> float:
    """Calls arrive every GAP up to ``until`` (the rate estimate settles),
    ``population`` of them in the system each time; returns the time of the
    last arrival."""
    t = until - 5 * RATE_TAU_S
    while t + GAP <= until:
        t += GAP
        window.arrived(t, population)
    return t


# -- fixed ----------------------------------------------------------------------


def test_fixed_delay_runs_from_the_oldest_call():
    window = FixedWindow(0.005)
    assert window.ready_at(10.0, oldest=9.999, queued=1) == pytest.approx(10.004)
    assert window.ready_at(10.0, oldest=9.9, queued=1) == 10.0


def test_fixed_delay_zero_never_waits():
    window = FixedWindow(0.0)
    for t in range(100):
        window.arrived(t * GAP, 50)
    assert window.ready_at(1.0, oldest=1.0, queued=1) == 1.0


# -- adaptive: when it does not wait --------------------------------------------


def test_idle_server_does_not_wait():
    window = AdaptiveWindow()
    window.arrived(5.0, 1)
    assert window.ready_at(5.0, oldest=5.0, queued=1) == 5.0


def test_rate_estimate_decays_when_idle():
    window = AdaptiveWindow()
    last = busy(window, 1.0)
    assert window.rate_at(last) == pytest.approx(1 / GAP, rel=0.02)
    later = last + RATE_TAU_S
    assert window.rate_at(later) == pytest.approx(window.rate_at(last) / math.e)
    # Idle until half a call per window is expected: a call goes at once,
    # however many others the population says may come.
    idle = last + RATE_TAU_S * math.log(window.rate_at(last) * CAP * 2)
    window.arrived(idle, 40)
    assert window.population(idle) == 40
    assert window.ready_at(idle, oldest=idle, queued=1) == idle


def test_slow_arrivals_do_not_wait():
    """A call every 10 ms, slower than one per window: never a wait."""
    window = AdaptiveWindow()
    for i in range(200):
        t = i * 0.010
        window.arrived(t, 2)
        assert window.ready_at(t, oldest=t, queued=1) == t


def test_a_lone_closed_loop_client_does_not_wait():
    """One client sending again as soon as it is answered: a fast rate, but
    the population is 1 and it is here."""
    window = AdaptiveWindow()
    t = 0.0
    for _ in range(500):
        window.arrived(t, 1)
        assert window.ready_at(t, oldest=t, queued=1) == t
        t += 0.0003  # answered 0.3 ms later, sends again at once
    assert window.rate_at(t) * CAP > 10  # the rate alone would have waited


# -- adaptive: how long it waits ------------------------------------------------


def test_waits_while_the_population_is_not_all_here():
    window = AdaptiveWindow()
    last = busy(window, 1.0)
    t = last + GAP
    window.arrived(t, 20)  # 20 of 32 in the system
    due = window.ready_at(t, oldest=t, queued=20)
    assert due > t
    # the last of the 32 arrives: nobody else can come
    window.arrived(t + GAP, 32)
    assert window.ready_at(t + GAP, oldest=t, queued=32) == t + GAP


def test_free_workers_each_wait_for_their_share():
    """32 clients: two free workers each wait for 16; with one free and 16
    held by the other, the free one waits for the 16 the other does not
    hold."""
    window = AdaptiveWindow()
    last = busy(window, 1.0)
    t = last + GAP
    assert window.ready_at(t, oldest=t, queued=15, free=2) > t
    assert window.ready_at(t, oldest=t, queued=16, free=2) == t
    assert window.ready_at(t, oldest=t, queued=15, held=16, free=1) > t
    assert window.ready_at(t, oldest=t, queued=16, held=16, free=1) == t


def test_burst_then_silence_goes_when_the_burst_ends_not_at_the_cap():
    window = AdaptiveWindow()
    last = busy(window, 1.0)
    start = last + GAP
    for i in range(3):  # a burst of three, then nothing
        window.arrived(start + i * GAP, 3 + i)
    end = start + 2 * GAP
    due = window.ready_at(end, oldest=start, queued=5)
    assert due == pytest.approx(end + SILENCE_GAPS / window.rate)
    assert due < start + CAP  # before the cap
    assert due - end < CAP / 2


@pytest.mark.parametrize("gap", [0.00005, 0.0002, 0.001, 0.003])
def test_the_cap_bounds_the_wait(gap):
    """Calls keep trickling in (never silent) and the population is never
    all here: the batch still goes within the cap of its window."""
    window = AdaptiveWindow()
    t = 0.0
    while t < 1.0:
        t += gap
        window.arrived(t, 10_000)
    oldest = t
    now = t
    while window.ready_at(now, oldest, queued=2) > now:
        now += gap / 2
        if now >= t + gap:
            t += gap
            window.arrived(t, 2)
    assert now - oldest == pytest.approx(CAP, abs=gap)  # waited the whole window


def test_window_opens_when_a_worker_frees_up():
    """Calls that waited for a busy worker get a window of their own once
    it has room: the clients it just answered come back and join them."""
    window = AdaptiveWindow()
    last = busy(window, 1.0)
    freed = last + 0.015  # the worker ran a batch for 15 ms
    window.freed(freed)
    due = window.ready_at(freed, oldest=last - 0.010, queued=16)
    assert freed < due <= freed + CAP


def test_population_is_forgotten():
    window = AdaptiveWindow()
    window.arrived(0.0, 32)
    assert window.population(POPULATION_MEMORY_S / 2 - 0.001) == 32
    assert window.population(POPULATION_MEMORY_S - 0.001) == 32
    assert window.population(POPULATION_MEMORY_S * 1.5) == 0
