"""Nothing a plugin does can hang a request or wedge the server.

Each failure mode answers its request at once with a JSON 5xx saying what
happened; a dead worker is respawned and warmed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from deepaas.config import Settings
from deepaas.model.loading import PluginSpec
from deepaas.server import SERVER, build_app
from tests.deepaas_run import alive
from tests.support import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
PREDICT = "/v2/models/crashy/predict/"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def warm_log(tmp_path, monkeypatch):
    path = tmp_path / "warm.log"
    monkeypatch.setenv("CRASHY_WARM_LOG", str(path))
    return path


async def _client(aiohttp_client, name="crashy", target="tests.plugins.crashy", **kw):
    app = build_app(
        Settings(**kw), [PluginSpec(name, target)], extra_path=(str(REPO_ROOT),)
    )
    client = await aiohttp_client(app)
    return client, app[SERVER].runtimes[name]


def _pids(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def _predict(client, mode):
    resp = await client.post(PREDICT, params={"mode": mode})
    return resp.status, await resp.json()


async def test_model_exception_is_500_with_type_and_text(aiohttp_client):
    client, _ = await _client(aiohttp_client)
    assert await _predict(client, "raise") == (500, {"message": "ValueError: boom"})


async def test_unpicklable_exception_does_not_hang(aiohttp_client):
    client, _ = await _client(aiohttp_client)
    status, body = await _predict(client, "unpicklable_exc")
    assert status == 500
    assert body == {"message": "UnpicklableError: cannot pickle me"}


@pytest.mark.parametrize("mode", ["unpicklable_result", "generator"])
async def test_unserialisable_result_is_500(aiohttp_client, mode):
    client, _ = await _client(aiohttp_client)
    status, body = await _predict(client, mode)
    assert status == 500
    assert "not JSON serializable" in body["message"]


async def test_sys_exit_in_plugin_is_an_error_not_a_death(aiohttp_client):
    client, _ = await _client(aiohttp_client)
    _, before = await _predict(client, "ok")
    assert await _predict(client, "sysexit") == (500, {"message": "SystemExit: 3"})
    _, after = await _predict(client, "ok")
    assert before["predictions"]["pid"] == after["predictions"]["pid"]


@pytest.mark.parametrize(
    ("mode", "how"),
    [
        ("exit", "exited with code 7"),
        ("segfault", "was killed by SIGSEGV"),
        ("sigkill", "was killed by SIGKILL"),
    ],
)
async def test_worker_death_answers_503_and_worker_is_rewarmed(
    aiohttp_client, warm_log, mode, how
):
    client, runtime = await _client(aiohttp_client)
    _, first = await _predict(client, "ok")
    started = time.monotonic()
    status, body = await _predict(client, mode)
    assert time.monotonic() - started < 5
    assert status == 503
    assert how in body["message"]
    assert "crashy" in body["message"]
    # The next request is served by a new, warmed worker.
    status, second = await _predict(client, "ok")
    assert status == 200
    assert second["predictions"]["pid"] != first["predictions"]["pid"]
    pids = _pids(warm_log)
    assert len(pids) == 2
    assert pids[1] == str(second["predictions"]["pid"])
    assert runtime.status().workers[0].restarts == 1


def _scoreboard_fds() -> int:
    """Descriptors of worker scoreboards (shared memory) open in this process."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            count += "deepaas-scoreboard" in os.readlink(f"/proc/self/fd/{fd}")
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
async def test_a_dead_workers_scoreboard_is_released(aiohttp_client):
    before = _scoreboard_fds()
    client, runtime = await _client(aiohttp_client)
    await runtime.wait_ready(10)
    assert _scoreboard_fds() == before + 1
    for _ in range(3):
        assert (await _predict(client, "segfault"))[0] == 503
        status, _ = await _predict(client, "ok")  # served by the new worker
        assert status == 200
    assert runtime.status().workers[0].restarts == 3
    # one mapping for the live worker; none kept for the three dead ones
    assert _scoreboard_fds() == before + 1


async def _until(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


async def test_worker_killed_from_outside_fails_its_request_at_once(
    aiohttp_client, tmp_path, monkeypatch
):
    started = tmp_path / "started.log"
    monkeypatch.setenv("CRASHY_STARTED_LOG", str(started))
    client, runtime = await _client(aiohttp_client)
    await runtime.wait_ready(10)
    pid = runtime.status().workers[0].pid
    request = asyncio.ensure_future(client.post(PREDICT, params={"mode": "sleep"}))
    await _until(started.exists, "the worker runs the call")
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    resp = await request
    assert time.monotonic() - started < 3
    assert resp.status == 503
    assert "SIGKILL" in (await resp.json())["message"]


async def test_queued_requests_survive_a_worker_death(aiohttp_client):
    client, runtime = await _client(aiohttp_client)
    await runtime.wait_ready(10)
    crash = asyncio.ensure_future(_predict(client, "exit"))
    await _until(
        lambda: crash.done() or runtime.status().workers[0].in_flight > 0,
        "the crashing call reaches the worker",
    )
    others = [asyncio.ensure_future(_predict(client, "ok")) for _ in range(3)]
    assert (await crash)[0] == 503
    results = await asyncio.gather(*others)
    # Requests that were still queued are served by the respawned worker;
    # only those already handed to the dead worker may fail with it.
    assert all(status in (200, 503) for status, _ in results)
    assert any(status == 200 for status, _ in results)


async def test_warm_failure_answers_503_with_reason(aiohttp_client):
    client, runtime = await _client(
        aiohttp_client, name="broken", target="tests.plugins.broken_warm"
    )
    deadline = time.monotonic() + 10
    while runtime.status().start_error is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    resp = await client.post("/v2/models/broken/predict/")
    assert resp.status == 503
    message = (await resp.json())["message"]
    assert "warm()" in message
    assert "RuntimeError: weights not found" in message


async def test_warm_failure_is_not_respawned_in_a_hot_loop(aiohttp_client):
    _, runtime = await _client(
        aiohttp_client, name="broken", target="tests.plugins.broken_warm"
    )
    await asyncio.sleep(3)
    # Backoff: 0, 0.25, 0.5, 1, 2 s... at most a handful of tries in 3 s.
    assert 1 <= runtime.status().workers[0].restarts <= 5


async def test_request_waiting_for_a_failing_model_is_answered(aiohttp_client):
    client, _ = await _client(
        aiohttp_client, name="broken", target="tests.plugins.broken_import_in_worker"
    )
    # Sent before the worker has even failed: it must not wait forever.
    resp = await client.post("/v2/models/broken/predict/")
    assert resp.status == 503
    assert "no GPU driver in the worker" in (await resp.json())["message"]


async def test_no_worker_left_after_shutdown(aiohttp_client):
    client, runtime = await _client(aiohttp_client, workers=2)
    await _predict(client, "ok")
    pids = [w.pid for w in runtime.status().workers]
    await client.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_result_file_of_a_client_that_left_is_removed(aiohttp_client):
    client, runtime = await _client(aiohttp_client)
    await runtime.wait_ready(10)
    tmp_dir = Path(runtime.pool.config.tmp_dir)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.post(PREDICT, params={"mode": "big_slow"}), 0.3)
    # The worker finishes the call (its result is written to a file) after
    # the client left; the file is then removed.
    await _until(
        lambda: runtime.status().workers[0].in_flight == 0, "the call is answered"
    )
    await _until(lambda: list(tmp_dir.iterdir()) == [], "the result file is removed")
    # The worker is still fine and the large answer arrives whole.
    resp = await client.post(PREDICT, params={"mode": "big_slow"})
    assert resp.status == 200
    assert len(await resp.read()) == 2 << 20
    assert list(tmp_dir.iterdir()) == []


async def test_result_file_of_a_client_that_left_as_it_came_is_removed(
    aiohttp_client, monkeypatch
):
    """The answer arrived (its future has the result) and, before the
    request's task resumed, its client left (the task is cancelled)."""
    _, runtime = await _client(aiohttp_client)
    await runtime.wait_ready(10)
    tmp_dir = Path(runtime.pool.config.tmp_dir)
    request = asyncio.ensure_future(runtime.predict({"mode": "big_slow"}))
    dispatcher = runtime.dispatcher
    on_results = dispatcher.on_results

    def then_leave(link, message):
        on_results(link, message)  # the result is set on the call's future
        request.cancel()  # the client leaves before the task resumes

    monkeypatch.setattr(dispatcher, "on_results", then_leave)
    with pytest.raises(asyncio.CancelledError):
        await request
    await _until(lambda: list(tmp_dir.iterdir()) == [], "the result file is removed")


@pytest.mark.parametrize(
    ("mode", "status", "settings"),
    [
        ("file_then_exit", 503, {}),
        ("file_then_sigkill", 503, {}),
        ("file_then_hang", 504, {"predict_timeout": 2}),
    ],
)
async def test_result_file_of_a_worker_that_died_before_sending_it_is_removed(
    aiohttp_client, mode, status, settings
):
    """The worker wrote the result file, then died (or was killed at its
    deadline) before its answer went out: the file is removed as soon as
    the death is handled, not when the server stops."""
    client, runtime = await _client(aiohttp_client, **settings)
    await runtime.wait_ready(10)
    tmp_dir = Path(runtime.pool.config.tmp_dir)
    resp = await client.post(PREDICT, params={"mode": mode})
    assert resp.status == status, await resp.text()
    await _until(lambda: list(tmp_dir.iterdir()) == [], "the result file is removed")
    # The new worker's large answers are still sent whole, then removed.
    resp = await client.post(PREDICT, params={"mode": "big_slow"})
    assert resp.status == 200
    assert len(await resp.read()) == 2 << 20
    await _until(lambda: list(tmp_dir.iterdir()) == [], "the answer's file is removed")


async def test_a_warm_that_hangs_fails_the_start_at_the_start_timeout(
    aiohttp_client, tmp_path, monkeypatch
):
    """Readiness and the waiting request say why at --worker-start-timeout
    (the request does not wait for --predict-timeout, nor for ever); the
    stuck worker is killed and started again after the backoff."""
    pids = tmp_path / "pids"
    monkeypatch.setenv("STUCK_WARM_PIDS", str(pids))
    client, runtime = await _client(
        aiohttp_client, "stuck", "tests.plugins.stuck_warm", worker_start_timeout=1
    )
    resp = await client.post("/v2/models/stuck/predict/")
    body = await resp.json()
    assert resp.status == 503, body
    assert "did not start within 1 s (--worker-start-timeout)" in body["message"]
    assert "import or warm() is slow or stuck" in body["message"]
    ready = await client.get("/readyz")
    assert ready.status == 503
    document = await ready.json()
    assert document["status"] == "unavailable"
    assert "--worker-start-timeout" in document["models"]["stuck"]["error"]
    first = int(_pids(pids)[0])
    await _until(lambda: not alive(first), "the stuck worker is gone")
    await _until(lambda: len(_pids(pids)) >= 2, "a new worker starts")
    assert runtime.status().workers[0].restarts >= 1


async def test_a_start_failing_again_logs_its_traceback_once(aiohttp_client, caplog):
    """Each failed start logs its one-line reason; the traceback comes with
    the first only (a respawn with the same files would repeat it), in the
    same record, at its level (ERROR)."""
    caplog.set_level(logging.INFO)
    _, runtime = await _client(
        aiohttp_client, name="broken", target="tests.plugins.broken_warm"
    )
    assert await eventually(
        lambda: runtime.status().workers[0].restarts >= 2, seconds=20
    ), runtime.status()
    reasons = [
        r
        for r in caplog.records
        if r.name == "deepaas.engine.pool" and "worker failed at warm" in r.message
    ]
    tracebacks = [
        r for r in caplog.records if "Traceback (most recent call last)" in r.message
    ]
    assert len(reasons) >= 2, [r.message for r in reasons]
    assert tracebacks == reasons[:1], [r.message for r in tracebacks]
    assert reasons[0].levelno == logging.ERROR
