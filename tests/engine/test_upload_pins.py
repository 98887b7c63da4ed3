"""A caller's uploads outlive every worker that may still read them.

Against the in-memory fake workers of ``test_dispatcher`` (no process, no
sleep): a caller that leaves (its client hung up, its deadline passed, the
server stops) hands its upload to the call, as ``ModelRuntime.predict``
does; the file must stay while a message carrying the call is neither
answered nor lost with its worker, and go as soon as none is. A call still
only queued gives its upload back to the caller, who removes it at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deepaas.engine import dispatcher as dispatcher_module
from deepaas.engine.batching import BatchPolicy, Call
from deepaas.engine.lanes import PIPELINE_BUDGET_S, STALL_AFTER_S
from deepaas.exceptions import ShuttingDown
from tests.engine.test_dispatcher import (
    died,
    error,
    one_pipelined_worker,
    results,
    rig,
    turn,
)

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def _stalls_checked_by_the_tests(monkeypatch):
    monkeypatch.setattr(dispatcher_module, "STALL_CHECK_S", 3600.0)


def upload(tmp_path: Path, name: str) -> list[str]:
    """A temporary upload, listed as the request's parser lists its files."""
    path = tmp_path / name
    path.write_bytes(b"x")
    return [str(path)]


def leave(call: Call, files: list[str]) -> bool:
    """The caller goes away, as ``ModelRuntime.predict``'s ``finally`` does."""
    call.future.cancel()
    call.settle()
    return call.adopt(files)


def exists(files: list[str]) -> bool:
    return Path(files[0]).exists()


async def test_upload_of_a_running_call_stays_until_its_worker_answers(tmp_path):
    setup, (w0,) = await rig(workers=1)
    (a,) = setup.submit("a")
    await turn()
    assert w0.start()
    files = upload(tmp_path, "a")
    kept = list(files)
    assert leave(a, files)
    assert files == []  # taken over: the caller removes nothing
    assert exists(kept)  # the worker may be reading it
    w0.finish()
    assert exists(kept)  # computed, not yet sent back: still its message
    w0.send()
    assert not exists(kept)
    assert a.pins == 0 and a.files == []


async def test_upload_of_a_batch_member_stays_until_the_batch_is_answered(tmp_path):
    setup, (w0,) = await rig(workers=1, policy=BatchPolicy(max_batch_size=4))
    a, b, c = setup.submit("a", "b", "c")
    await turn()
    assert w0.start() == [1, 2, 3]
    files = upload(tmp_path, "b")
    kept = list(files)
    assert leave(b, files)
    assert exists(kept)
    w0.finish()
    w0.send()
    assert results([a, c]) == ["a", "c"]  # the others are served
    assert b.future.cancelled()
    assert not exists(kept)


async def test_upload_of_a_pipelined_call_stays_until_its_message_is_answered(
    tmp_path,
):
    _, w0, (a, b) = await one_pipelined_worker("a", "b")
    assert w0.start() == [2]  # "a" runs; "b" waits behind it in the worker
    files = upload(tmp_path, "b")
    kept = list(files)
    assert leave(b, files)
    w0.finish()
    assert w0.start() == [3]  # not revoked: the worker runs it, for nobody
    assert exists(kept)
    w0.finish()
    w0.send()
    assert a.future.result() == "a"
    assert not exists(kept)


async def test_a_queued_call_gives_its_upload_back_at_once(tmp_path):
    setup, (w0,) = await rig(workers=1)
    _, b = setup.submit("a", "b")
    await turn()
    files = upload(tmp_path, "b")
    assert not leave(b, files)  # no worker has it: the caller removes it
    assert files and b.files == []
    setup.queue.discard(b)
    w0.serve()
    await turn()
    assert w0.received() == ["a"]  # it never reaches a worker


async def test_upload_of_a_call_whose_worker_died_is_removed(tmp_path):
    setup, w0, (a, b) = await one_pipelined_worker("a", "b")
    w0.start()
    files_a, files_b = upload(tmp_path, "a"), upload(tmp_path, "b")
    kept_a, kept_b = list(files_a), list(files_b)
    assert leave(a, files_a) and leave(b, files_b)
    assert exists(kept_a) and exists(kept_b)
    w0.die(died())
    assert not exists(kept_a) and not exists(kept_b)
    assert len(setup.queue) == 0  # nobody waits for them: not sent again


async def test_upload_of_a_timed_out_running_call_stays_until_its_worker_dies(
    tmp_path,
):
    setup, (w0,) = await rig(workers=1)
    (a,) = setup.submit("a")
    await turn()
    w0.start()
    assert setup.dispatcher.expire(a, 5.0) is w0
    assert error(a).status == 504
    files = upload(tmp_path, "a")
    kept = list(files)
    assert a.adopt(files)  # the 504 goes out; the worker still runs it
    assert exists(kept)
    w0.die(died(), fail_running=False)  # the pool killed it
    assert not exists(kept)


async def test_a_taken_back_call_is_pinned_by_every_message_that_carried_it(
    tmp_path,
):
    """A call taken back from a stalled worker may still be started there
    (the scoreboard race): its upload stays until that message is answered
    too, even once another worker answered the call."""
    fast = PIPELINE_BUDGET_S / 4
    setup, (w0, w1) = await rig(pace=fast)
    a, b, c, d = setup.submit("a", "b", "c", "d")
    await turn()
    assert (w0.received(), w1.received()) == (["a", "b"], ["c", "d"])
    w1.serve(seconds=fast)
    started = setup.clock()
    w0.start()  # "a" runs long: "b" is taken back
    setup.clock.now = started + STALL_AFTER_S * 1.1
    setup.dispatcher.check_stalls()
    await turn()
    assert w1.received()[-1] == "b"
    assert b.pins == 2
    w1.serve(seconds=fast)
    assert b.future.result() == "b"
    files = upload(tmp_path, "b")
    kept = list(files)
    assert b.adopt(files)  # answered, but w0's message still carries it
    assert exists(kept)
    w0.finish(seconds=0.06)
    assert w0.start() == []  # skips it
    w0.send()
    assert not exists(kept)
    assert results([a, c, d]) == ["a", "c", "d"]


async def test_uploads_held_at_shutdown_are_removed_once_the_workers_stop(tmp_path):
    setup, (w0,) = await rig(workers=1)
    (a,) = setup.submit("a")
    await turn()
    w0.start()
    setup.dispatcher.fail_all(ShuttingDown())
    files = upload(tmp_path, "a")
    kept = list(files)
    assert a.adopt(files)  # the 503 goes out; the worker still runs it
    assert exists(kept)
    setup.dispatcher.release_all()  # the workers are stopped
    assert not exists(kept)


async def test_the_last_call_of_a_worker_expired_before_it_started_is_revoked(
    tmp_path,
):
    """The worker must not run for nobody a call that answered 504."""
    setup, w0, (a,) = await one_pipelined_worker("a")
    assert setup.dispatcher.expire(a, 5.0) is None
    assert "did not start" in error(a).message
    assert setup.dispatcher.held(w0) == 0
    files = upload(tmp_path, "a")
    kept = list(files)
    assert a.adopt(files)  # the worker has not answered its message yet
    assert w0.start() == []
    assert w0.skipped == [2]
    w0.send()
    assert not exists(kept)
