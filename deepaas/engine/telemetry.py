"""GPU telemetry: NVML read every second in the background, never on the loop.

:class:`Telemetry` samples the devices deepaas uses on a thread of its own
(:meth:`deepaas.engine.devices.Nvml.sample`): an NVML call takes
milliseconds on a healthy GPU but can block for seconds on one in trouble,
and ``/metrics`` and ``/v2/system/`` must answer at once all the same. They
read the last reading and never call NVML.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from deepaas.engine.devices import Device, GpuSample, Nvml
from deepaas.tasks import TaskSet, on_daemon_thread

LOG = logging.getLogger(__name__)


# How long Telemetry.start waits for the first reading (so the first scrape
# after start-up has GPU gauges), and how long Telemetry.aclose waits for a
# reading in progress to end before NVML is shut down under it.
FIRST_READING_WAIT_S = 2.0
CLOSE_WAIT_S = 0.5


@dataclasses.dataclass(frozen=True)
class _Reading:
    at: float  # time.monotonic() when it was complete
    samples: Mapping[str, GpuSample]


class Telemetry:
    """The GPUs' latest NVML reading, taken in the background, for metrics and system.

    :meth:`start` (awaited when the app starts) runs a sampler task that
    reads every GPU in ``devices`` once every ``min_interval`` seconds: each
    reading on a daemon thread of its own (``deepaas-nvml``), never on the
    event loop.
    :meth:`read` returns the last reading at once, from any thread, and
    never calls NVML, so scrapes and page loads in bursts cost nothing and a
    slow NVML cannot stall a request.

    - The first reading is taken while :meth:`start` waits (at most
      :data:`FIRST_READING_WAIT_S`); until there is one, :meth:`read` is
      ``{}`` (no GPU gauges, ``"telemetry": null``).
    - At most one reading is in progress: a slow or hung NVML call delays
      the next reading, it never adds a thread.
    - A reading that fails is logged once (and once more when NVML answers
      again); the sampler keeps going.
    - A reading older than ``max_age`` seconds (NVML hung) is not served:
      readers get ``{}`` rather than numbers that look current.
    - :meth:`aclose` stops the sampler and waits for a reading in progress
      at most :data:`CLOSE_WAIT_S`, so that NVML can be shut down after it.

    A reading maps a device's label (``cuda:0``, ``cuda:MIG-...``) to its
    :class:`GpuSample` (base units: ratio, bytes, degrees Celsius, watts); a
    GPU NVML cannot read is left out.
    """

    def __init__(
        self,
        nvml: Nvml | None,
        devices: list[Device],
        *,
        min_interval: float = 1.0,
        max_age: float = 10.0,
    ) -> None:
        self.devices = [d for d in devices if d.kind == "cuda"]
        self._nvml = nvml
        self._min_interval = min_interval
        self._max_age = max_age
        self._latest: _Reading | None = None  # replaced whole, never mutated
        self._tasks = TaskSet("GPU telemetry")
        self._started = False
        self._closing = threading.Event()  # seen by the sampling thread
        self._pending: concurrent.futures.Future[Any] | None = None
        self._failing = False  # said so already, until a reading succeeds
        self._hung = False

    def read(self) -> dict[str, GpuSample]:
        """The last reading of each GPU, by label; ``{}`` before the first.

        Never calls NVML: safe on the event loop and on any thread.
        """
        latest = self._latest
        if latest is None or time.monotonic() - latest.at > self._max_age:
            return {}
        return dict(latest.samples)

    def refresh(self) -> dict[str, GpuSample]:
        """Read every GPU now, keep the reading for :meth:`read`, and return it.

        Blocks for as long as NVML takes: the sampler runs it on its own
        thread; never call it on the event loop.
        """
        if self._nvml is None:
            return {}
        samples: dict[str, GpuSample] = {}
        for device in self.devices:
            if self._closing.is_set():  # stopping: leave NVML alone
                return samples
            sample = self._nvml.sample(device)
            if sample is not None:
                samples[device.label] = sample
        self._latest = _Reading(time.monotonic(), samples)
        return dict(samples)

    async def start(self) -> None:
        """Start the sampler and wait (boundedly) for its first reading.

        Does nothing without NVML or GPUs. Call it once, on the loop that
        will call :meth:`aclose`.
        """
        if self._started or self._nvml is None or not self.devices:
            return
        self._started = True
        first = asyncio.Event()
        self._tasks.spawn(self._sample_forever(first), "sampler")
        try:
            await asyncio.wait_for(first.wait(), FIRST_READING_WAIT_S)
        except asyncio.TimeoutError:  # not the builtin one before Python 3.11
            LOG.warning(
                "GPU telemetry: the first NVML reading takes more than %gs; "
                "serving without GPU gauges until it comes",
                FIRST_READING_WAIT_S,
            )

    async def aclose(self) -> None:
        """Stop the sampler; wait for a reading in progress, boundedly.

        Returns within about :data:`CLOSE_WAIT_S` even when NVML hangs (the
        thread is a daemon: it cannot keep the process from exiting). Safe
        to call twice, or without :meth:`start`.
        """
        self._closing.set()
        await self._tasks.close()
        pending = self._pending
        if pending is None or pending.done():
            return
        waiter = asyncio.wrap_future(pending)
        done, _ = await asyncio.wait({waiter}, timeout=CLOSE_WAIT_S)
        if done:
            waiter.exception()  # retrieved: it was logged when it mattered
        else:
            waiter.cancel()
            LOG.info("GPU telemetry: NVML is still answering; stopping anyway")

    async def _sample_forever(self, first: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._sample_once()
            first.set()
            await asyncio.sleep(max(0.0, started + self._min_interval - loop.time()))

    async def _sample_once(self) -> None:
        """One reading on the sampling thread; its failure or hang is logged."""
        pending = self._pending = on_daemon_thread(self.refresh, "deepaas-nvml")
        waiter = asyncio.wrap_future(pending)
        try:
            done, _ = await asyncio.wait({waiter}, timeout=self._max_age)
            if not done:
                self._hung = True
                LOG.warning(
                    "GPU telemetry: NVML has not answered for %gs; GPU gauges "
                    "are left out until it does",
                    self._max_age,
                )
                await asyncio.wait({waiter})
            exc = waiter.exception()
        finally:
            if not waiter.done():  # cancelled: stopping
                waiter.cancel()
        if exc is not None:
            if not self._failing:
                self._failing = True
                LOG.warning(
                    "GPU telemetry: reading NVML failed (%s); trying again every %gs",
                    exc,
                    self._min_interval,
                    exc_info=exc,
                )
            return
        if self._failing or self._hung:
            LOG.info("GPU telemetry: NVML answers again")
        self._failing = self._hung = False
