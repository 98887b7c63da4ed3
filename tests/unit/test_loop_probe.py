"""The event-loop stall probe the other tests rely on (``tests/loop_probe.py``)."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from tests.loop_probe import LoopStallProbe

STALL = 0.2


async def test_a_quiet_loop_has_no_stall() -> None:
    async with LoopStallProbe() as probe:
        await asyncio.sleep(0.1)  # the quiet period under test, not ordering
    assert probe.wakeups >= 5, probe
    assert probe.longest < 0.05, probe


async def test_blocking_the_loop_is_seen() -> None:
    async with LoopStallProbe() as probe:
        await _wakeup(probe)
        time.sleep(STALL)  # the stall under test, on the loop
        await _wakeup(probe)
    assert STALL * 0.9 <= probe.longest < STALL + 0.1, probe


@pytest.mark.parametrize("where", ["first", "last"])
async def test_a_stall_at_either_end_of_the_block_is_seen(where: str) -> None:
    async with LoopStallProbe() as probe:
        if where == "last":
            await _wakeup(probe)
        time.sleep(STALL)  # the stall under test, on the loop
    assert probe.longest >= STALL * 0.9, probe


async def test_an_error_in_the_block_goes_through_and_the_probe_stops() -> None:
    probe = LoopStallProbe()
    with pytest.raises(KeyError):
        async with probe:
            raise KeyError("boom")
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "loop stall probe"]
    async with probe:  # usable again
        await _wakeup(probe)
    assert probe.wakeups >= 1


async def test_the_heap_from_before_is_frozen_only_while_active() -> None:
    """A full collection in the block walks what the block made, not the
    whole test process; the freeze is lifted at the end, error or not."""
    kept = [[i] for i in range(1000)]  # live containers made before the probe
    with pytest.raises(KeyError):
        async with LoopStallProbe():
            assert gc.get_freeze_count() >= len(kept)
            made = [[i] for i in range(10)]
            assert any(obj is made for obj in gc.get_objects())  # not frozen
            raise KeyError("boom")
    assert gc.get_freeze_count() == 0


async def _wakeup(probe: LoopStallProbe) -> None:
    """Wait (5 s at most) until the probe has woken once more: it is
    watching before a stall, and has seen the loop free after it."""
    seen = probe.wakeups
    deadline = time.monotonic() + 5
    while probe.wakeups == seen and time.monotonic() < deadline:
        await asyncio.sleep(0)
    assert probe.wakeups > seen, probe


def _compute(seconds: float) -> None:
    """Hold the loop's thread computing (as a big body's parse does)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


async def test_cpu_bound_counts_a_stall_that_computes() -> None:
    async with LoopStallProbe(cpu_bound=True) as probe:
        await _wakeup(probe)
        _compute(STALL)  # the stall under test, on the loop
        await _wakeup(probe)
    # On a CPU for STALL: the wall time may be longer on a busy machine.
    assert STALL * 0.9 <= probe.longest < STALL + 0.1, probe


async def test_cpu_bound_leaves_out_waiting_that_computes_nothing() -> None:
    """The time the process spends off a CPU (here a sleep on the loop,
    standing for the operating system giving the core to others) is not
    counted in this mode; the default mode counts it."""
    async with LoopStallProbe(cpu_bound=True) as probe:
        await _wakeup(probe)
        time.sleep(STALL)  # the off-CPU wait under test, on the loop
        await _wakeup(probe)
    assert probe.wakeups >= 2 and probe.longest < STALL / 2, probe
