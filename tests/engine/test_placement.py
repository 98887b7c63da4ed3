"""Placement: each worker gets its device's environment before it starts."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.timeout(60)


async def _seen(client, n):
    async def one():
        resp = await client.post("/v2/models/envprobe/predict/", params={"nap": 0.3})
        assert resp.status == 200
        return (await resp.json())["predictions"]

    return await asyncio.gather(*[one() for _ in range(n)])


async def test_workers_spread_round_robin_over_listed_devices(engine_client):
    _, runtime = await engine_client("envprobe", devices="0,1", workers=3)
    assert [w.device for w in runtime.status().workers] == [
        "cuda:0",
        "cuda:1",
        "cuda:0",
    ]


async def test_each_worker_sees_only_its_gpu(engine_client):
    client, runtime = await engine_client("envprobe", devices="0,1", workers=2)
    seen = await _seen(client, 4)
    by_pid = {s["pid"]: s for s in seen}
    assert len(by_pid) == 2  # both workers took requests
    assert sorted(s["cuda_visible_devices"] for s in by_pid.values()) == ["0", "1"]
    assert {s["deepaas_device"] for s in by_pid.values()} == {"cuda:0"}
    pids = {w.pid: w.device for w in runtime.status().workers}
    for pid, s in by_pid.items():
        assert pids[pid] == f"cuda:{s['cuda_visible_devices']}"


async def test_cpu_workers_see_no_gpu(engine_client):
    client, _ = await engine_client("envprobe", devices="cpu", workers=1)
    (seen,) = await _seen(client, 1)
    assert seen["cuda_visible_devices"] == ""
    assert seen["deepaas_device"] == "cpu"


async def test_gpu_uuid_is_used_as_given(engine_client):
    uuid = "GPU-12345678-1234-1234-1234-123456789abc"
    client, _ = await engine_client("envprobe", devices=uuid, workers=1)
    (seen,) = await _seen(client, 1)
    assert seen["cuda_visible_devices"] == uuid
    assert seen["deepaas_device"] == "cuda:0"
