"""What a plugin starts in a session of its own (out of its worker's or
training's process group) is stopped when that process ends: when
``deepaas-run`` stops, when a worker dies or is replaced at its deadline,
when a training ends (Linux: they inherit a mark; see
:mod:`deepaas.engine.orphans`); and a plugin's short-lived background jobs
leave no zombie behind."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deepaas_run import alive, stat_fields, until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
]

PREDICT = "/v2/models/spawner/predict/"
GONE_S = 10.0  # the sleepers are gone within this long


@pytest.fixture
def sleepers(tmp_path: Path) -> Iterator[Path]:
    """The file the plugin writes its sleepers' pids to; whatever is still
    alive at the end is killed (the test fails first)."""
    path = tmp_path / "sleepers.pids"
    yield path
    for pid in _pids(path):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _start(server, sleepers: Path, *args: str):
    return server(
        "--plugin",
        "spawner=tests.plugins.spawner",
        *args,
        env={"SPAWNER_PIDS": str(sleepers)},
    ).wait_ready()


def _all_gone(path: Path, what: str) -> None:
    pids = _pids(path)
    assert pids
    until(lambda: not any(alive(p) for p in pids), what, GONE_S)


def test_sigterm_stops_what_the_workers_started(server, sleepers):
    srv = _start(server, sleepers, "--workers", "2")
    for _ in range(2):
        assert srv.request("POST", PREDICT)[0] == 200
    assert all(alive(pid) for pid in _pids(sleepers))
    assert srv.stop(signal.SIGTERM) == 0
    _all_gone(sleepers, "the sleepers are stopped with the server")
    assert "process(es) its plugin started and left running" in srv.output(), (
        srv.output()
    )


@pytest.mark.parametrize(
    ("mode", "how", "status", "args"),
    [
        ("exit", "session", 503, ()),
        ("exit", "daemon", 503, ()),
        ("exit", "fork", 503, ()),
        ("hang", "session", 504, ("--predict-timeout", "2")),
    ],
)
def test_a_replaced_workers_processes_are_stopped(
    server, sleepers, mode, how, status, args
):
    srv = _start(server, sleepers, *args)
    code, body = srv.request("POST", f"{PREDICT}?mode={mode}&how={how}")
    assert code == status, body
    _all_gone(sleepers, "the replaced worker's sleeper is stopped")
    # The server serves on, with a new worker, whose sleeper lives as long
    # as that worker does.
    code, body = srv.request("POST", PREDICT)
    assert code == 200, body
    assert alive(body["predictions"]["sleeper"])
    assert srv.stop(signal.SIGTERM) == 0
    _all_gone(sleepers, "every sleeper is stopped with the server")


def test_a_trainings_processes_are_stopped_when_it_ends(server, sleepers, tmp_path):
    srv = _start(server, sleepers, "--state-dir", str(tmp_path / "state"))
    status, training = srv.request("POST", "/v2/models/spawner/train/", {})
    assert status == 200, training
    path = f"/v2/models/spawner/train/{training['uuid']}"
    until(lambda: srv.request("GET", path)[1]["status"] == "done", "training ends")
    _all_gone(sleepers, "the training's sleeper is stopped once it ended")
    assert srv.stop(signal.SIGTERM) == 0


def _zombies_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        fields = stat_fields(int(entry)) if entry.isdigit() else None
        if fields and fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def test_background_jobs_at_each_request_leave_no_zombie(server, sleepers):
    """A shell's ``true &`` at each request: the orphaned ``true`` is reaped
    by init, as anywhere; not left a zombie under the worker (as when the
    worker was a child subreaper)."""
    srv = _start(server, sleepers)
    for _ in range(10):
        code, body = srv.request("POST", f"{PREDICT}?how=background")
        assert code == 200, body
    worker = body["predictions"]["worker"]
    until(lambda: not _zombies_of(worker), "no zombie under the worker", GONE_S)
    assert srv.stop(signal.SIGTERM) == 0
