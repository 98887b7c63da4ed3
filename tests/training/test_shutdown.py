"""Trainings while the server stops: submissions refused, streams ended,
queued trainings ended at once, running ones given the shutdown timeout
(a real ``deepaas-run`` and SIGTERM), then stopped within the bound
(SIGTERM, then SIGKILL), records kept."""

from __future__ import annotations

import asyncio
import functools
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deepaas.engine.process import pid_alive
from deepaas.server import SERVER, STOP_BUDGET_S
from deepaas.training import store as st
from deepaas.training.jobs import JobManager
from tests.deepaas_run import alive, closed_at_end, until
from tests.support import REPO_ROOT, plugin_spec, start_client, wait_for
from tests.training.runserver import GATED, RunServer, stored

pytestmark = pytest.mark.timeout(90)

Start = Callable[..., RunServer]

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


# -- a real server and SIGTERM ------------------------------------------------


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Start]:
    state = tmp_path / "state"
    make = functools.partial(RunServer, tmp_path, state, "--model-name", "gated")
    with closed_at_end(make) as start:
        yield start


def _start_two(server: RunServer, gate: Path) -> tuple[str, str, int]:
    """A running training that ends when ``gate`` appears, and a queued one;
    their uuids and the running one's process."""
    ids = []
    for expected in ("running", "queued"):
        status, body = server.request("POST", GATED, {"gate": str(gate)})
        assert status == 200 and body["status"] == expected, body
        ids.append(body["uuid"])
    pid = until(lambda: server.runners().get(ids[0]), "the training runs")
    return ids[0], ids[1], pid


def test_sigterm_lets_a_running_training_finish(servers: Start, tmp_path: Path):
    """No request in flight: the drain still waits for the training."""
    server = servers("--shutdown-timeout", "60").wait_ready()
    gate = tmp_path / "gate"
    running, queued, _ = _start_two(server, gate)
    began = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    until(
        lambda: "1 training(s) running get up to 60s" in server.output(),
        "the server drains",
    )
    status, body = server.request("POST", GATED, {"gate": str(gate)})
    assert status == 503, body
    assert server.record(running, GATED)["status"] == "running"  # not stopped
    ended = server.record(queued, GATED)
    assert (ended["status"], ended["message"]) == ("error", st.STOPPED_WHILE_QUEUED)
    gate.touch()  # the training finishes now
    assert server.proc.wait(timeout=30) == 0
    assert time.monotonic() - began < 30  # it did not wait for the timeout
    assert stored(server.state_dir)[running] == ("done", None)
    assert "still running after" not in server.output()


def test_trainings_left_at_the_shutdown_timeout_are_stopped(
    servers: Start, tmp_path: Path
):
    server = servers("--shutdown-timeout", "2").wait_ready()
    running, queued, pid = _start_two(server, tmp_path / "never")
    began = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=2 + STOP_BUDGET_S + 3) == 0
    took = time.monotonic() - began
    assert 2.0 <= took < 2 + STOP_BUDGET_S, took
    assert not alive(pid)
    records = stored(server.state_dir)
    assert records[running] == ("error", st.STOPPED_WHILE_RUNNING)
    assert records[queued] == ("error", st.STOPPED_WHILE_QUEUED)
    output = server.output()
    assert "1 training(s) still running after 2." in output, output
    assert "second signal" not in output


def test_a_second_sigterm_stops_trainings_at_once(servers: Start, tmp_path: Path):
    server = servers("--shutdown-timeout", "60").wait_ready()
    running, _, pid = _start_two(server, tmp_path / "never")
    server.proc.send_signal(signal.SIGTERM)
    until(lambda: "get up to 60s" in server.output(), "the server drains")
    began = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=STOP_BUDGET_S + 3) == 0
    assert time.monotonic() - began < STOP_BUDGET_S
    assert not alive(pid)
    assert stored(server.state_dir)[running] == ("error", st.STOPPED_WHILE_RUNNING)
    output = server.output()
    assert "still running after" in output and "(a second signal)" in output
    assert "after 60" not in output  # the message tells what happened
