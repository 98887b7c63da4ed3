"""Trained models reach predict: a training that ends ``done`` reloads the
model's predict workers (``--reload-after-train``), with real worker and
training processes (tests/plugins/reloadable: ``train()`` saves a value to a
file, ``warm()`` loads it, ``predict()`` answers it).

- predictions answer the new value once the training is done, every worker
  is replaced one at a time, and no request fails during the roll while
  clients keep sending (capacity never drops below ``--workers``);
- ``--noreload-after-train`` keeps the workers and the old value;
- new files that a worker cannot load (``warm()`` raises) leave the old
  workers serving; the failure is in ``/v2/system/`` and the log, and the
  next training reloads again;
- a training that ends while a reload rolls restarts it: newest files win;
- a model that could not start without trained files starts once a training
  saved them, without waiting for its respawn backoff;
- a worker replaced after a training (or recycled), told to stop while a
  call taken back from it is still unread in its socket, exits 0 and no
  warning is logged.

Order comes from polled state with deadlines, never from sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deepaas.config import Settings, load_settings
from deepaas.engine import respawn as respawn_module
from deepaas.engine.runtime import ModelRuntime
from deepaas.model.loading import PluginSpec
from deepaas.server import SERVER, build_app
from tests.support import REPO_ROOT, Client, training_ended

pytestmark = pytest.mark.timeout(120)

MODEL = "reloadable"
PREDICT = f"/v2/models/{MODEL}/predict/"
TRAIN = f"/v2/models/{MODEL}/train/"
HANG_S = 30.0  # the "does not hang" bound of every wait below


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin's weights file (workers and trainings inherit the variable)."""
    path = tmp_path / "weights.txt"
    monkeypatch.setenv("RELOADABLE_WEIGHTS", str(path))
    return path


async def _start(
    aiohttp_client: Any, tmp_path: Path, ready: bool = True, **settings: Any
) -> tuple[Client, ModelRuntime]:
    settings = {"devices": "cpu", "state_dir": str(tmp_path / "state"), **settings}
    app = build_app(
        Settings(**settings),
        [PluginSpec(MODEL, f"tests.plugins.{MODEL}")],
        extra_path=(str(REPO_ROOT),),
    )
    client = await aiohttp_client(app)
    runtime = app[SERVER].runtimes[MODEL]
    if ready:
        await _until(
            lambda: runtime.status().ready_workers == runtime.pool.config.size,
            "every worker is ready",
        )
    return client, runtime


async def _until(predicate: Callable[[], Any], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


async def _predict(client: Client) -> dict[str, Any]:
    response = await client.post(PREDICT)
    body = await response.json()
    assert response.status == 200, body
    return body["predictions"]


async def _train(client: Client, value: str) -> dict[str, Any]:
    """Submit a training; return its record once it is done."""
    response = await client.post(TRAIN, json={"value": value})
    record = await response.json()
    assert response.status == 200, record
    record = await training_ended(client, TRAIN + record["uuid"], HANG_S)
    assert record["status"] == "done", record
    return record


def _pids(runtime: ModelRuntime) -> set[int | None]:
    return {w.pid for w in runtime.status().workers}


async def _settled(runtime: ModelRuntime) -> None:
    """Wait until the workers that were replaced are gone (they finish their
    calls and exit after their replacements are ready)."""
    size = runtime.pool.config.size
    await _until(
        lambda: [w.state for w in runtime.status().workers] == ["ready"] * size,
        "only the model's current workers are left",
    )


async def _answers(client: Client, runtime: ModelRuntime) -> dict[int, str]:
    """pid -> value, from predictions until every current worker answered
    (once the workers that were replaced are gone)."""
    await _settled(runtime)
    expected = _pids(runtime)
    seen: dict[int, str] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    while set(seen) != expected:
        assert loop.time() < deadline, f"only {seen} of {expected} answered"
        results = await asyncio.gather(*(_predict(client) for _ in range(8)))
        seen.update((r["pid"], r["value"]) for r in results)
        assert set(seen) <= expected, (seen, expected)
    return seen


async def _restarts(client: Client) -> dict[str, float]:
    """``deepaas_worker_restarts_total`` of the model, by reason."""
    text = await (await client.get("/metrics")).text()
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^deepaas_worker_restarts_total\{(.*)\} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels.get("model") == MODEL:
                found[labels["reason"]] = float(match.group(2))
    return found


class Load:
    """Clients sending predictions back to back, and a watcher of the
    engine's state, until stopped: what they saw."""

    def __init__(self, client: Client, runtime: ModelRuntime, clients: int = 4):
        self.client = client
        self.runtime = runtime
        self.statuses: Counter[int] = Counter()
        self.values: Counter[str] = Counter()
        self.during_reload = 0  # requests answered while a reload rolled
        self.least_taking_calls = runtime.pool.config.size
        self.most_starting = 0
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._send()) for _ in range(clients)] + [
            asyncio.ensure_future(self._watch())
        ]

    async def _send(self) -> None:
        while not self._stop.is_set():
            response = await self.client.post(PREDICT)
            body = await response.json()
            self.statuses[response.status] += 1
            if response.status == 200:
                self.values[body["predictions"]["value"]] += 1
                if self.runtime.reloader.rolling:
                    self.during_reload += 1

    async def _watch(self) -> None:
        pool, dispatcher = self.runtime.pool, self.runtime.dispatcher
        while not self._stop.is_set():
            workers = pool.workers
            taking = sum(dispatcher.takes_calls(w) for w in workers)
            starting = sum(w.state.value == "starting" for w in workers)
            self.least_taking_calls = min(self.least_taking_calls, taking)
            self.most_starting = max(self.most_starting, starting)
            await asyncio.sleep(0.001)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


# -- the new value reaches predict; no request fails ------------------------------


async def test_predictions_use_what_the_training_saved_and_none_fails(
    aiohttp_client, tmp_path, weights
):
    client, runtime = await _start(aiohttp_client, tmp_path, workers=2)
    before = _pids(runtime)
    assert set((await _answers(client, runtime)).values()) == {"initial"}
    load = Load(client, runtime)
    try:
        await _until(lambda: load.values["initial"] >= 20, "the load runs")
        record = await _train(client, "v1")
        reload = runtime.status().reload
        assert reload is not None
        assert reload.cause == f"training {record['uuid']} ended"
        await _until(lambda: runtime.status().reload.state == "done", "the reload ends")
        served = load.values["v1"]
        await _until(lambda: load.values["v1"] >= served + 20, "v1 is served")
    finally:
        await load.stop()
    # Every request sent during the roll was answered 200.
    assert set(load.statuses) == {200}, load.statuses
    assert load.during_reload > 0
    # Capacity never dropped: two workers took calls at every moment, and
    # only one new worker started at a time.
    assert load.least_taking_calls >= 2
    assert load.most_starting == 1
    await _settled(runtime)
    status = runtime.status()
    assert [(w.state, w.generation) for w in status.workers] == [
        ("ready", 1),
        ("ready", 1),
    ]
    assert status.reload is not None
    assert (status.reload.state, status.reload.replaced, status.reload.error) == (
        "done",
        2,
        None,
    )
    answers = await _answers(client, runtime)
    assert set(answers.values()) == {"v1"}
    assert not set(answers) & before  # new processes
    assert await _restarts(client) == {"reload": 2}
    system = await (await client.get("/v2/system/")).json()
    assert system["reloads"][MODEL]["state"] == "done"
    assert [w["generation"] for w in system["workers"]] == [1, 1]


# -- --noreload-after-train -------------------------------------------------------


def test_the_option_and_its_no_form():
    assert load_settings([], environ={}).reload_after_train is True
    off = load_settings(["--noreload-after-train"], environ={})
    assert off.reload_after_train is False
    env = {"DEEPAAS_RELOAD_AFTER_TRAIN": "false"}
    assert load_settings([], environ=env).reload_after_train is False
    assert load_settings(["--reload-after-train"], environ=env).reload_after_train


async def test_noreload_after_train_keeps_the_workers_and_the_old_value(
    aiohttp_client, tmp_path, weights
):
    client, runtime = await _start(aiohttp_client, tmp_path, reload_after_train=False)
    before = _pids(runtime)
    await _train(client, "v1")
    assert weights.read_text() == "v1"
    # A reload starts the moment the record turns done: none did.
    status = runtime.status()
    assert status.reload is None
    assert [(w.state, w.generation) for w in status.workers] == [("ready", 0)]
    assert await _answers(client, runtime) == {before.pop(): "initial"}
    assert await _restarts(client) == {}


# -- new files that do not load ---------------------------------------------------


async def test_a_new_warm_that_fails_leaves_the_old_workers_serving(
    aiohttp_client, tmp_path, weights, caplog
):
    caplog.set_level(logging.INFO, logger="deepaas")
    client, runtime = await _start(aiohttp_client, tmp_path, workers=2)
    before = _pids(runtime)
    load = Load(client, runtime)
    try:
        await _train(client, "bad weights")
        await _until(
            lambda: runtime.status().reload.state != "rolling", "the reload ends"
        )
    finally:
        await load.stop()
    assert set(load.statuses) == {200}, load.statuses
    assert set(load.values) == {"initial"}
    status = runtime.status()
    reload = status.reload
    assert reload is not None and reload.state == "failed", reload
    assert reload.replaced == 0
    assert reload.error == (
        "warm() of model 'reloadable' failed: RuntimeError: cannot load the "
        "weights: 'bad weights' is corrupt"
    )
    # The old workers keep their slots and serve on; nothing else runs.
    assert [(w.state, w.pid in before) for w in status.workers] == [
        ("ready", True),
        ("ready", True),
    ]
    assert status.start_error is None
    assert set((await _answers(client, runtime)).values()) == {"initial"}
    assert (await client.get("/readyz")).status == 200
    system = await (await client.get("/v2/system/")).json()
    assert system["reloads"][MODEL]["state"] == "failed"
    assert system["reloads"][MODEL]["error"] == reload.error
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        m.startswith("model reloadable: reload failed, a new worker could not start")
        and "'bad weights' is corrupt" in m
        and "keeps serving" in m
        and m.endswith(
            "the other workers keep the files they loaded (the next training "
            "that ends reloads again)"
        )
        for m in logged
    ), logged
    # The next training that ends reloads again.
    await _train(client, "v2")
    await _until(lambda: runtime.status().reload.state == "done", "reloaded")
    answers = await _answers(client, runtime)
    assert set(answers.values()) == {"v2"}
    assert not set(answers) & before


# -- a training that ends during a roll ---------------------------------------------


async def test_a_training_that_ends_during_a_reload_restarts_it(
    aiohttp_client, tmp_path, weights
):
    client, runtime = await _start(aiohttp_client, tmp_path, workers=2)
    hold = Path(f"{weights}.hold")
    hold.touch()  # new workers wait in warm() while it exists
    load = Load(client, runtime)
    try:
        await _train(client, "v1")
        await _until(
            lambda: any(w.state.value == "starting" for w in runtime.pool.workers),
            "the first replacement warms",
        )
        second = await _train(client, "v2")
        reload = runtime.status().reload
        assert reload is not None
        assert (reload.cause, reload.state) == (
            f"training {second['uuid']} ended",
            "rolling",
        )
        hold.unlink()
        await _until(lambda: runtime.status().reload.state == "done", "reloaded")
    finally:
        with contextlib.suppress(FileNotFoundError):
            hold.unlink()
        await load.stop()
    assert set(load.statuses) == {200}, load.statuses
    assert load.least_taking_calls >= 2
    assert load.most_starting == 1  # never two rolls at once
    await _settled(runtime)
    status = runtime.status()
    assert [(w.state, w.generation) for w in status.workers] == [
        ("ready", 2),
        ("ready", 2),
    ]
    # The replacement started before v2 was saved was replaced again.
    assert await _restarts(client) == {"reload": 3}
    assert set((await _answers(client, runtime)).values()) == {"v2"}


# -- a model that needs trained files to start ----------------------------------------


async def test_a_model_that_could_not_start_starts_once_trained(
    aiohttp_client, tmp_path, weights, monkeypatch
):
    # Without weights warm() fails; after the first failure the next start
    # would wait an hour: only the reload can start it within the test.
    monkeypatch.setattr(
        respawn_module, "respawn_delay", lambda n: 0.0 if n <= 1 else 3600.0
    )
    Path(weights).write_text("bad: none trained yet")
    client, runtime = await _start(aiohttp_client, tmp_path, ready=False)
    await _until(
        lambda: runtime.pool.failures_in_a_row[0] >= 2, "the model failed twice"
    )
    response = await client.post(PREDICT)
    assert response.status == 503
    assert "cannot load the weights" in (await response.json())["message"]
    await _train(client, "v1")
    await _until(lambda: runtime.status().ready_workers == 1, "the model starts")
    assert set((await _answers(client, runtime)).values()) == {"v1"}
    assert runtime.status().reload.state == "done"


# -- a replaced worker stops cleanly -------------------------------------------------


@pytest.mark.parametrize("cause", ["reload", "max_requests"])
async def test_a_replaced_worker_that_is_told_to_stop_exits_cleanly(
    aiohttp_client, tmp_path, weights, caplog, cause
):
    """Warm before retire, after a training (``reload``) or a recycle
    (``--worker-max-requests``): the old worker is told to stop while a call
    it was sent, then taken back, still waits unread in its socket. It
    answers that message (with nothing: the call went to its replacement),
    reads end-of-file and exits 0; nothing is logged above INFO."""
    caplog.set_level(logging.INFO, logger="deepaas")
    settings = {"worker_max_requests": 2} if cause == "max_requests" else {}
    client, runtime = await _start(aiohttp_client, tmp_path, **settings)
    pool, dispatcher = runtime.pool, runtime.dispatcher
    old = pool.slots[0]
    hold = Path(f"{weights}.hold")
    hold.touch()  # its replacement waits in warm() while it exists
    try:
        if cause == "reload":
            await _train(client, "v1")
        else:
            for _ in range(2):
                await _predict(client)
        await _until(lambda: pool.slots[0] is not old, "its replacement starts")
        assert old.state.value == "retiring" and old.retiring == cause
        # Stopped, it reads nothing: the next call waits in its socket.
        os.kill(old.pid, signal.SIGSTOP)
        call = asyncio.ensure_future(_predict(client))
        await _until(lambda: dispatcher.held(old) == 1, "a call is sent to it")
        hold.unlink()
        # The replacement is ready: the call is taken back from the old
        # worker and answered by the new one; the old one is told to stop.
        assert (await call)["pid"] == pool.slots[0].pid != old.pid
    finally:
        with contextlib.suppress(FileNotFoundError):
            hold.unlink()
        with contextlib.suppress(ProcessLookupError):
            os.kill(old.pid, signal.SIGCONT)
    assert old.child is not None
    assert await asyncio.wait_for(asyncio.shield(old.child.exited), HANG_S) == 0
    await _until(lambda: old not in pool.retired, "its exit is handled")
    assert old.state.value == "dead"
    loud = [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.levelno > logging.INFO and r.name.startswith("deepaas")
    ]
    assert loud == []
    assert await _restarts(client) == {cause: 1}
