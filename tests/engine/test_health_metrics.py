"""Probes, /metrics and /v2/system/ after known traffic."""

from __future__ import annotations

import asyncio
import re

import pytest

from deepaas.config import Settings
from deepaas.model.loading import PluginSpec
from deepaas.server import SERVER, build_app
from tests.engine.conftest import REPO_ROOT

pytestmark = pytest.mark.timeout(60)


async def _client(aiohttp_client, name, **settings):
    spec = PluginSpec(name, f"tests.plugins.{name}")
    app = build_app(Settings(**settings), [spec], extra_path=(str(REPO_ROOT),))
    return await aiohttp_client(app)


def _sample(text: str, metric: str, /, **labels: str) -> float:
    """The value of one sample of the Prometheus text format."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:]+)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != metric:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    raise AssertionError(f"no sample {metric} {labels} in:\n{text}")


async def test_readiness_while_starting_then_ready(aiohttp_client):
    client = await _client(aiohttp_client, "slow_warm")
    for path in ("/readyz", "/v2/health/ready"):
        resp = await client.get(path)
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "starting"
        assert "slow_warm" in body["message"]
    for path in ("/healthz", "/v2/health/live"):
        assert (await client.get(path)).status == 200
    for _ in range(100):
        resp = await client.get("/readyz")
        if resp.status == 200:
            break
        await asyncio.sleep(0.1)
    assert resp.status == 200
    assert (await resp.json())["models"]["slow_warm"]["ready_workers"] == 1


async def test_readiness_says_why_a_model_cannot_start(aiohttp_client):
    client = await _client(aiohttp_client, "broken_warm")
    for _ in range(100):
        body = await (await client.get("/readyz")).json()
        if body["status"] != "starting":
            break
        await asyncio.sleep(0.1)
    assert body["status"] == "unavailable"
    assert "weights not found" in body["models"]["broken_warm"]["error"]


async def test_readiness_is_503_while_draining(aiohttp_client):
    client = await _client(aiohttp_client, "echo")
    server = client.server.app[SERVER]
    await server.runtimes["echo"].wait_ready(20)
    assert (await client.get("/readyz")).status == 200
    server.lifecycle.drain()
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["status"] == "draining"
    resp = await client.post("/v2/models/echo/predict/")
    assert resp.status == 503
    assert "shutting down" in (await resp.json())["message"]


async def test_leaving_is_503_to_probes_but_serves_requests(aiohttp_client):
    # --drain-delay's lame duck: balancers see 503, clients are still served.
    client = await _client(aiohttp_client, "echo")
    server = client.server.app[SERVER]
    await server.runtimes["echo"].wait_ready(20)
    server.lifecycle.leave()
    for path in ("/readyz", "/v2/health/ready", "/v2/models/echo/ready"):
        resp = await client.get(path)
        assert resp.status == 503, path
    assert (await (await client.get("/readyz")).json())["status"] == "draining"
    assert (await client.get("/healthz")).status == 200
    assert (await client.post("/v2/models/echo/predict/")).status == 200
    infer = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]}
    resp = await client.post("/v2/models/echo/infer", json=infer)
    assert resp.status == 200, await resp.text()
    server.lifecycle.drain()
    resp = await client.post("/v2/models/echo/predict/")
    assert resp.status == 503


async def test_in_flight_and_queue_depth_are_the_load(aiohttp_client, tmp_path):
    # What autoscaling reads: one request running in the only worker, one
    # waiting for it.
    client = await _client(aiohttp_client, "faults")
    await client.server.app[SERVER].runtimes["faults"].wait_ready(20)
    started, release = tmp_path / "started", tmp_path / "release"
    slow = {"mode": "slow", "seconds": "30", "started": str(started)}
    slow["release"] = str(release)
    path = "/v2/models/faults/predict/"
    running = asyncio.ensure_future(client.post(path, params=slow))
    waiting = asyncio.ensure_future(client.post(path, params={"mode": "ok"}))
    text = ""
    for _ in range(200):
        text = await (await client.get("/metrics")).text()
        load = (
            _sample(text, "deepaas_in_flight", model="faults"),
            _sample(text, "deepaas_queue_depth", model="faults"),
        )
        if started.exists() and sum(load) == 2:
            break
        await asyncio.sleep(0.05)
    assert started.exists()
    assert _sample(text, "deepaas_in_flight", model="faults") >= 1
    assert sum(load) == 2
    release.touch()
    assert (await running).status == 200
    assert (await waiting).status == 200
    text = await (await client.get("/metrics")).text()
    assert _sample(text, "deepaas_in_flight", model="faults") == 0
    assert _sample(text, "deepaas_queue_depth", model="faults") == 0


async def test_metrics_after_known_traffic(aiohttp_client):
    client = await _client(aiohttp_client, "echo", base_path="/bp")
    for x in range(3):
        assert (
            await client.post("/bp/v2/models/echo/predict/", params={"x": x})
        ).status == 200
    bad = await client.post("/bp/v2/models/echo/predict/", params={"x": "nope"})
    assert bad.status == 422
    assert (await client.get("/bp/v2/models/echo/")).status == 200
    resp = await client.get("/bp/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    count = _sample
    assert (
        count(
            text, "deepaas_requests_total", model="echo", endpoint="predict", code="200"
        )
        == 3
    )
    assert (
        count(
            text, "deepaas_requests_total", model="echo", endpoint="predict", code="422"
        )
        == 1
    )
    assert (
        count(
            text,
            "deepaas_requests_total",
            model="echo",
            endpoint="metadata",
            code="200",
        )
        == 1
    )
    assert (
        count(
            text,
            "deepaas_request_duration_seconds_count",
            model="echo",
            endpoint="predict",
        )
        == 4
    )
    # Only the 3 valid requests reached the queue and a worker.
    assert count(text, "deepaas_queue_duration_seconds_count", model="echo") == 3
    assert count(text, "deepaas_batch_size_sum", model="echo") == 3
    assert count(text, "deepaas_compute_duration_seconds_count", model="echo") >= 1
    assert count(text, "deepaas_queue_depth", model="echo") == 0
    assert count(text, "deepaas_in_flight", model="echo") == 0
    assert (
        count(text, "deepaas_workers", model="echo", device="cpu", state="ready") == 1
    )
    assert (
        count(text, "deepaas_workers", model="echo", device="cpu", state="starting")
        == 0
    )


async def test_worker_restarts_are_counted(aiohttp_client):
    client = await _client(aiohttp_client, "crashy")
    resp = await client.post("/v2/models/crashy/predict/", params={"mode": "exit"})
    assert resp.status == 503
    text = await (await client.get("/metrics")).text()
    assert (
        _sample(text, "deepaas_worker_restarts_total", model="crashy", device="cpu")
        == 1
    )
    assert (
        _sample(
            text,
            "deepaas_requests_total",
            model="crashy",
            endpoint="predict",
            code="503",
        )
        == 1
    )


async def test_system_document(aiohttp_client):
    client = await _client(aiohttp_client, "envprobe", devices="0,1", workers=2)
    for _ in range(100):
        doc = await (await client.get("/v2/system/")).json()
        if all(w["state"] == "ready" for w in doc["workers"]):
            break
        await asyncio.sleep(0.1)
    assert [d["label"] for d in doc["devices"]] == ["cuda:0", "cuda:1"]
    assert all(d["telemetry"] is None for d in doc["devices"])  # no NVML here
    workers = doc["workers"]
    assert [(w["model"], w["device"], w["state"]) for w in workers] == [
        ("envprobe", "cuda:0", "ready"),
        ("envprobe", "cuda:1", "ready"),
    ]
    assert all(isinstance(w["pid"], int) and w["restarts"] == 0 for w in workers)
    assert doc["queues"]["envprobe"]["depth"] == 0
    assert doc["queues"]["envprobe"]["max_batch_size"] == 1


@pytest.mark.parametrize(
    ("settings", "size", "window"),
    [
        ({}, 4, "adaptive"),
        ({"max_batch_size": 2}, 2, "adaptive"),
        ({"max_batch_size": 1}, 1, "none"),
    ],
)
async def test_system_document_shows_a_tensor_native_plugins_infer_rows(
    aiohttp_client, settings, size, window
):
    """tensor_batcher's signature stacks up to 4 rows per infer(): the queue
    showed max_batch_size 1 (that of predict_batch, which it lacks) while its
    batches held 4 rows. --max-batch-size lowers it; 1 turns batching off."""
    client = await _client(aiohttp_client, "tensor_batcher", **settings)
    doc = await (await client.get("/v2/system/")).json()
    queue = doc["queues"]["tensor_batcher"]
    assert (queue["max_batch_size"], queue["batch_window"]) == (size, window)


@pytest.mark.parametrize(
    ("name", "settings", "window"),
    [
        ("bad_batch", {}, {"batch_window": "adaptive", "max_batch_delay_ms": 5.0}),
        ("batcher", {}, {"batch_window": "fixed", "max_batch_delay_ms": 0.0}),
        (
            "bad_batch",
            {"max_batch_delay": 7},
            {"batch_window": "fixed", "max_batch_delay_ms": 7.0},
        ),
        ("envprobe", {}, {"batch_window": "none", "max_batch_delay_ms": 0.0}),
    ],
)
async def test_system_document_says_the_batch_window(
    aiohttp_client, name, settings, window
):
    """No max_delay_ms (bad_batch): adaptive, at most 5 ms; the plugin's 0
    (batcher) or the flag: fixed; no predict_batch (envprobe): none."""
    client = await _client(aiohttp_client, name, **settings)
    doc = await (await client.get("/v2/system/")).json()
    queue = doc["queues"][name]
    assert {key: queue[key] for key in window} == window


async def test_gpu_telemetry_in_metrics_and_system(aiohttp_client, monkeypatch):
    """The real NVML path against a fake pynvml (no GPU on this machine)."""
    import sys

    from tests.fakes.nvml import FakeGpu, FakePynvml

    uuid = "GPU-11111111-2222-3333-4444-555555555555"
    gpu = FakeGpu(
        uuid,
        name="NVIDIA H100 80GB HBM3",
        utilization_percent=37,
        temperature=55,
        power_mw=123_000,
    )
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml([gpu]))
    client = await _client(aiohttp_client, "envprobe")  # --devices auto
    resp = await client.post("/v2/models/envprobe/predict/")
    seen = (await resp.json())["predictions"]
    assert seen["cuda_visible_devices"] == uuid
    assert seen["deepaas_device"] == "cuda:0"
    text = await (await client.get("/metrics")).text()
    labels = {"gpu": "0", "uuid": uuid, "name": "NVIDIA H100 80GB HBM3"}
    assert _sample(text, "deepaas_gpu_utilization_ratio", **labels) == 0.37
    assert _sample(text, "deepaas_gpu_memory_total_bytes", **labels) == gpu.memory_total
    assert _sample(text, "deepaas_gpu_memory_used_bytes", **labels) == gpu.memory_used
    assert _sample(text, "deepaas_gpu_temperature_celsius", **labels) == 55
    assert _sample(text, "deepaas_gpu_power_watts", **labels) == 123.0
    doc = await (await client.get("/v2/system/")).json()
    (device,) = doc["devices"]
    assert device["uuid"] == uuid
    assert device["telemetry"]["utilization_ratio"] == 0.37
    assert doc["workers"][0]["device"] == "cuda:0"
