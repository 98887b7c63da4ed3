"""The failing scenarios of issue 7, reproduced against real worker processes.

- a worker that segfaults fails only the request it was running, not those
  pipelined behind it;
- fast requests do not wait behind a slow one while another worker is idle,
  and a deadline kill fails only the request that ran out of time;
- workers are recycled after ``--worker-max-requests`` calls and past
  ``--worker-max-memory``, with no request failing during the swap; a worker
  past its limit runs only the calls it was handed while another worker is
  ready, and each recycle counts once;
- a replaced worker that dies while it finishes its calls is reported (one
  told to stop exits 0 and warns nothing: tests/training/test_reload.py).

Order comes from events (files the plugin writes, answers, polled state with
deadlines), never from sleeps; the only time bounds are "does not hang" ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from deepaas.config import Settings
from deepaas.engine.replacement import RELOAD
from deepaas.model.loading import PluginSpec
from deepaas.server import SERVER, build_app
from tests.engine.conftest import REPO_ROOT

pytestmark = pytest.mark.timeout(90)

MODEL = "faults"
PREDICT = f"/v2/models/{MODEL}/predict/"
HANG_S = 30.0  # "does not hang" bound of every wait below
T = TypeVar("T")


async def _start(aiohttp_client, **settings):
    spec = PluginSpec(MODEL, "tests.plugins.faults")
    app = build_app(Settings(**settings), [spec], extra_path=(str(REPO_ROOT),))
    client = await aiohttp_client(app)
    runtime = app[SERVER].runtimes[MODEL]
    assert await runtime.wait_ready(HANG_S)
    return client, runtime


async def _predict(client, **params) -> tuple[int, dict]:
    resp = await client.post(PREDICT, params={k: str(v) for k, v in params.items()})
    return resp.status, await resp.json()


async def _until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


async def _until_async(
    read: Callable[[], Awaitable[T]], check: Callable[[T], bool], what: str
) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    while True:
        value = await read()
        if check(value):
            return value
        assert loop.time() < deadline, f"timed out waiting for {what}: {value!r}"
        await asyncio.sleep(0.02)


async def _restarts(client, model: str = MODEL) -> dict[str, float]:
    """``deepaas_worker_restarts_total`` of ``model``, by reason."""
    text = await (await client.get("/metrics")).text()
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^deepaas_worker_restarts_total\{(.*)\} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels.get("model") == model:
                found[labels["reason"]] = float(match.group(2))
    return found


async def _both_workers_fast(client, runtime) -> set[int]:
    """Send fast calls until both workers answered some (so each has a
    measured call time and takes calls ahead of time); their pids."""
    # wait_ready() is one worker ready: on a busy machine the other may
    # still be starting, and no call could reach it.
    await _until(
        lambda: all(w.state == "ready" for w in runtime.status().workers),
        "every worker is ready",
    )
    expected = {w.pid for w in runtime.status().workers}
    seen: set[int] = set()
    for _ in range(50):
        results = await asyncio.gather(*(_predict(client) for _ in range(16)))
        assert {status for status, _ in results} == {200}
        seen |= {body["predictions"]["pid"] for _, body in results}
        if seen == expected:
            return seen
    raise AssertionError(f"only workers {seen} of {expected} answered")


def _resident_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) >> 10
    raise AssertionError(f"no VmRSS for pid {pid}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


# -- a segfault fails only its own request -------------------------------------


async def test_a_segfault_fails_only_the_request_it_was_running(aiohttp_client):
    client, runtime = await _start(aiohttp_client, workers=2)
    await _both_workers_fast(client, runtime)
    # Sent together: the harmless ones are queued and pipelined around the
    # crashing one, some to the worker that dies.
    crash = asyncio.ensure_future(_predict(client, mode="segfault"))
    harmless = [asyncio.ensure_future(_predict(client)) for _ in range(63)]
    status, body = await crash
    assert status == 503
    assert "was killed by SIGSEGV" in body["message"]
    assert MODEL in body["message"]
    results = await asyncio.gather(*harmless)
    failed = [(status, body) for status, body in results if status != 200]
    assert failed == []
    restarts = await _until_async(
        lambda: _restarts(client), lambda r: "crashed" in r, "a crash restart"
    )
    assert restarts == {"crashed": 1}


# -- head-of-line blocking -------------------------------------------------------


async def test_fast_requests_do_not_wait_behind_a_slow_one(aiohttp_client, tmp_path):
    client, runtime = await _start(aiohttp_client, workers=2)
    await _both_workers_fast(client, runtime)
    started, release = tmp_path / "started", tmp_path / "release"
    slow = asyncio.ensure_future(
        _predict(
            client,
            mode="slow",
            seconds=2 * HANG_S,  # outlasts the wait for the fast ones below
            started=started,
            release=release,
        )
    )
    await _until(started.exists, "the slow request runs")
    slow_pid = int(started.read_text())
    fast = [asyncio.ensure_future(_predict(client)) for _ in range(20)]
    try:
        # Every fast request is answered while the slow one still runs: had one
        # waited behind it, it would wait until the release (or HANG_S).
        done, _ = await asyncio.wait(fast, timeout=HANG_S)
        assert len(done) == 20, "fast requests waited behind the slow one"
        assert not slow.done()
        results = [task.result() for task in fast]
        assert [status for status, _ in results] == [200] * 20
        pids = Counter(body["predictions"]["pid"] for _, body in results)
        assert slow_pid not in pids  # the other worker answered them all
    finally:
        release.touch()
    status, body = await slow
    assert status == 200
    assert body["predictions"] == {"pid": slow_pid, "released": True}


async def test_a_deadline_kill_fails_only_the_slow_request(aiohttp_client, tmp_path):
    client, runtime = await _start(aiohttp_client, workers=2, predict_timeout=1)
    await _both_workers_fast(client, runtime)
    started = tmp_path / "started"
    slow = asyncio.ensure_future(
        _predict(client, mode="slow", seconds=3, started=started)
    )
    await _until(started.exists, "the slow request runs")
    fast = [asyncio.ensure_future(_predict(client)) for _ in range(20)]
    status, body = await slow
    assert status == 504
    assert "did not answer within 1 s" in body["message"]
    results = await asyncio.gather(*fast)
    assert [(s, b) for s, b in results if s != 200] == []
    # Its worker is replaced (counted once the killed process is reaped).
    await _until_async(
        lambda: _restarts(client), lambda r: r.get("timeout") == 1, "a timeout restart"
    )
    assert await _restarts(client) == {"timeout": 1}


# -- recycling ---------------------------------------------------------------------


async def test_worker_max_requests_recycles_after_that_many_calls(aiohttp_client):
    client, runtime = await _start(aiohttp_client, worker_max_requests=3)
    answered_by: list[int] = []
    for _ in range(3):  # three workers in turn, three calls each
        pid = runtime.status().workers[0].pid
        for _ in range(3):
            status, body = await _predict(client)
            assert status == 200
            answered_by.append(body["predictions"]["pid"])
        # The replacement warms, then takes over; the old one exits.
        await _until(
            lambda pid=pid: (
                [(w.state, w.pid != pid) for w in runtime.status().workers]
                == [("ready", True)]
                and not _alive(pid)
            ),
            "the worker that answered 3 calls is replaced",
        )
    assert [n for _, n in Counter(answered_by).most_common()] == [3, 3, 3]
    assert await _restarts(client) == {"max_requests": 3}
    assert runtime.status().workers[0].restarts == 3


async def test_no_request_fails_while_workers_are_recycled(aiohttp_client):
    client, runtime = await _start(aiohttp_client, workers=2, worker_max_requests=3)
    statuses: Counter[int] = Counter()
    pids: set[int] = set()
    for _ in range(15):  # 8 concurrent requests at a time, 120 in all
        results = await asyncio.gather(*(_predict(client) for _ in range(8)))
        statuses.update(status for status, _ in results)
        pids |= {body["predictions"]["pid"] for status, body in results}
    assert statuses == {200: 120}
    restarts = await _restarts(client)
    assert set(restarts) == {"max_requests"}
    # Each worker answers at least 3 calls, so at most 40 were replaced; and
    # every worker that answered a call was either replaced or is still there.
    assert 1 <= restarts["max_requests"] <= 40
    assert len(pids) <= restarts["max_requests"] + 2
    # Each counted once, also while a retiring worker is listed with its
    # replacement (only the slot's current worker carries the count).
    assert restarts["max_requests"] == runtime.status().restarts


async def test_worker_max_memory_recycles_a_worker_past_the_limit(aiohttp_client):
    limit_mb = 200
    client, runtime = await _start(aiohttp_client, worker_max_memory=limit_mb)
    first = runtime.status().workers[0].pid
    base_mb = _resident_mb(first)
    answered: list[tuple[int, int]] = []
    while not answered or answered[-1][0] == first:
        assert len(answered) < 40, "the worker was never replaced"
        status, body = await _predict(client, mode="leak", mb=32)
        assert status == 200  # recycling fails nothing
        answered.append((body["predictions"]["pid"], body["predictions"]["leaked_mb"]))
    # The first worker was replaced once it passed the limit, not before
    # (give or take one allocation, and what else its heap grew by).
    assert max(mb for pid, mb in answered if pid == first) >= limit_mb - base_mb - 32
    assert answered[-1] == (runtime.status().workers[0].pid, 32)
    assert (await _restarts(client)).get("max_memory", 0) >= 1
    await _until(lambda: not _alive(first), "the replaced worker exits")
    assert (await client.get("/readyz")).status == 200


async def test_a_worker_over_max_memory_runs_only_what_it_was_handed(
    aiohttp_client, tmp_path, monkeypatch
):
    limit_mb = 200
    client, runtime = await _start(
        aiohttp_client, workers=2, worker_max_memory=limit_mb
    )
    pool, dispatcher = runtime.pool, runtime.dispatcher
    # pid -> (reason, calls answered or held) when it was first marked.
    marked: dict[int | None, tuple[str, int]] = {}
    recycle = pool.recycle

    def recycle_and_note(worker, reason):
        held = dispatcher.answered(worker) + dispatcher.held(worker)
        marked.setdefault(worker.pid, (reason, held))
        recycle(worker, reason)

    monkeypatch.setattr(pool, "recycle", recycle_and_note)
    # One worker is kept busy, so that the other takes the leak.
    started, release = tmp_path / "started", tmp_path / "release"
    slow = asyncio.ensure_future(
        _predict(
            client, mode="slow", seconds=2 * HANG_S, started=started, release=release
        )
    )
    try:
        await _until(started.exists, "the slow request runs")
        busy_pid = int(started.read_text())
        status, body = await _predict(client, mode="leak", mb=limit_mb + 32)
        assert status == 200
        over_pid = body["predictions"]["pid"]
        assert over_pid != busy_pid
        assert marked == {over_pid: ("max_memory", 1)}
    finally:
        release.touch()
    assert (await slow)[0] == 200
    # A steady load on two workers until the worker over the limit is gone
    # and its replacement serves: the other worker, then the replacement,
    # take every new call; the one over the limit runs none.
    answered_by: Counter[int] = Counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    while _alive(over_pid) or not set(answered_by) - {busy_pid, over_pid}:
        assert loop.time() < deadline, f"not replaced: {answered_by}"
        results = await asyncio.gather(*(_predict(client) for _ in range(8)))
        assert {status for status, _ in results} == {200}
        answered_by.update(body["predictions"]["pid"] for _, body in results)
    assert answered_by[over_pid] == 0
    assert answered_by[busy_pid] > 0
    assert set(marked) == {over_pid}
    assert await _restarts(client) == {"max_memory": 1}
    assert runtime.status().restarts == 1


async def test_a_recycle_counts_once_while_old_and_new_workers_are_listed(
    engine_client,
):
    model = "slow_warm"  # warming takes 2.5 s: the swap is long enough to see
    client, runtime = await engine_client(model, worker_max_requests=2)
    old = runtime.status().workers[0].pid
    for _ in range(2):
        assert (await client.post(f"/v2/models/{model}/predict/")).status == 200
    # The second answer marked it; its replacement now warms (2.5 s).
    during = runtime.status()
    assert sorted((w.state, w.pid == old, w.restarts) for w in during.workers) == [
        ("retiring", True, 0),
        ("starting", False, 1),
    ]
    assert during.restarts == 1
    assert await _restarts(client, model) == {"max_requests": 1}
    system = await (await client.get("/v2/system/")).json()
    assert sum(w["restarts"] for w in system["workers"] if w["model"] == model) == 1
    await _until(
        lambda: (
            [(w.state, w.pid != old) for w in runtime.status().workers]
            == [("ready", True)]
            and not _alive(old)
        ),
        "the replacement takes over",
    )
    assert runtime.status().restarts == runtime.status().workers[0].restarts == 1
    assert await _restarts(client, model) == {"max_requests": 1}


# -- a replaced worker's exit ----------------------------------------------------------


async def test_a_replaced_worker_that_dies_is_still_reported(
    aiohttp_client, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="deepaas")
    client, runtime = await _start(aiohttp_client, workers=1)
    pool = runtime.pool
    old = pool.slots[0]
    started, release = tmp_path / "started", tmp_path / "release"
    slow = asyncio.ensure_future(
        _predict(
            client, mode="slow", seconds=2 * HANG_S, started=started, release=release
        )
    )
    try:
        await _until(started.exists, "the slow call runs")
        pool.recycle(old, RELOAD)  # as after a training
        await _until(
            lambda: pool.slots[0] is not old and pool.slots[0].state.value == "ready",
            "its replacement is ready",
        )
        assert old.state.value == "retiring"  # finishing its slow call
        os.kill(old.pid, signal.SIGKILL)
        status, body = await slow
    finally:
        release.touch()
    assert status == 503
    assert "was killed by SIGKILL" in body["message"]
    assert old.child is not None
    assert await asyncio.wait_for(asyncio.shield(old.child.exited), HANG_S) == -9
    await _until(lambda: old not in pool.retired, "its exit is handled")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        f"model {MODEL}: retired worker 0 (pid {old.pid}) was killed by SIGKILL"
        in warnings
    ), warnings
    assert (await _predict(client))[0] == 200
