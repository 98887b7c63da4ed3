"""The GPU telemetry sampler: NVML off the event loop, whatever NVML does.

A fake pynvml (``tests/fakes/nvml.py``) stands for the driver; it can be
made slow (``delay``) or hung (``gate``), and it records which threads
queried it. The last tests serve ``/metrics`` and ``/v2/system/`` from a
real app while NVML is slow or hung, with :class:`LoopStallProbe` watching
the loop. Ordering comes from the fake's state (a query in progress, calls
counted) and the readings themselves, each waited for with a deadline.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deepaas.config import Settings
from deepaas.engine import telemetry as telemetry_module
from deepaas.engine.devices import Device, GpuSample, Nvml
from deepaas.engine.selection import select_devices
from deepaas.engine.telemetry import Telemetry
from deepaas.model.loading import PluginSpec
from deepaas.server import build_app
from tests.engine.conftest import REPO_ROOT
from tests.fakes.nvml import GIB, FakeGpu, FakePynvml, GpuIsLost
from tests.loop_probe import LoopStallProbe

pytestmark = pytest.mark.timeout(60)

UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
LOGGER = "deepaas.engine.telemetry"
THREAD = "deepaas-nvml"
UTILIZATION = "nvmlDeviceGetUtilizationRates"
# The longest the loop may be held up, in seconds: under one NVML query of
# the slow fake (0.2 s), so a scrape that waited for NVML fails, with room
# for a busy 2-core machine (a scrape itself takes a few ms; 65 ms was seen).
STALL_BOUND = 0.15


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePynvml]:
    """Two GPUs behind ``import pynvml``; released and drained at the end."""
    module = FakePynvml(
        [
            FakeGpu(UUID0, memory_total=80 * GIB, utilization_percent=37),
            FakeGpu(UUID1, memory_total=40 * GIB),
        ]
    )
    monkeypatch.setitem(sys.modules, "pynvml", module)
    yield module
    module.delay = 0.0
    module.gate.set()  # a hung reading ends, so no test leaves a thread behind
    for thread in sampling_threads():
        thread.join(timeout=5)


@pytest.fixture
def nvml(fake: FakePynvml) -> Nvml:
    opened = Nvml.open()
    assert opened is not None
    return opened


def sampling_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD]


async def until(condition: Callable[[], Any], what: str, timeout: float = 10) -> None:
    """Wait for ``condition()`` to hold, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def said(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and text in r.getMessage()]


# --- the sampler ------------------------------------------------------------------


async def test_nvml_is_only_called_on_the_sampling_thread(
    fake: FakePynvml, nvml: Nvml
) -> None:
    telemetry = Telemetry(nvml, nvml.devices(), min_interval=0.01)
    fake.threads.clear()  # the inventory was read here, while assembling
    await telemetry.start()
    try:
        await until(lambda: fake.calls[UTILIZATION] >= 6, "three readings")
    finally:
        await telemetry.aclose()
    assert fake.threads  # NVML was read ...
    assert threading.get_ident() not in fake.threads  # ... never on the loop


async def test_a_reading_that_fails_does_not_stop_the_sampler(
    monkeypatch: pytest.MonkeyPatch,
    nvml: Nvml,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    failures = 5
    real_sample = nvml.sample

    def sample(device: Device) -> GpuSample | None:
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("the driver fell over")
        return real_sample(device)

    monkeypatch.setattr(nvml, "sample", sample)
    telemetry = Telemetry(nvml, nvml.devices(), min_interval=0.01)
    await telemetry.start()  # the first reading failed: nothing to serve
    try:
        assert telemetry.read() == {}
        await until(lambda: telemetry.read(), "a reading after the failures")
        assert set(telemetry.read()) == {"cuda:0", "cuda:1"}
        await until(lambda: said(caplog, "NVML answers again"), "it said so")
    finally:
        await telemetry.aclose()
    # said once for five failures, and once when NVML answered again
    (failed,) = said(caplog, "reading NVML failed")
    assert failed.levelno == logging.WARNING
    assert "the driver fell over" in failed.getMessage()
    assert len(said(caplog, "NVML answers again")) == 1
    gc.collect()  # an unretrieved exception would be reported now
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_nvml_errors_leave_a_gpu_out_until_it_answers(
    fake: FakePynvml, nvml: Nvml
) -> None:
    for name in (
        UTILIZATION,
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetPowerUsage",
    ):
        fake.gpus[1].fail[name] = GpuIsLost
    telemetry = Telemetry(nvml, nvml.devices(), min_interval=0.01)
    await telemetry.start()
    try:
        assert set(telemetry.read()) == {"cuda:0"}
        fake.gpus[1].fail.clear()
        await until(lambda: "cuda:1" in telemetry.read(), "the GPU back")
    finally:
        await telemetry.aclose()


async def test_a_hung_nvml_adds_no_thread_and_stale_numbers_are_not_served(
    fake: FakePynvml, nvml: Nvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    max_age = 1.0
    telemetry = Telemetry(nvml, nvml.devices(), min_interval=0.01, max_age=max_age)
    await telemetry.start()
    try:
        first = telemetry.read()
        assert set(first) == {"cuda:0", "cuda:1"}
        fake.gate.clear()
        await until(lambda: fake.in_call, "a query hanging")
        hung_at = time.monotonic()
        assert telemetry.read() == first  # readers get the last reading at once
        # One reading in progress, however long it hangs: a new thread every
        # 10 ms would have made a hundred by the time the reading is stale.
        await until(lambda: telemetry.read() == {}, "the reading to go stale")
        assert time.monotonic() - hung_at >= max_age * 0.5
        await until(lambda: said(caplog, "has not answered"), "a warning")
        assert len(sampling_threads()) == 1
        assert fake.in_call == 1

        fake.gate.set()
        await until(lambda: telemetry.read(), "a reading after the hang")
        await until(lambda: said(caplog, "NVML answers again"), "it said so")
        assert len(said(caplog, "has not answered")) == 1
    finally:
        await telemetry.aclose()


async def test_stop_is_prompt_while_a_slow_reading_is_in_progress(
    fake: FakePynvml, nvml: Nvml
) -> None:
    (h100, _) = nvml.devices()
    telemetry = Telemetry(nvml, [h100], min_interval=0.01)
    await telemetry.start()
    fake.delay = 0.2  # each query: one reading takes 0.8 s
    await until(lambda: fake.in_call, "a slow reading in progress")
    calls = fake.calls[UTILIZATION]
    started = time.monotonic()
    await telemetry.aclose()
    assert time.monotonic() - started < telemetry_module.CLOSE_WAIT_S + 0.3
    for thread in sampling_threads():
        thread.join(timeout=5)
    # The reading in progress ended; no other began.
    assert not sampling_threads()
    assert fake.calls[UTILIZATION] <= calls + 1


async def test_stop_is_bounded_when_nvml_hangs(
    fake: FakePynvml, nvml: Nvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    telemetry = Telemetry(nvml, nvml.devices(), min_interval=0.01)
    await telemetry.start()
    fake.gate.clear()
    await until(lambda: fake.in_call, "a query hanging")
    started = time.monotonic()
    await telemetry.aclose()
    assert time.monotonic() - started < telemetry_module.CLOSE_WAIT_S + 0.3
    assert said(caplog, "stopping anyway")
    assert all(t.daemon for t in sampling_threads())  # cannot block the exit
    await telemetry.aclose()  # twice is fine


# --- /metrics and /v2/system/ from an app ----------------------------------------


def _gauge(text: str, metric: str) -> float | None:
    """The value of ``metric`` for GPU 0 in Prometheus text, or None."""
    for match in re.finditer(rf"^{metric}\{{(.*)\}} (\S+)$", text, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if labels.get("gpu") == "0" and labels.get("uuid") == UUID0:
            return float(match.group(2))
    return None


async def _read_both(client: Any) -> tuple[float | None, Any]:
    """GPU 0's utilisation in ``/metrics`` and in ``/v2/system/``."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    scraped = _gauge(await resp.text(), "deepaas_gpu_utilization_ratio")
    resp = await client.get("/v2/system/")
    assert resp.status == 200
    (device, _) = (await resp.json())["devices"]
    telemetry = device["telemetry"]
    return scraped, None if telemetry is None else telemetry["utilization_ratio"]


async def _app(aiohttp_client: Any, fake: FakePynvml, *, hang: bool = False) -> Any:
    """An app on both fake GPUs, its worker ready; NVML hung at start if asked."""
    spec = PluginSpec("envprobe", "tests.plugins.envprobe")
    app = build_app(Settings(), [spec], extra_path=(str(REPO_ROOT),))
    if hang:  # after the inventory, which is read while assembling
        fake.gate.clear()
    client = await aiohttp_client(app)

    async def ready() -> bool:
        doc = await (await client.get("/v2/system/")).json()
        return any(w["state"] == "ready" for w in doc["workers"])

    deadline = time.monotonic() + 30
    while not await ready():  # a worker starting is not what is measured
        assert time.monotonic() < deadline, "no worker ready"
        await asyncio.sleep(0.02)
    return client


async def test_scrapes_never_wait_for_a_slow_nvml(
    aiohttp_client: Any, fake: FakePynvml
) -> None:
    client = await _app(aiohttp_client, fake)
    # The first reading was taken while the app started.
    assert await _read_both(client) == (0.37, 0.37)

    fake.delay = 0.2  # each query; a reading of two GPUs takes 1.6 s
    fake.gpus[0].utilization_percent = 80
    during_a_reading = 0
    # Each answer is the last reading: the old one, then (a reading may
    # land between the two requests) the new one, never nothing.
    answers = [(0.37, 0.37), (0.37, 0.8), (0.8, 0.8)]
    async with LoopStallProbe() as probe:
        deadline = time.monotonic() + 20
        while True:
            busy = fake.in_call
            both = await _read_both(client)
            during_a_reading += bool(busy and fake.in_call)
            assert both in answers, both
            del answers[: answers.index(both)]  # never back to an older one
            if both == (0.8, 0.8):
                break
            assert time.monotonic() < deadline, "no new reading"
            await asyncio.sleep(0.01)
    assert during_a_reading  # NVML was busy while we read
    assert probe.longest < STALL_BOUND, probe


async def test_scrapes_answer_from_the_last_reading_while_nvml_hangs(
    aiohttp_client: Any, fake: FakePynvml
) -> None:
    client = await _app(aiohttp_client, fake)
    fake.gpus[0].utilization_percent = 80
    fake.gate.clear()
    await until(lambda: fake.in_call, "a query hanging")
    try:
        async with LoopStallProbe() as probe:
            both = await _read_both(client)
        assert both == (0.37, 0.37)
        assert probe.longest < STALL_BOUND, probe
    finally:
        fake.gate.set()


async def test_before_the_first_reading_there_are_no_gpu_numbers(
    aiohttp_client: Any, fake: FakePynvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    try:
        client = await _app(aiohttp_client, fake, hang=True)
        assert said(caplog, "first NVML reading takes more than")
        async with LoopStallProbe() as probe:
            both = await _read_both(client)
        assert both == (None, None)  # no gauge; "telemetry": null
        assert probe.longest < STALL_BOUND, probe
    finally:
        fake.gate.set()

    async def have_numbers() -> bool:
        return await _read_both(client) == (0.37, 0.37)

    deadline = time.monotonic() + 10
    while not await have_numbers():
        assert time.monotonic() < deadline, "no first reading"
        await asyncio.sleep(0.02)


# --- the real nvidia-ml-py ------------------------------------------------------


async def test_real_nvml_sampler_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU host: the sampler reads every GPU, with the loop left free."""
    import pynvml as real_pynvml

    monkeypatch.setitem(sys.modules, "pynvml", real_pynvml)
    nvml = Nvml.open()
    if nvml is None:
        pytest.skip("no NVIDIA driver here")
    try:
        found = select_devices("auto", nvml)
        telemetry = Telemetry(nvml, found, min_interval=0.05)
        async with LoopStallProbe() as probe:
            await telemetry.start()  # the first reading is in when it returns
            samples = telemetry.read()
            await asyncio.sleep(0.5)  # ten more readings, while we watch
            await telemetry.aclose()
        assert probe.longest < STALL_BOUND, probe
        for device in telemetry.devices:
            assert samples[device.label].memory_total_bytes == device.memory_total
    finally:
        nvml.close()
