"""How long the event loop was kept from running other work: a stall probe.

A handler that does blocking work on the loop (a slow NVML call, SQLite under
a lock, parsing thousands of form parts) answers correctly and still holds
up every other request while it runs. Correctness tests cannot see that;
this probe can::

    async with LoopStallProbe() as probe:
        await client.get("/metrics")
    assert probe.longest < 0.05, probe

While active, a task on the same loop asks to wake up every ``period``
seconds and records how late each wake-up came: the longest lateness is the
longest the loop was kept from running anything else (plus timer jitter,
well under a millisecond on an idle machine). A stall still going on when
the block ends (blocking code right before ``__aexit__``) is counted too,
as is one right after ``__aenter__``: the first wake-up is due from then.

Python's cyclic garbage collector walks every live container while holding
the GIL; in a test process that has imported TensorFlow or run hundreds of
tests before, one full collection takes 60 ms idle and over 300 ms on a
busy 2-core machine, whatever the measured code does. While the probe is
active the objects that existed before it are frozen (:func:`gc.freeze`),
so a collection during the block walks only what the block made: what the
measured code allocates is still counted, the rest of the process is not.

``cpu_bound=True`` counts of each late wake-up only what this process spent
on a CPU meanwhile (:func:`time.process_time`, all its threads): the stall
of code that holds the GIL computing (parsing a big body, joining 50 MB),
without the time the operating system kept the whole process waiting for a
core, which on a busy 2-core machine (CI with other work beside it) added
0.1-0.2 s to a 51 MB body's 0.3 s. Not for stalls that wait rather than
compute (a lock, a slow call, I/O): those burn no CPU and would read 0.
"""

from __future__ import annotations

import asyncio
import gc
import time
from types import TracebackType

#: Longest one big body (a JSON body or an infer tensor of millions of
#: elements) may hold the loop. Parsed whole on the loop, or in a thread
#: holding the GIL, such bodies held it 0.5 to 2 s. Parsed cooperatively,
#: single C calls still hold the GIL (joining 25 MB, freeing a list of 4
#: million numbers, splitting 4 million BYTES elements); in CI's VM, whose
#: memory is slow to touch the first time, they reached 0.28-0.34 s.
BIG_BODY_STALL_S = 0.4


class LoopStallProbe:
    """An async context manager measuring the loop it runs on.

    ``longest`` is the worst lateness seen, in seconds; ``wakeups`` the
    number of wake-ups (a probe that never woke up measured nothing).
    """

    def __init__(self, period: float = 0.005, *, cpu_bound: bool = False) -> None:
        self.period = period
        self.cpu_bound = cpu_bound
        self._cpu_set = 0.0  # the process's CPU time when the wake-up was set
        self.longest = 0.0
        self.wakeups = 0
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return (
            f"LoopStallProbe(longest={self.longest * 1000:.1f}ms, "
            f"wakeups={self.wakeups})"
        )

    async def __aenter__(self) -> LoopStallProbe:
        if self._task is not None:
            raise RuntimeError("LoopStallProbe is already active")
        self._loop = asyncio.get_running_loop()
        gc.freeze()
        # Due from now, not from when the task first runs: blocking code
        # right after the ``async with`` line is measured too.
        self._due = self._loop.time() + self.period
        self._cpu_set = time.process_time()
        self._task = self._loop.create_task(self._watch(), name="loop stall probe")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._loop is not None and self._task is not None
        # The wake-up still pending may be late already (blocking code right
        # before the end of the block): count it, the task will not run again.
        self._note(self._loop.time())
        task, self._task = self._task, None
        task.cancel()
        await asyncio.wait({task})
        gc.unfreeze()
        if not task.cancelled() and task.exception() is not None:
            raise RuntimeError("LoopStallProbe failed") from task.exception()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, self._due - loop.time()))
            now = loop.time()
            self._note(now)
            self.wakeups += 1
            self._due = now + self.period
            self._cpu_set = time.process_time()

    def _note(self, now: float) -> None:
        late = now - self._due
        if self.cpu_bound:  # of it, what the process computed past the period
            late = min(late, time.process_time() - self._cpu_set - self.period)
        self.longest = max(self.longest, late)
