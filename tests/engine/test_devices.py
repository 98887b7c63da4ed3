"""Devices, ``--devices`` and GPU telemetry, tested at the pynvml boundary.

A fake pynvml is put where ``import pynvml`` finds it, so :meth:`Nvml.open`
takes the same path it takes on a GPU host. The last tests use the real
nvidia-ml-py: on this machine (no driver) it must fail quietly; on a GPU
host it must describe the GPUs. What a reading holds is tested through
:meth:`Telemetry.refresh` (one reading, taken on the calling thread); the
background sampler itself in ``test_telemetry.py``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time

import pynvml as real_pynvml
import pytest

from deepaas.engine.devices import (
    CPU,
    Device,
    DeviceError,
    GpuSample,
    Nvml,
)
from deepaas.engine.selection import assign, select_devices
from deepaas.engine.telemetry import Telemetry
from tests.fakes.nvml import (
    GIB,
    DriverNotLoaded,
    FakeGpu,
    FakePynvml,
    GpuIsLost,
    LibraryNotFound,
    NotSupported,
)

UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
MIG0 = "MIG-99999999-8888-7777-6666-555555555555"
MIG1 = "MIG-12345678-8888-7777-6666-555555555555"
LOGGER = "deepaas.engine.devices"


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(UUID0, name="NVIDIA H100 80GB HBM3", memory_total=80 * GIB),
        FakeGpu(UUID1, name="NVIDIA A100-SXM4-40GB", memory_total=40 * GIB),
    ]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePynvml:
    """Two GPUs behind ``import pynvml``."""
    module = FakePynvml(two_gpus())
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


@pytest.fixture
def nvml(fake: FakePynvml) -> Nvml:
    opened = Nvml.open()
    assert opened is not None
    return opened


def gpu(index: int | None, uuid: str | None = None, **kw: object) -> Device:
    fields: dict = {"name": f"cuda:{index}", "memory_total": None}
    fields.update(kw)
    return Device("cuda", index, uuid, **fields)


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.INFO]


# --- auto -----------------------------------------------------------------


def test_auto_uses_every_gpu_nvml_reports(nvml: Nvml) -> None:
    assert select_devices("auto", nvml) == [
        Device("cuda", 0, UUID0, "NVIDIA H100 80GB HBM3", 80 * GIB),
        Device("cuda", 1, UUID1, "NVIDIA A100-SXM4-40GB", 40 * GIB),
    ]


@pytest.mark.parametrize(
    ("error", "level"),
    [(LibraryNotFound, logging.INFO), (DriverNotLoaded, logging.WARNING)],
)
def test_auto_is_cpu_when_nvml_init_fails_said_once(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: type[Exception],
    level: int,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(two_gpus(), error))
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    nvml = Nvml.open()
    assert nvml is None
    assert select_devices("auto", nvml) == [CPU]

    [line] = records(caplog)
    assert line.levelno == level
    assert "NVML unavailable" in line.getMessage()
    assert str(error()) in line.getMessage()


def test_auto_is_cpu_when_pynvml_is_not_importable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    nvml = Nvml.open()
    assert nvml is None
    assert select_devices("auto", nvml) == [CPU]
    [line] = records(caplog)
    assert "pynvml" in line.getMessage()


def test_auto_is_cpu_when_nvml_reports_no_gpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml([]))
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert select_devices("auto", Nvml.open()) == [CPU]
    [line] = records(caplog)
    assert "no usable GPU" in line.getMessage()


def test_auto_leaves_out_a_gpu_nvml_cannot_open(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gpus = two_gpus()
    gpus[0].fail["nvmlDeviceGetHandleByIndex"] = GpuIsLost
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(gpus))
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    [device] = select_devices("auto", Nvml.open())
    assert (device.index, device.uuid) == (1, UUID1)
    [line] = records(caplog)
    assert line.levelno == logging.WARNING
    assert "GPU 0" in line.getMessage()


def test_auto_survives_missing_details(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = two_gpus()
    gpus[1].fail.update(
        nvmlDeviceGetName=NotSupported,
        nvmlDeviceGetUUID=NotSupported,
        nvmlDeviceGetMemoryInfo=NotSupported,
    )
    gpus[0].name = b"Tesla V100-SXM2-16GB"  # old nvidia-ml-py returns bytes
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(gpus))

    first, second = select_devices("auto", Nvml.open())
    assert first.name == "Tesla V100-SXM2-16GB"
    assert second == gpu(1)


def test_auto_uses_mig_slices_instead_of_their_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpus = two_gpus()
    gpus[1].mig_mode = 1
    gpus[1].mig = [
        FakeGpu(MIG0, name="NVIDIA A100-SXM4-40GB MIG 1g.5gb", memory_total=5 * GIB),
        FakeGpu(MIG1, name="NVIDIA A100-SXM4-40GB MIG 2g.10gb", memory_total=10 * GIB),
    ]
    gpus[0].mig_mode = 0  # MIG-capable, off
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(gpus))

    devices = select_devices("auto", Nvml.open())
    assert [(d.index, d.uuid, d.memory_total) for d in devices] == [
        (0, UUID0, 80 * GIB),
        (None, MIG0, 5 * GIB),
        (None, MIG1, 10 * GIB),
    ]
    assert devices[1].label == f"cuda:{MIG0}"
    assert devices[1].worker_env()["CUDA_VISIBLE_DEVICES"] == MIG0


def test_a_gpu_in_mig_mode_without_slices_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpus = two_gpus()
    gpus[0].mig_mode = 1
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(gpus))
    assert [d.uuid for d in select_devices("auto", Nvml.open())] == [UUID1]


# --- cpu and explicit lists -------------------------------------------------


@pytest.mark.parametrize("spec", ["cpu", " CPU "])
def test_cpu_uses_no_gpu_even_with_nvml(nvml: Nvml, spec: str) -> None:
    assert select_devices(spec, nvml) == [CPU]
    assert select_devices(spec, None) == [CPU]


def test_explicit_indices_without_nvml_are_used_as_given() -> None:
    assert select_devices("0,1", None) == [gpu(0), gpu(1)]
    assert select_devices(" 3 , 1 ", None) == [gpu(3), gpu(1)]


def test_explicit_uuids_without_nvml_are_used_as_given() -> None:
    assert select_devices(f"{UUID1},{MIG0}", None) == [
        Device("cuda", None, UUID1, UUID1, None),
        Device("cuda", None, MIG0, MIG0, None),
    ]


def test_legacy_mig_names_are_accepted() -> None:
    legacy = f"MIG-{UUID0}/1/0"
    [device] = select_devices(legacy, None)
    assert device.worker_env()["CUDA_VISIBLE_DEVICES"] == legacy


def test_mixed_list_without_nvml() -> None:
    assert select_devices(f"1,{UUID0}", None) == [
        gpu(1),
        Device("cuda", None, UUID0, UUID0, None),
    ]


def test_listed_devices_are_enriched_from_nvml(nvml: Nvml) -> None:
    h100, a100 = nvml.devices()
    assert select_devices("1", nvml) == [a100]
    assert select_devices(UUID0, nvml) == [h100]
    assert select_devices("GPU-aaaaaaaa", nvml) == [a100]  # unique prefix, as CUDA
    assert select_devices(f"7,{UUID1},GPU-0ff", nvml) == [
        gpu(7),  # unknown to NVML: kept as given
        a100,
        Device("cuda", None, "GPU-0ff", "GPU-0ff", None),
    ]


def test_listed_mig_slice_is_enriched(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = two_gpus()
    gpus[0].mig_mode = 1
    gpus[0].mig = [FakeGpu(MIG0, name="H100 MIG 1g.10gb", memory_total=10 * GIB)]
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(gpus))
    nvml = Nvml.open()
    assert select_devices(MIG0, nvml) == [
        Device("cuda", None, MIG0, "H100 MIG 1g.10gb", 10 * GIB)
    ]
    # the whole GPU can still be named by index, as given
    assert select_devices("0", nvml)[0].uuid == UUID0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("  ", "empty"),
        ("0,,1", "empty item"),
        ("0,", "empty item"),
        ("-1", "negative index '-1'"),
        ("0,-2", "negative index '-2'"),
        ("abc", "'abc' is neither a GPU index"),
        ("gpu0", "neither a GPU index"),
        ("1.5", "neither a GPU index"),
        ("0 1", "'0 1' is neither"),
        ("GPU-", "neither a GPU index"),
        ("cuda:0", "neither a GPU index"),
        ("0,cpu", "'cpu' cannot be part of a list"),
        ("auto,1", "'auto' cannot be part of a list"),
        ("0,0", "names one GPU twice ('0' and '0')"),
        ("1, 01", "names one GPU twice ('1' and '01')"),
        (f"{UUID0},{UUID0}", "names one GPU twice"),
    ],
)
def test_bad_values_say_why(spec: str, message: str) -> None:
    with pytest.raises(DeviceError, match=re.escape(message)):
        select_devices(spec, None)


def test_index_and_uuid_of_one_gpu_are_a_duplicate(nvml: Nvml) -> None:
    with pytest.raises(DeviceError, match=re.escape(f"('0' and '{UUID0}')")):
        select_devices(f"0,{UUID0}", nvml)


def test_ambiguous_uuid_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = two_gpus()
    gpus[1].uuid = UUID0[:-1] + "6"
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(gpus))
    with pytest.raises(DeviceError, match="start of several"):
        select_devices("GPU-1111", Nvml.open())


def test_device_error_is_a_value_error() -> None:
    assert issubclass(DeviceError, ValueError)


# --- what a worker is given ---------------------------------------------------


def test_worker_env_prefers_the_uuid(nvml: Nvml) -> None:
    [device] = select_devices("1", nvml)
    assert device.worker_env() == {
        "CUDA_VISIBLE_DEVICES": UUID1,
        "DEEPAAS_DEVICE": "cuda:0",
        "DEEPAAS_DEVICES": "cuda:0",
    }


def test_worker_env_by_index_asks_cuda_for_pci_order() -> None:
    assert gpu(1).worker_env() == {
        "CUDA_VISIBLE_DEVICES": "1",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "DEEPAAS_DEVICE": "cuda:0",
        "DEEPAAS_DEVICES": "cuda:0",
    }


def test_worker_env_for_cpu_hides_every_gpu() -> None:
    assert CPU.worker_env() == {
        "CUDA_VISIBLE_DEVICES": "",
        "DEEPAAS_DEVICE": "cpu",
        "DEEPAAS_DEVICES": "cpu",
    }


def test_labels() -> None:
    assert CPU.label == "cpu"
    assert gpu(0, UUID0).label == "cuda:0"
    assert gpu(None, UUID1).label == f"cuda:{UUID1}"


@pytest.mark.parametrize(
    ("workers", "expected"), [(3, [0, 1, 0]), (1, [0]), (4, [0, 1, 0, 1]), (0, [])]
)
def test_assign_round_robin(workers: int, expected: list[int]) -> None:
    devices = [gpu(0), gpu(1)]
    assert [d.index for d in assign(devices, workers)] == expected


def test_assign_on_cpu_and_nothing() -> None:
    assert assign([CPU], 2) == [CPU, CPU]
    with pytest.raises(ValueError, match="no devices"):
        assign([], 1)


# --- telemetry ----------------------------------------------------------------


def test_sample_is_in_base_units(nvml: Nvml) -> None:
    h100, _ = nvml.devices()
    assert nvml.sample(h100) == GpuSample(
        utilization_ratio=0.5,
        memory_used_bytes=2 * GIB,
        memory_total_bytes=80 * GIB,
        temperature_celsius=41.0,
        power_watts=312.5,
    )


def test_memory_used_leaves_out_what_the_driver_reserves(fake: FakePynvml) -> None:
    """As nvidia-smi shows it: NVML's v2 memory query (v1 counts the
    driver's reservation as used)."""
    fake.gpus[0].memory_reserved = GIB // 2
    opened = Nvml.open()
    assert opened is not None
    h100, _ = opened.devices()
    sample = opened.sample(h100)
    assert sample is not None
    assert sample.memory_used_bytes == 2 * GIB


def test_memory_falls_back_to_v1_on_an_old_driver(fake: FakePynvml) -> None:
    for fake_gpu in fake.gpus:
        fake_gpu.memory_reserved = GIB // 2
        fake_gpu.memory_v2 = False  # no nvmlDeviceGetMemoryInfo_v2
    opened = Nvml.open()
    assert opened is not None
    h100, _ = opened.devices()
    assert h100.memory_total == 80 * GIB
    for _ in range(2):  # and again, with v1 remembered
        sample = opened.sample(h100)
        assert sample is not None
        assert sample.memory_used_bytes == 2 * GIB + GIB // 2  # v1 counts it


async def test_readers_share_the_last_reading(fake: FakePynvml, nvml: Nvml) -> None:
    """Only the sampler calls NVML: a burst of readers costs no NVML call."""
    telemetry = Telemetry(nvml, nvml.devices(), min_interval=3600)
    await telemetry.start()  # returns once the first reading is in
    try:
        first = telemetry.read()
        assert set(first) == {"cuda:0", "cuda:1"}
        calls = sum(fake.calls.values())
        fake.gpus[0].utilization_percent = 90
        for _ in range(1000):
            assert telemetry.read() == first
        assert sum(fake.calls.values()) == calls
    finally:
        await telemetry.aclose()


async def test_telemetry_is_read_once_per_interval(
    fake: FakePynvml, nvml: Nvml
) -> None:
    interval = 0.05
    telemetry = Telemetry(nvml, nvml.devices(), min_interval=interval)
    utilization = "nvmlDeviceGetUtilizationRates"
    await telemetry.start()
    try:
        started = time.monotonic()
        fake.gpus[0].utilization_percent = 90
        more = 4  # readings after the first, two GPUs each
        while fake.calls[utilization] < 2 * (1 + more):
            assert time.monotonic() < started + 10, fake.calls
            await asyncio.sleep(0.005)
        # a reading starts at most once per interval, however fast NVML is
        assert time.monotonic() - started >= (more - 1) * interval
        while telemetry.read()["cuda:0"].utilization_ratio != 0.9:
            assert time.monotonic() < started + 10, telemetry.read()
            await asyncio.sleep(0.005)
    finally:
        await telemetry.aclose()


def test_unsupported_field_is_none_and_the_rest_present(
    fake: FakePynvml, nvml: Nvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    fake.gpus[0].fail["nvmlDeviceGetUtilizationRates"] = NotSupported
    fake.gpus[1].fail["nvmlDeviceGetPowerUsage"] = NotSupported
    telemetry = Telemetry(nvml, nvml.devices())

    for _ in range(3):
        samples = telemetry.refresh()
    assert telemetry.read() == samples
    assert samples["cuda:0"] == GpuSample(None, 2 * GIB, 80 * GIB, 41.0, 312.5)
    assert samples["cuda:1"].power_watts is None
    assert samples["cuda:1"].utilization_ratio == 0.5
    # said once per device and field, at debug level, not every second
    said = [r for r in caplog.records if r.name == LOGGER]
    assert len(said) == 2
    assert all(r.levelno == logging.DEBUG for r in said)


def test_a_gpu_nvml_cannot_read_is_left_out(fake: FakePynvml, nvml: Nvml) -> None:
    devices = nvml.devices()
    for name in (
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetPowerUsage",
    ):
        fake.gpus[1].fail[name] = GpuIsLost
    assert set(Telemetry(nvml, devices).refresh()) == {"cuda:0"}


def test_a_device_nvml_cannot_find_is_left_out(nvml: Nvml) -> None:
    devices = [*nvml.devices(), gpu(None, "GPU-0ff"), gpu(7)]
    assert set(Telemetry(nvml, devices).refresh()) == {"cuda:0", "cuda:1"}


def test_listed_index_without_uuid_is_sampled_by_index(
    fake: FakePynvml, nvml: Nvml
) -> None:
    assert nvml.sample(gpu(1)) is not None
    assert fake.calls["nvmlDeviceGetHandleByUUID"] == 0


def test_mig_slice_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = two_gpus()
    gpus[0].mig_mode = 1
    mig = FakeGpu(MIG0, memory_total=10 * GIB, memory_used=GIB)
    mig.fail.update(
        nvmlDeviceGetUtilizationRates=NotSupported,
        nvmlDeviceGetTemperature=NotSupported,
        nvmlDeviceGetPowerUsage=NotSupported,
    )
    gpus[0].mig = [mig]
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(gpus))
    nvml = Nvml.open()
    assert nvml is not None
    samples = Telemetry(nvml, nvml.devices()).refresh()
    assert samples[f"cuda:{MIG0}"] == GpuSample(None, GIB, 10 * GIB, None, None)


async def test_telemetry_without_nvml_or_gpus_is_empty(
    fake: FakePynvml, nvml: Nvml
) -> None:
    for telemetry in (Telemetry(None, [gpu(0)]), Telemetry(nvml, [CPU])):
        await telemetry.start()  # nothing to sample: no sampler
        assert telemetry.refresh() == {}
        assert telemetry.read() == {}
        await telemetry.aclose()
    assert nvml.sample(CPU) is None
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == 0


def test_close_shuts_nvml_down_once(fake: FakePynvml, nvml: Nvml) -> None:
    nvml.close()
    nvml.close()
    assert fake.calls["nvmlShutdown"] == 1


# --- the real nvidia-ml-py ------------------------------------------------------


@pytest.fixture
def real_nvml(monkeypatch: pytest.MonkeyPatch) -> Nvml | None:
    """NVML through the real nvidia-ml-py, whatever another test left behind."""
    monkeypatch.setitem(sys.modules, "pynvml", real_pynvml)
    return Nvml.open()


def test_real_nvml_without_a_gpu_is_none(real_nvml: Nvml | None) -> None:
    nvml = real_nvml
    if nvml is not None:
        nvml.close()
        pytest.skip("NVML works here: see test_real_nvml_on_a_gpu")
    assert select_devices("auto", nvml) == [CPU]


def test_real_nvml_on_a_gpu(real_nvml: Nvml | None) -> None:
    nvml = real_nvml
    if nvml is None:
        pytest.skip("no NVIDIA driver here")
    try:
        devices = select_devices("auto", nvml)
        assert devices != [CPU]
        samples = Telemetry(nvml, devices).refresh()
        for device in devices:
            print(device, samples.get(device.label))
            assert device.uuid and device.uuid.startswith(("GPU-", "MIG-"))
            assert device.name and device.memory_total
            sample = samples[device.label]
            assert sample.memory_total_bytes == device.memory_total
            assert (
                sample.utilization_ratio is None or 0 <= sample.utilization_ratio <= 1
            )
            assert device.worker_env()["CUDA_VISIBLE_DEVICES"] == device.uuid
        assert select_devices("0", nvml)[0] == nvml.gpus()[0]
    finally:
        nvml.close()
