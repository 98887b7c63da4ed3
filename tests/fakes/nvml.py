"""A fake ``pynvml``: NVML's answers without a GPU or a driver.

Install it where ``import pynvml`` looks, so the code under test takes its
real path::

    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml([FakeGpu(...)]))

Errors are the real nvidia-ml-py classes (``NVMLError_NotSupported``, ...),
so code catches exactly what it would catch on a GPU host. Every call is
counted in ``calls`` by function name.

NVML in trouble can be slow or hang. Every query (each call but
``nvmlInit`` and ``nvmlShutdown``) takes ``delay`` seconds, and blocks while
``gate`` is clear; ``in_call`` counts the queries in progress and
``threads`` holds the ident of each thread that made one, so a test can
tell a reading is under way and that it never ran on the event loop's
thread. All of these can be changed while the fake is in use.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from types import SimpleNamespace
from typing import Any

import pynvml as real

NVMLError = real.NVMLError
NotSupported = real.NVMLError_NotSupported
NotFound = real.NVMLError_NotFound
InvalidArgument = real.NVMLError_InvalidArgument
GpuIsLost = real.NVMLError_GpuIsLost
LibraryNotFound = real.NVMLError_LibraryNotFound
DriverNotLoaded = real.NVMLError_DriverNotLoaded

GIB = 1 << 30


@dataclasses.dataclass
class FakeGpu:
    """One GPU (or MIG slice) as NVML reports it; also serves as its handle."""

    uuid: str
    name: str | bytes = "NVIDIA H100 80GB HBM3"
    memory_total: int = 80 * GIB
    memory_used: int = 2 * GIB  # as nvidia-smi shows it (v2: without reserved)
    memory_reserved: int = 0  # by the driver: counted as used by the v1 query
    memory_v2: bool = True  # the driver has nvmlDeviceGetMemoryInfo_v2
    utilization_percent: int = 50
    temperature: int = 41
    power_mw: int = 312_500
    mig_mode: int | None = None  # None: NVML says NotSupported (no MIG)
    mig: list[FakeGpu] = dataclasses.field(default_factory=list)
    # NVML function name -> error class it raises for this device
    fail: dict[str, type[Exception]] = dataclasses.field(default_factory=dict)


class FakePynvml:
    """The part of the pynvml API deepaas uses."""

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = real.NVML_TEMPERATURE_GPU
    NVML_DEVICE_MIG_ENABLE = real.NVML_DEVICE_MIG_ENABLE
    nvmlMemory_v2 = real.nvmlMemory_v2
    NVMLError_FunctionNotFound = real.NVMLError_FunctionNotFound
    NVMLError_NotSupported = real.NVMLError_NotSupported

    def __init__(
        self, gpus: list[FakeGpu], init_error: type[Exception] | None = None
    ) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.calls: collections.Counter[str] = collections.Counter()
        self.delay = 0.0  # seconds each query takes
        self.gate = threading.Event()  # queries wait while it is clear
        self.gate.set()
        self.in_call = 0  # queries in progress now
        self.threads: set[int] = set()  # idents of the threads that queried
        self._lock = threading.Lock()  # the sampler queries from its thread

    def _check(self, name: str, gpu: FakeGpu | None = None) -> None:
        with self._lock:
            self.calls[name] += 1
        if gpu is not None and name in gpu.fail:
            raise gpu.fail[name]()

    def _query(self, name: str, gpu: FakeGpu | None = None) -> None:
        """A query to the driver: slow, or hung, when the test says so."""
        with self._lock:
            self.in_call += 1
            self.threads.add(threading.get_ident())
        try:
            if self.delay:
                time.sleep(self.delay)
            self.gate.wait()
        finally:
            with self._lock:
                self.in_call -= 1
        self._check(name, gpu)

    def nvmlInit(self) -> None:
        self._check("nvmlInit")
        if self.init_error is not None:
            raise self.init_error()

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        self._query("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._query("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise InvalidArgument()
        gpu = self.gpus[index]
        self._check("nvmlDeviceGetHandleByIndex", gpu)
        return gpu

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu:
        self._query("nvmlDeviceGetHandleByUUID")
        for gpu in self.gpus:
            for candidate in [gpu, *gpu.mig]:
                if candidate.uuid == uuid:
                    self._check("nvmlDeviceGetHandleByUUID", candidate)
                    return candidate
        raise NotFound()

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        self._query("nvmlDeviceGetUUID", gpu)
        return gpu.uuid

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str | bytes:
        self._query("nvmlDeviceGetName", gpu)
        return gpu.name

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu, version: int | None = None) -> Any:
        """v1 (no version): ``used`` counts what the driver reserves, as real
        drivers do; v2 (``version=nvmlMemory_v2``): it does not, and
        ``reserved`` says how much that is (what nvidia-smi shows)."""
        self._query("nvmlDeviceGetMemoryInfo", gpu)
        free = gpu.memory_total - gpu.memory_used - gpu.memory_reserved
        if version is None:
            used = gpu.memory_used + gpu.memory_reserved
            return SimpleNamespace(total=gpu.memory_total, used=used, free=free)
        if not gpu.memory_v2:
            raise real.NVMLError_FunctionNotFound()
        return SimpleNamespace(
            version=version,
            total=gpu.memory_total,
            reserved=gpu.memory_reserved,
            used=gpu.memory_used,
            free=free,
        )

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> Any:
        self._query("nvmlDeviceGetUtilizationRates", gpu)
        return SimpleNamespace(gpu=gpu.utilization_percent, memory=0)

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        self._query("nvmlDeviceGetTemperature", gpu)
        if sensor != real.NVML_TEMPERATURE_GPU:
            raise InvalidArgument()
        return gpu.temperature

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        self._query("nvmlDeviceGetPowerUsage", gpu)
        return gpu.power_mw

    def nvmlDeviceGetMigMode(self, gpu: FakeGpu) -> list[int]:
        self._query("nvmlDeviceGetMigMode", gpu)
        if gpu.mig_mode is None:
            raise NotSupported()
        return [gpu.mig_mode, gpu.mig_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, gpu: FakeGpu) -> int:
        self._query("nvmlDeviceGetMaxMigDeviceCount", gpu)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, gpu: FakeGpu, index: int) -> FakeGpu:
        self._query("nvmlDeviceGetMigDeviceHandleByIndex", gpu)
        if index >= len(gpu.mig):
            raise NotFound()
        return gpu.mig[index]
