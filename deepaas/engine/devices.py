"""What GPUs there are: the inventory through NVML, and :class:`Device`.

NVML (``import pynvml``, from nvidia-ml-py) is optional at run time: on a
machine without the NVIDIA driver, or in a container without the NVML
library, :meth:`Nvml.open` says so once in the log and returns ``None``;
``--devices auto`` then means the CPU, and an explicit list of indices or
UUIDs is still used as given.

Indices are NVML's (the ones ``nvidia-smi`` shows, in PCI bus order). A
worker is pointed at its GPU by UUID whenever we know it, so CUDA's own
device order cannot send it to another GPU.

The inventory is read once, while the server is assembled; which of its
devices are used is :mod:`deepaas.engine.selection`'s choice (``--devices``,
within an inherited ``CUDA_VISIBLE_DEVICES``: :mod:`deepaas.engine.visible`);
readings of the GPUs in use are :mod:`deepaas.engine.telemetry`'s.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

LOG = logging.getLogger(__name__)

T = TypeVar("T")

_MIG_ENABLED = 1  # pynvml.NVML_DEVICE_MIG_ENABLE
_TEMPERATURE_GPU = 0  # pynvml.NVML_TEMPERATURE_GPU


@dataclasses.dataclass(frozen=True)
class Device:
    """One place a worker can run: a GPU, or the CPU."""

    kind: str  # "cuda" or "cpu"
    index: int | None  # NVML index as given or discovered; None for CPU, MIG
    uuid: str | None  # "GPU-..." or "MIG-..." when known
    name: str  # "NVIDIA H100 80GB HBM3", or "cpu"
    memory_total: int | None  # bytes, when known
    # The entry of an inherited CUDA_VISIBLE_DEVICES that named it, when NVML
    # could not tell us its UUID (see deepaas.engine.visible); not compared.
    visible: str | None = dataclasses.field(default=None, compare=False)

    @property
    def label(self) -> str:
        """A short stable name for logs, metrics and ``/v2/system/``."""
        if self.kind == "cpu":
            return "cpu"
        return f"cuda:{self.index if self.index is not None else self.uuid}"

    def worker_env(self) -> dict[str, str]:
        """What a worker child puts in its environment before importing a plugin.

        The child sees only its own GPU, so to the framework it is always
        ``cuda:0``. The UUID is preferred to the index: CUDA numbers GPUs
        fastest-first unless told otherwise, NVML by PCI bus. When only an
        index is known we ask CUDA for PCI order, so the index means what
        ``nvidia-smi`` shows. ``DEEPAAS_DEVICES`` (the list a training job
        sees) is set too, so the server's own ``DEEPAAS_DEVICES`` setting
        never reaches model code with another meaning.
        """
        if self.kind == "cpu":
            return {
                "CUDA_VISIBLE_DEVICES": "",
                "DEEPAAS_DEVICE": "cpu",
                "DEEPAAS_DEVICES": "cpu",
            }
        env = {"DEEPAAS_DEVICE": "cuda:0", "DEEPAAS_DEVICES": "cuda:0"}
        env["CUDA_VISIBLE_DEVICES"], pci_order = self.cuda_name()
        if pci_order:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return env

    def cuda_name(self) -> tuple[str, bool]:
        """How a child's ``CUDA_VISIBLE_DEVICES`` names this GPU, and whether
        the name is an index that needs ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.

        A child's ``CUDA_VISIBLE_DEVICES`` replaces the server's; CUDA does
        not nest them. So the child must name the physical GPU, never its
        position in an inherited list ("0" for the first of
        ``CUDA_VISIBLE_DEVICES=2,3`` would be physical GPU 0). In order of
        preference: the UUID (exact whatever the order); else the inherited
        entry as it was given, read by CUDA as the parent's would have been
        (in the order the inherited ``CUDA_DEVICE_ORDER`` says, which the
        child keeps); else the NVML index, in PCI order.
        """
        if self.uuid:
            return self.uuid, False
        if self.visible is not None:
            return self.visible, False
        return str(self.index), True


CPU = Device(kind="cpu", index=None, uuid=None, name="cpu", memory_total=None)


class DeviceError(ValueError):
    """A ``--devices`` value we cannot use; the message says why."""


@dataclasses.dataclass(frozen=True)
class GpuSample:
    """One reading of a GPU, in base units; a field NVML would not give is None."""

    utilization_ratio: float | None  # 0..1
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_celsius: float | None
    power_watts: float | None


def _text(value: Any) -> str:
    """NVML strings are bytes in old nvidia-ml-py releases, str in new ones."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


class Nvml:
    """Thin wrapper over pynvml: init once, never raise to callers for telemetry.

    Build it with :meth:`open`; the constructor takes an initialised pynvml
    module (or anything shaped like it).
    """

    def __init__(self, module: Any) -> None:
        self._nvml = module
        self._handles: dict[str, Any] = {}
        self._quiet: set[tuple[str, str]] = set()
        self._memory_v1 = False  # the driver has no v2 memory query
        self._closed = False

    @classmethod
    def open(cls) -> Nvml | None:
        """Initialise NVML, or say once why not and return None."""
        try:
            module = importlib.import_module("pynvml")
        except ImportError:
            LOG.warning(
                "NVML unavailable: nvidia-ml-py (pynvml) is not installed; "
                "no GPU discovery or telemetry"
            )
            return None
        try:
            module.nvmlInit()
        except Exception as exc:  # NVMLError, or OSError from a broken driver
            # No library means no NVIDIA driver: the normal case on a CPU
            # machine, not worth a warning.
            missing = type(exc).__name__ == "NVMLError_LibraryNotFound"
            LOG.log(
                logging.INFO if missing else logging.WARNING,
                "NVML unavailable (%s): no GPU discovery or telemetry",
                exc,
            )
            return None
        return cls(module)

    def close(self) -> None:
        """Release NVML; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._handles.clear()
        try:
            self._nvml.nvmlShutdown()
        except Exception as exc:  # nothing to do about it at shutdown
            LOG.debug("nvmlShutdown failed: %s", exc)

    def gpus(self) -> list[Device]:
        """The physical GPUs NVML reports, by NVML index."""
        return self.inventory()[0]

    def devices(self) -> list[Device]:
        """Every device a worker can use: each GPU, or its MIG slices when MIG is on."""
        return self.inventory()[1]

    def inventory(self) -> tuple[list[Device], list[Device]]:
        """The physical GPUs, and the devices a worker can use, in one pass.

        A GPU in MIG mode is not usable by CUDA as a whole, only through its
        MIG devices (none, until an operator creates them), so those replace
        it among the usable ones.
        """
        gpus: list[Device] = []
        usable: list[Device] = []
        for gpu, devices in self.groups():
            gpus.append(gpu)
            usable.extend(devices)
        return gpus, usable

    def groups(self) -> list[tuple[Device, list[Device]]]:
        """Each physical GPU with the devices a worker can use on it: the GPU
        itself, or its MIG slices when MIG is on (see :meth:`inventory`)."""
        found = []
        for gpu, handle in self._physical():
            slices = self._mig_slices(gpu, handle)
            found.append((gpu, [gpu] if slices is None else slices))
        return found

    def sample(self, device: Device) -> GpuSample | None:
        """Read a GPU now; None when NVML cannot find it or answers nothing.

        A field NVML does not support for this device (utilisation of a MIG
        slice, power on some boards) is None; the others are still read.
        """
        if device.kind != "cuda":
            return None
        handle = self._handle(device)
        if handle is None:
            return None
        label = device.label
        nvml = self._nvml

        utilization = self._read(
            label, "utilization", nvml.nvmlDeviceGetUtilizationRates, handle
        )
        memory = self._read(label, "memory", self._memory_info, handle)
        temperature = self._read(
            label,
            "temperature",
            nvml.nvmlDeviceGetTemperature,
            handle,
            _TEMPERATURE_GPU,
        )
        power = self._read(label, "power", nvml.nvmlDeviceGetPowerUsage, handle)
        if all(v is None for v in (utilization, memory, temperature, power)):
            return None
        return GpuSample(
            utilization_ratio=None if utilization is None else utilization.gpu / 100,
            memory_used_bytes=None if memory is None else int(memory.used),
            memory_total_bytes=None if memory is None else int(memory.total),
            temperature_celsius=None if temperature is None else float(temperature),
            power_watts=None if power is None else power / 1000,
        )

    def _physical(self) -> list[tuple[Device, Any]]:
        nvml = self._nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            LOG.warning("NVML could not count GPUs (%s): assuming none", exc)
            return []
        found = []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as exc:  # a GPU in a bad state: leave it out
                LOG.warning("NVML cannot open GPU %d (%s): not using it", index, exc)
                continue
            found.append((self._describe(handle, index), handle))
        return found

    def _mig_slices(self, gpu: Device, handle: Any) -> list[Device] | None:
        """The MIG devices of a GPU in MIG mode; None when MIG is off or unknown."""
        nvml = self._nvml
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except Exception:  # NotSupported on GPUs without MIG, old drivers
            return None
        if current != _MIG_ENABLED:
            return None
        try:
            count = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
        except Exception as exc:
            LOG.warning("NVML cannot list MIG devices of %s (%s)", gpu.label, exc)
            return []
        slices = []
        for slot in range(count):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except Exception:  # NotFound: an empty slot
                continue
            device = self._describe(mig, None)
            if device.uuid is not None:  # CUDA can only be pointed at one by UUID
                slices.append(device)
        if not slices:
            LOG.warning(
                "%s is in MIG mode with no MIG devices: not using it", gpu.label
            )
        return slices

    def _describe(self, handle: Any, index: int | None) -> Device:
        nvml = self._nvml
        uuid = self._read("", "uuid", nvml.nvmlDeviceGetUUID, handle)
        name = self._read("", "name", nvml.nvmlDeviceGetName, handle)
        memory = self._read("", "memory", self._memory_info, handle)
        device = Device(
            kind="cuda",
            index=index,
            uuid=None if uuid is None else _text(uuid),
            name="",
            memory_total=None if memory is None else int(memory.total),
        )
        fallback = device.label if device.uuid or index is not None else "cuda"
        return dataclasses.replace(
            device, name=fallback if name is None else _text(name)
        )

    def _handle(self, device: Device) -> Any:
        key = device.uuid or str(device.index)
        if key in self._handles:
            return self._handles[key]
        try:
            if device.uuid:
                handle = self._nvml.nvmlDeviceGetHandleByUUID(device.uuid)
            else:
                handle = self._nvml.nvmlDeviceGetHandleByIndex(device.index)
        except Exception as exc:
            self._once(device.label, "handle", exc)
            return None
        self._handles[key] = handle
        return handle

    def _memory_info(self, handle: Any) -> Any:
        """Memory as nvidia-smi shows it: NVML's v2 query, whose ``used``
        leaves out what the driver reserves (the v1 query counts it as used:
        hundreds of MiB on an idle GPU). v1 where the driver or nvidia-ml-py
        has no v2 (drivers before R510), remembered for the next readings.
        """
        nvml = self._nvml
        version = getattr(nvml, "nvmlMemory_v2", None)
        if version is not None and not self._memory_v1:
            missing: tuple[type[BaseException], ...] = tuple(
                cls
                for name in ("NVMLError_FunctionNotFound", "NVMLError_NotSupported")
                if isinstance(cls := getattr(nvml, name, None), type)
                and issubclass(cls, BaseException)
            )
            try:
                return nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
            except missing:
                self._memory_v1 = True
        return nvml.nvmlDeviceGetMemoryInfo(handle)

    def _read(self, label: str, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """One NVML query, or None: telemetry must never fail a request."""
        try:
            return call(*args)
        except Exception as exc:
            self._once(label, what, exc)
            return None

    def _once(self, label: str, what: str, exc: Exception) -> None:
        # Sampled every second: say it once per device and field, not forever.
        if (label, what) not in self._quiet:
            self._quiet.add((label, what))
            LOG.debug("NVML %s of %s unavailable: %s", what, label or "a GPU", exc)
