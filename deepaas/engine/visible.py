"""The GPUs this process was given: an inherited ``CUDA_VISIBLE_DEVICES``.

A batch system (Slurm's ``gres/gpu`` plugin), a container runtime or an
operator gives a job its GPUs by setting ``CUDA_VISIBLE_DEVICES``. CUDA
honours it; NVML does not (it reports every GPU of the node), so without
this module ``--devices auto`` would place workers on GPUs that belong to
another user's job.

The variable is read as CUDA reads it (CUDA Programming Guide, "CUDA
Environment Variables", ``CUDA_VISIBLE_DEVICES``):

- unset: every GPU; set and empty: none;
- a comma-separated list of GPU indices (``nvidia-smi``'s), GPU UUIDs
  (``GPU-...``, or a prefix of one that names a single GPU), and MIG device
  UUIDs (``MIG-<uuid>``, as ``nvidia-smi -L`` shows them since driver R470);
- an entry that is none of these hides itself and every entry after it
  (``0,2,-1,1`` means GPUs 0 and 2), which is why ``-1`` and Slurm's old
  ``NoDevFiles`` mean "no GPU".

With NVML, each entry is mapped to the NVML device it names, for telemetry
and a UUID to hand to workers; an entry naming a GPU NVML does not know is
a start-up error (a CUDA program would silently lose it and every GPU after
it). A GPU in MIG mode stands for its MIG devices, as with ``--devices
auto``. Without NVML the entries are used as given.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence

from deepaas.engine.devices import Device, DeviceError

LOG = logging.getLogger(__name__)

ENV = "CUDA_VISIBLE_DEVICES"
ORDER_ENV = "CUDA_DEVICE_ORDER"

# What CUDA accepts besides indices: a GPU UUID, a MIG UUID ("MIG-<uuid>",
# or the older "MIG-GPU-<uuid>/<gi>/<ci>"), or a unique prefix of one.
UUID = re.compile(r"(GPU|MIG)-[0-9A-Za-z/-]+")
INDEX = re.compile(r"[0-9]+")

# One physical GPU and the devices a worker can use on it (Nvml.groups()).
Group = tuple[Device, list[Device]]


@dataclasses.dataclass(frozen=True)
class Visible:
    """An inherited ``CUDA_VISIBLE_DEVICES``, parsed as CUDA parses it."""

    raw: str  # the variable as inherited
    entries: tuple[str, ...]  # the GPUs it names, in its order, each once
    stopped_at: str | None  # the first invalid entry: it and those after it hide
    pci_order: bool  # CUDA_DEVICE_ORDER=PCI_BUS_ID: indices mean NVML's

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Visible | None:
        """The restriction in ``env``; None when the variable is unset."""
        raw = env.get(ENV)
        if raw is None:
            return None
        return parse(raw, env.get(ORDER_ENV))

    def describe(self) -> str:
        """The variable as the log and error messages show it."""
        return f"{ENV}={self.raw!r} (inherited)"


def parse(raw: str, order: str | None = None) -> Visible:
    """Parse a ``CUDA_VISIBLE_DEVICES`` value; ``order`` is
    ``CUDA_DEVICE_ORDER``. Never raises: an invalid entry hides the rest."""
    entries: list[str] = []
    stopped_at = None
    if raw.strip():
        for item in (part.strip() for part in raw.split(",")):
            if not (INDEX.fullmatch(item) or UUID.fullmatch(item)):
                stopped_at = item
                break
            if item not in entries:
                entries.append(item)
    pci = (order or "").strip().upper() == "PCI_BUS_ID"
    return Visible(raw, tuple(entries), stopped_at, pci)


def given(visible: Visible, groups: Sequence[Group] | None) -> list[Device]:
    """The devices ``visible`` names: NVML's (``groups``), or without NVML
    (None) the entries as given. Raises :class:`DeviceError` for an entry
    NVML does not know."""
    if groups is None:
        return [_unchecked(entry) for entry in visible.entries]
    found: list[Device] = []
    for entry in visible.entries:
        for device in _match(entry, visible, groups):
            if device not in found:
                found.append(device)
    return found


def announce(visible: Visible, chosen: Sequence[Device], nvml_known: bool) -> None:
    """Say once, at start-up, which of the inherited GPUs are used."""
    if visible.stopped_at is not None:
        LOG.warning(
            "%s: %r is not a GPU index or UUID; as CUDA does, it and the entries "
            "after it are ignored",
            visible.describe(),
            visible.stopped_at,
        )
    shown = ", ".join(d.label for d in chosen if d.kind == "cuda") or (
        "the CPU (no GPU given)"
    )
    LOG.info(
        "%s: using only %s%s",
        visible.describe(),
        shown,
        "" if nvml_known else " (NVML unavailable: entries used as given)",
    )


def warn_if_orders_differ(visible: Visible, groups: Sequence[Group]) -> None:
    """Indices are read in NVML's (PCI bus) order. CUDA's default order is
    fastest first (CUDA Programming Guide, ``CUDA_DEVICE_ORDER``); the two
    agree when the GPUs are alike, and may not on a node of mixed models."""
    if visible.pci_order or not any(INDEX.fullmatch(e) for e in visible.entries):
        return
    models = {gpu.name for gpu, _ in groups}
    if len(models) > 1:
        LOG.warning(
            "%s lists GPUs by index on a node of mixed GPU models (%s): indices "
            "are read in PCI bus order, as nvidia-smi shows them; CUDA's default "
            "order may differ. Set CUDA_DEVICE_ORDER=PCI_BUS_ID or list UUIDs",
            visible.describe(),
            ", ".join(sorted(models)),
        )


def _unchecked(entry: str) -> Device:
    """An entry used as given: without NVML nothing can check it."""
    if INDEX.fullmatch(entry):
        return Device("cuda", int(entry), None, f"cuda:{entry}", None, entry)
    return Device("cuda", None, entry, entry, None, entry)


def _match(entry: str, visible: Visible, groups: Sequence[Group]) -> list[Device]:
    if INDEX.fullmatch(entry):
        index = int(entry)
        for gpu, usable in groups:
            if gpu.index == index:
                return usable
        raise DeviceError(_unknown(entry, visible, groups))
    # A GPU UUID stands for the devices on that GPU; a MIG UUID for itself.
    named: list[tuple[str, list[Device]]] = []
    for gpu, usable in groups:
        if gpu.uuid:
            named.append((gpu.uuid, usable))
        named += [(d.uuid, [d]) for d in usable if d.uuid and d is not gpu]
    exact = [devices for uuid, devices in named if uuid == entry]
    if exact:
        return exact[0]
    prefixed = [devices for uuid, devices in named if uuid.startswith(entry)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise DeviceError(
            f"{visible.describe()}: {entry!r} is the start of several GPU UUIDs; "
            "CUDA would not know which one it means"
        )
    raise DeviceError(_unknown(entry, visible, groups))


def _unknown(entry: str, visible: Visible, groups: Sequence[Group]) -> str:
    known = ", ".join(f"{gpu.index} ({gpu.uuid or 'no UUID'})" for gpu, _ in groups)
    return (
        f"{visible.describe()} names GPU {entry!r}, which NVML does not know "
        f"(it reports {known or 'no GPU'}); correct or unset {ENV}, or start "
        "with --devices cpu"
    )
