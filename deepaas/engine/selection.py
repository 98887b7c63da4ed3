"""Which devices workers use: ``--devices``, within what this process was given.

``auto`` (the default) means every device NVML reports, or only those an
inherited ``CUDA_VISIBLE_DEVICES`` names (:mod:`deepaas.engine.visible`);
``cpu`` the CPU; a list of NVML indices and/or UUIDs those GPUs, which must
then be among the inherited ones. Indices in ``--devices`` are NVML's (the
ones ``nvidia-smi`` shows, in PCI bus order), with or without an inherited
restriction: ``CUDA_VISIBLE_DEVICES=1 deepaas-run --devices 1`` is GPU 1.
"""

from __future__ import annotations

import logging

from deepaas.engine.devices import CPU, Device, DeviceError, Nvml
from deepaas.engine.visible import (
    INDEX,
    UUID,
    Visible,
    announce,
    given,
    warn_if_orders_differ,
)

LOG = logging.getLogger("deepaas.engine.devices")


def select_devices(
    spec: str, nvml: Nvml | None, visible: Visible | None = None
) -> list[Device]:
    """The devices ``--devices`` names.

    ``auto``: every device NVML reports, else the CPU. ``cpu``: the CPU. A
    comma-separated list of NVML indices and/or UUIDs is used as given, with
    or without NVML (containers without NVML, MIG slices, tests); with NVML,
    a listed device NVML knows gets its name, memory and UUID.

    ``visible``: the inherited ``CUDA_VISIBLE_DEVICES`` (None: unset). It
    limits ``auto`` to the GPUs it names (none: the CPU; without NVML, the
    CPU as ever: nothing says those GPUs exist), and a listed GPU outside it
    is a :class:`DeviceError`; which GPUs are used is logged once. ``cpu``
    is always allowed, and does not look at it.
    """
    value = spec.strip()
    if value.lower() == "cpu":
        return [CPU]
    if value.lower() == "auto":
        if visible is not None and nvml is None:
            # As without it: auto needs NVML to know the GPUs exist.
            LOG.info(
                "%s, but NVML is unavailable: using the CPU; list the GPUs "
                "with --devices to use them",
                visible.describe(),
            )
            return [CPU]
        if visible is not None:
            allowed = _given(visible, nvml) or [CPU]
            announce(visible, allowed, True)
            return allowed
        found = nvml.devices() if nvml is not None else []
        if nvml is not None and not found:
            LOG.info("NVML reports no usable GPU: using the CPU")
        return found or [CPU]
    if not value:
        raise DeviceError("--devices is empty: use auto, cpu, or a list like 0,1")

    known: list[Device] = []
    if nvml is not None:
        gpus, usable = nvml.inventory()
        known = gpus + [d for d in usable if d not in gpus]
    chosen: list[Device] = []
    given_as: dict[Device, str] = {}
    for item in (part.strip() for part in value.split(",")):
        device = _listed(item, value, known)
        same = next((d for d in chosen if _same(d, device)), None)
        if same is not None:
            raise DeviceError(
                f"--devices {value!r} names one GPU twice ({given_as[same]!r} and "
                f"{item!r}); use --workers for more workers per GPU"
            )
        chosen.append(device)
        given_as[device] = item
    if visible is not None:
        chosen = _within(chosen, value, visible, _given(visible, nvml))
        announce(visible, chosen, nvml is not None)
    return chosen


def _given(visible: Visible, nvml: Nvml | None) -> list[Device]:
    """The inherited GPUs (a warning when their indices may mislead)."""
    groups = nvml.groups() if nvml is not None else None
    allowed = given(visible, groups)
    if groups is not None:
        warn_if_orders_differ(visible, groups)
    return allowed


def _within(
    chosen: list[Device], spec: str, visible: Visible, allowed: list[Device]
) -> list[Device]:
    """Each listed GPU as the inherited list has it, or a DeviceError."""
    inside = []
    for device in chosen:
        match = next((d for d in allowed if _same(d, device)), None)
        if match is None:
            shown = ", ".join(d.label for d in allowed) or "none"
            raise DeviceError(
                f"--devices {spec!r}: {device.label} is not among the GPUs this "
                f"process was given ({visible.describe()}: {shown}); list only "
                "those, or use --devices auto"
            )
        inside.append(match)
    return inside


def _listed(item: str, spec: str, known: list[Device]) -> Device:
    """One item of an explicit ``--devices`` list, enriched from NVML."""
    if not item:
        raise DeviceError(f"--devices {spec!r} has an empty item")
    if INDEX.fullmatch(item):
        index = int(item)
        match = next((d for d in known if d.index == index), None)
        return match or Device("cuda", index, None, f"cuda:{index}", None)
    if UUID.fullmatch(item):
        matches = [d for d in known if d.uuid and d.uuid.startswith(item)]
        exact = [d for d in matches if d.uuid == item]
        if exact or len(matches) == 1:
            return (exact or matches)[0]
        if len(matches) > 1:
            raise DeviceError(f"--devices: {item!r} is the start of several GPU UUIDs")
        return Device("cuda", None, item, item, None)
    if item.lower() in ("cpu", "auto"):
        raise DeviceError(
            f"--devices {spec!r}: {item!r} cannot be part of a list; use it alone"
        )
    if item.startswith("-") and INDEX.fullmatch(item[1:]):
        raise DeviceError(f"--devices {spec!r}: negative index {item!r}")
    raise DeviceError(
        f"--devices {spec!r}: {item!r} is neither a GPU index (0, 1, ...) nor a "
        "UUID (GPU-... or MIG-...)"
    )


def _same(a: Device, b: Device) -> bool:
    """One GPU, by UUID when both have one, else by index."""
    if a.uuid and b.uuid:
        return a.uuid == b.uuid
    return a.index is not None and a.index == b.index


def assign(devices: list[Device], workers: int) -> list[Device]:
    """Spread ``workers`` worker processes round-robin: worker i gets devices[i % n]."""
    if not devices:
        raise ValueError("no devices to place workers on")
    if workers < 0:
        raise ValueError(f"negative number of workers: {workers}")
    return [devices[i % len(devices)] for i in range(workers)]
