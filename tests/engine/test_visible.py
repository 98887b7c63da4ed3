"""An inherited ``CUDA_VISIBLE_DEVICES`` limits the GPUs deepaas uses.

Parsing follows CUDA's rules (unset: all; empty: none; an invalid entry
hides the rest); mapping to NVML devices is tested against a fake pynvml
of a 4-GPU node; the last test serves a model with real workers on that
node with ``CUDA_VISIBLE_DEVICES=1`` inherited and counts where workers,
training leases, ``/v2/system/`` and ``/metrics`` landed.
"""

from __future__ import annotations

import logging
import re
import sys

import pytest

from deepaas.config import ConfigError, Settings
from deepaas.engine.devices import CPU, Device, DeviceError, Nvml
from deepaas.engine.process import device_env
from deepaas.engine.selection import assign, select_devices
from deepaas.engine.visible import Visible, parse
from deepaas.model.loading import PluginSpec
from deepaas.server import SERVER, build_app
from tests.engine.conftest import REPO_ROOT
from tests.fakes.nvml import FakeGpu, FakePynvml

pytestmark = pytest.mark.timeout(60)

UUIDS = [f"GPU-{i}{i}{i}{i}{i}{i}{i}{i}-2222-3333-4444-555555555555" for i in range(4)]
MIG_A = "MIG-aaaaaaaa-8888-7777-6666-555555555555"
MIG_B = "MIG-bbbbbbbb-8888-7777-6666-555555555555"
LOGGERS = ("deepaas.engine.devices", "deepaas.engine.visible")


def four_gpus() -> list[FakeGpu]:
    return [FakeGpu(uuid) for uuid in UUIDS]


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> FakePynvml:
    """A 4-GPU node behind ``import pynvml``."""
    fake = FakePynvml(four_gpus())
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


@pytest.fixture
def nvml(node: FakePynvml) -> Nvml:
    opened = Nvml.open()
    assert opened is not None
    return opened


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name in LOGGERS and r.levelno >= logging.INFO
    ]


# --- parsing, as CUDA reads the variable -------------------------------------


def test_unset_means_no_restriction() -> None:
    assert Visible.from_env({}) is None


@pytest.mark.parametrize(
    ("raw", "entries", "stopped_at"),
    [
        ("", (), None),
        ("  ", (), None),
        ("1", ("1",), None),
        (" 2 , 1 ", ("2", "1"), None),
        ("0,2,-1,1", ("0", "2"), "-1"),  # CUDA's own example
        ("-1", (), "-1"),  # the usual way to hide every GPU
        ("NoDevFiles", (), "NoDevFiles"),  # old Slurm: no GPU allocated
        ("1,1", ("1",), None),
        (f"{UUIDS[1]},{MIG_A}", (UUIDS[1], MIG_A), None),
        ("GPU-1111", ("GPU-1111",), None),  # a prefix: CUDA accepts it
    ],
)
def test_parse_follows_cuda(
    raw: str, entries: tuple[str, ...], stopped_at: str | None
) -> None:
    visible = parse(raw)
    assert (visible.entries, visible.stopped_at) == (entries, stopped_at)


def test_device_order_is_read_with_it() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    visible = Visible.from_env(env)
    assert visible is not None and visible.pci_order
    assert not parse("1", "FASTEST_FIRST").pci_order


# --- auto within the inherited GPUs -----------------------------------------


def test_auto_uses_only_the_inherited_gpu_said_once(
    nvml: Nvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    [device] = select_devices("auto", nvml, parse("1"))
    assert (device.index, device.uuid) == (1, UUIDS[1])
    assert device_env([device])["CUDA_VISIBLE_DEVICES"] == UUIDS[1]
    [line] = lines(caplog)
    assert line == "CUDA_VISIBLE_DEVICES='1' (inherited): using only cuda:1"


@pytest.mark.parametrize(
    ("raw", "indices"),
    [
        ("3,1", [3, 1]),  # the inherited order is kept
        (UUIDS[2], [2]),
        ("GPU-0000", [0]),  # a unique prefix
        (f"2,{UUIDS[2]}", [2]),  # one GPU named twice is used once
    ],
)
def test_auto_maps_indices_and_uuids_to_nvml(
    nvml: Nvml, raw: str, indices: list[int]
) -> None:
    chosen = select_devices("auto", nvml, parse(raw))
    assert [d.index for d in chosen] == indices
    assert [d.uuid for d in chosen] == [UUIDS[i] for i in indices]


def test_an_invalid_entry_hides_the_rest_with_a_warning(
    nvml: Nvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    chosen = select_devices("auto", nvml, parse("0,2,-1,1"))
    assert [d.index for d in chosen] == [0, 2]
    warning, info = lines(caplog)
    assert "'-1' is not a GPU index or UUID" in warning
    assert "ignored" in warning
    assert "using only cuda:0, cuda:2" in info


@pytest.mark.parametrize("raw", ["", "-1", "NoDevFiles"])
def test_no_inherited_gpu_means_the_cpu(
    nvml: Nvml, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert select_devices("auto", nvml, parse(raw)) == [CPU]
    assert lines(caplog)[-1] == (
        f"CUDA_VISIBLE_DEVICES={raw!r} (inherited): using only the CPU (no GPU given)"
    )


def test_an_explicit_list_is_said_as_chosen(
    nvml: Nvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    select_devices("2", nvml, parse("1,2"))
    assert lines(caplog) == [
        "CUDA_VISIBLE_DEVICES='1,2' (inherited): using only cuda:2"
    ]


def test_mig_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = four_gpus()
    gpus[3].mig_mode = 1
    gpus[3].mig = [FakeGpu(MIG_A), FakeGpu(MIG_B)]
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(gpus))
    nvml = Nvml.open()
    # A MIG UUID: that slice; a GPU in MIG mode: its slices, as with auto.
    assert [d.uuid for d in select_devices("auto", nvml, parse(MIG_B))] == [MIG_B]
    assert [d.uuid for d in select_devices("auto", nvml, parse("3"))] == [
        MIG_A,
        MIG_B,
    ]
    [device] = select_devices("auto", nvml, parse(MIG_A))
    assert device_env([device])["CUDA_VISIBLE_DEVICES"] == MIG_A


# --- bad input ---------------------------------------------------------------


@pytest.mark.parametrize("entry", ["7", "GPU-deadbeef"])
def test_a_gpu_nvml_does_not_know_is_a_clear_error(nvml: Nvml, entry: str) -> None:
    message = (
        f"CUDA_VISIBLE_DEVICES='1,{entry}' (inherited) names GPU {entry!r}, which "
        f"NVML does not know (it reports 0 ({UUIDS[0]}), 1 ({UUIDS[1]}), "
        f"2 ({UUIDS[2]}), 3 ({UUIDS[3]})); correct or unset CUDA_VISIBLE_DEVICES, "
        "or start with --devices cpu"
    )
    with pytest.raises(DeviceError, match=re.escape(message)):
        select_devices("auto", nvml, parse(f"1,{entry}"))


def test_an_ambiguous_prefix_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = [FakeGpu("GPU-abc1-0"), FakeGpu("GPU-abc2-0")]
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(gpus))
    with pytest.raises(DeviceError, match="'GPU-abc' is the start of several"):
        select_devices("auto", Nvml.open(), parse("GPU-abc"))


def test_the_server_reports_it_as_a_start_up_error(node: FakePynvml) -> None:
    spec = PluginSpec("envprobe", "tests.plugins.envprobe")
    env = {"CUDA_VISIBLE_DEVICES": "7"}
    with pytest.raises(ConfigError, match=r"^devices: CUDA_VISIBLE_DEVICES='7'"):
        build_app(Settings(), [spec], worker_env=env)
    # --devices cpu does not look at the GPUs at all.
    app = build_app(Settings(devices="cpu"), [spec], worker_env=env)
    assert app[SERVER].devices == (CPU,)


def test_mixed_models_with_indices_warn_about_order(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gpus = four_gpus()
    gpus[0].name = "NVIDIA A100-SXM4-40GB"
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(gpus))
    nvml = Nvml.open()
    caplog.set_level(logging.DEBUG)
    select_devices("auto", nvml, parse("1"))
    assert any("CUDA_DEVICE_ORDER=PCI_BUS_ID" in m for m in lines(caplog))
    caplog.clear()
    select_devices("auto", nvml, parse("1", "PCI_BUS_ID"))
    assert not any("CUDA_DEVICE_ORDER" in m for m in lines(caplog))


# --- explicit --devices -------------------------------------------------------


def test_explicit_devices_must_be_inherited(nvml: Nvml) -> None:
    visible = parse("1,2")
    assert [d.index for d in select_devices("2", nvml, visible)] == [2]
    assert [d.index for d in select_devices(UUIDS[1], nvml, visible)] == [1]
    assert select_devices("cpu", nvml, visible) == [CPU]
    message = (
        "--devices '0': cuda:0 is not among the GPUs this process was given "
        "(CUDA_VISIBLE_DEVICES='1,2' (inherited): cuda:1, cuda:2); list only "
        "those, or use --devices auto"
    )
    with pytest.raises(DeviceError, match=re.escape(message)):
        select_devices("0", nvml, visible)
    with pytest.raises(DeviceError, match=r"\(CUDA_VISIBLE_DEVICES='' .*: none\)"):
        select_devices("1", nvml, parse(""))


# --- without NVML: the entries as given ---------------------------------------


def test_without_nvml_auto_is_still_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert select_devices("auto", None, parse("1")) == [CPU]
    [line] = lines(caplog)
    assert "NVML is unavailable: using the CPU" in line
    assert "--devices" in line


def test_without_nvml_listed_entries_are_passed_on_as_given() -> None:
    visible = parse("2,GPU-abc", "FASTEST_FIRST")
    chosen = select_devices("2,GPU-abc", None, visible)
    assert [(d.index, d.uuid, d.label) for d in chosen] == [
        (2, None, "cuda:2"),
        (None, "GPU-abc", "cuda:GPU-abc"),
    ]
    # The inherited entry, read by CUDA in the inherited order: no
    # CUDA_DEVICE_ORDER of ours (the child keeps the server's).
    assert device_env(chosen[:1]) == {
        "CUDA_VISIBLE_DEVICES": "2",
        "DEEPAAS_DEVICE": "cuda:0",
        "DEEPAAS_DEVICES": "cuda:0",
    }
    assert device_env(chosen)["CUDA_VISIBLE_DEVICES"] == "2,GPU-abc"
    # An explicit index is NVML's (PCI order), as without a restriction.
    assert device_env([Device("cuda", 2, None, "cuda:2", None)]) == {
        "CUDA_VISIBLE_DEVICES": "2",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "DEEPAAS_DEVICE": "cuda:0",
        "DEEPAAS_DEVICES": "cuda:0",
    }
    assert [d.label for d in select_devices("2", None, parse("2,3"))] == ["cuda:2"]
    with pytest.raises(DeviceError, match="not among the GPUs"):
        select_devices("0", None, parse(UUIDS[0]))  # cannot be checked: refused


# --- the number: a 4-GPU node, CUDA_VISIBLE_DEVICES=1 -------------------------


async def test_nothing_lands_outside_the_inherited_gpu(aiohttp_client, node) -> None:
    """0 workers, leases, /v2/system/ devices or GPU metrics on GPUs 0, 2, 3."""
    spec = PluginSpec("envprobe", "tests.plugins.envprobe")
    env = {"CUDA_VISIBLE_DEVICES": "1", "PATH": "/usr/bin:/bin"}
    app = build_app(
        Settings(workers=4), [spec], worker_env=env, extra_path=(str(REPO_ROOT),)
    )
    client = await aiohttp_client(app)
    server = app[SERVER]
    runtime = server.runtimes["envprobe"]
    assert await runtime.wait_ready(30)

    assert [w.device for w in runtime.status().workers] == ["cuda:1"] * 4
    assert [d.label for d in server.trainings.scheduler.free] == ["cuda:1"]
    assert assign(list(server.devices), 8) == [server.devices[0]] * 8
    resp = await client.post("/v2/models/envprobe/predict/")
    seen = (await resp.json())["predictions"]
    assert seen["cuda_visible_devices"] == UUIDS[1]  # the physical GPU 1
    doc = await (await client.get("/v2/system/")).json()
    assert [(d["index"], d["uuid"]) for d in doc["devices"]] == [(1, UUIDS[1])]
    text = await (await client.get("/metrics")).text()
    for other in (0, 2, 3):
        assert UUIDS[other] not in text
