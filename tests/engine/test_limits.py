"""Deadlines and back-pressure: overload and hung models are answered."""

from __future__ import annotations

import asyncio
import time

import pytest

from deepaas.config import Settings
from deepaas.model.loading import PluginSpec
from deepaas.server import build_app
from tests.engine.conftest import REPO_ROOT
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)

PREDICT = "/v2/models/crashy/predict/"


async def test_past_deadline_answers_504_and_replaces_the_worker(engine_client):
    client, runtime = await engine_client("crashy", predict_timeout=1)
    old_pid = runtime.status().workers[0].pid
    started = time.monotonic()
    resp = await client.post(PREDICT, params={"mode": "sleep"})
    elapsed = time.monotonic() - started
    assert resp.status == 504
    assert "did not answer within 1 s" in (await resp.json())["message"]
    assert 0.9 < elapsed < 5
    resp = await client.post(PREDICT, params={"mode": "ok"})
    assert resp.status == 200
    assert (await resp.json())["predictions"]["pid"] != old_pid


async def test_queued_request_past_deadline_answers_504(aiohttp_client):
    spec = PluginSpec("slow_warm", "tests.plugins.slow_warm")
    app = build_app(Settings(predict_timeout=1), [spec], extra_path=(str(REPO_ROOT),))
    client = await aiohttp_client(app)
    started = time.monotonic()
    # No worker is warm yet: the request waits in the queue, then times out.
    resp = await client.post("/v2/models/slow_warm/predict/")
    assert resp.status == 504
    assert "did not start this request within 1 s" in (await resp.json())["message"]
    assert time.monotonic() - started < 3


async def test_full_queue_answers_503_at_once_with_retry_after(engine_client):
    client, runtime = await engine_client("crashy", max_queue=1)
    running = asyncio.ensure_future(client.post(PREDICT, params={"mode": "nap"}))
    # the worker is busy with it (a 1 s nap)
    assert await eventually(lambda: runtime.status().workers[0].in_flight == 1)
    waiting = asyncio.ensure_future(client.post(PREDICT, params={"mode": "ok"}))
    assert await eventually(lambda: runtime.status().queue_depth == 1)  # 1 of 1
    started = time.monotonic()
    refused = await client.post(PREDICT, params={"mode": "ok"})
    assert time.monotonic() - started < 0.5
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    assert (
        "overloaded: 1 request is already waiting" in (await refused.json())["message"]
    )
    assert (await running).status == 200
    assert (await waiting).status == 200
