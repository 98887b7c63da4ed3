"""Trainings while the server stops: submissions refused, streams ended, jobs
stopped within the bound (SIGTERM, then SIGKILL), records kept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from deepaas.engine.process import pid_alive
from deepaas.server import SERVER
from deepaas.training import store as st
from deepaas.training.jobs import JobManager
from tests.support import REPO_ROOT, plugin_spec, start_client, wait_for

pytestmark = pytest.mark.timeout(60)

TRAIN = "/v2/models/trainer/train/"


async def test_draining_refuses_submissions_and_ends_log_streams(tmp_path: Path):
    client = await start_client(
        [plugin_spec("trainer")], {"state_dir": str(tmp_path), "devices": "cpu"}
    )
    try:
        record = await (
            await client.post(
                TRAIN, json={"mode": "print", "lines": 1000, "seconds": 0.05}
            )
        ).json()
        stream = await client.get(
            TRAIN + record["uuid"] + "/logs", params={"follow": "true"}
        )
        assert await stream.content.readline() == b"line 0\n"  # streaming
        client.app[SERVER].lifecycle.drain()
        rest = await asyncio.wait_for(stream.content.read(), 5.0)  # it ends
        assert b"line 999" not in rest
        response = await client.post(TRAIN, json={"mode": "sleep"})
        body = await response.json()
        assert response.status == 503, body
        assert body["message"] == "the server is shutting down"
        response = await client.get(TRAIN + record["uuid"])  # reads still work
        assert (await response.json())["status"] == "running"
    finally:
        await client.close()


async def test_stop_is_bounded_and_kills_what_ignores_sigterm(tmp_path: Path):
    store = st.TrainingStore(str(tmp_path))
    manager = JobManager(
        store,
        {"trainer": "tests.plugins.trainer"},
        cancel_grace=30.0,  # longer than stop's grace: stop's wins
        extra_path=(str(REPO_ROOT),),
        warm=False,
    )
    await manager.open()
    submitted = []
    for mode in ("stubborn", "sleep"):
        uuid = manager.new_id()
        await manager.prepare(uuid)
        submitted.append(
            await manager.submit("trainer", uuid, {"mode": mode, "seconds": 60}, None)
        )
    stubborn, queued = submitted
    assert (stubborn.status, queued.status) == (st.RUNNING, st.QUEUED)

    async def started() -> bool:
        return "ignoring SIGTERM" in Path(stubborn.log_path).read_text()

    assert await wait_for(started)
    job = manager.active(stubborn.uuid)
    assert job is not None and job.child is not None
    pid = job.child.pid
    grace = 1.0
    began = time.monotonic()
    await manager.stop(grace)
    took = time.monotonic() - began
    assert grace <= took < grace + 1.5, took  # SIGKILL at grace; about grace + 1
    assert not pid_alive(pid)

    reopened = st.TrainingStore(str(tmp_path))
    await reopened.open()
    try:
        was_running = await reopened.get(stubborn.uuid)
        was_queued = await reopened.get(queued.uuid)
    finally:
        await reopened.close()
    assert was_running is not None and was_queued is not None
    assert (was_running.status, was_running.message) == (
        st.ERROR,
        st.STOPPED_WHILE_RUNNING,
    )
    assert (was_queued.status, was_queued.message) == (
        st.ERROR,
        st.STOPPED_WHILE_QUEUED,
    )
