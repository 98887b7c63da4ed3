"""The dispatcher against in-memory fake workers: no process, no sleep.

Each test plays the workers step by step (:mod:`tests.fakes.worker`) on an
injected clock, and checks which calls went to which worker, in which order,
and what each caller got. Pumps scheduled with ``call_soon`` run at
``await turn()`` (one turn of the event loop); the timers of the dispatcher
are not waited for: tests call ``pump()`` and ``check_stalls()`` themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from deepaas.engine import dispatcher as dispatcher_module
from deepaas.engine.batching import BatchPolicy, Call, CallQueue
from deepaas.engine.dispatcher import Dispatcher
from deepaas.engine.lanes import PIPELINE_BUDGET_S, PIPELINE_MAX, STALL_AFTER_S
from deepaas.engine.protocol import RemoteError
from deepaas.exceptions import DeepaasError, ModelUnavailable, WorkerDied
from deepaas.model.v2.results import PredictResult
from deepaas.tracing import REQUEST_ID
from tests.fakes.worker import FakeClock, FakeWorker

pytestmark = pytest.mark.timeout(10)

MODEL = "m"


@pytest.fixture(autouse=True)
def _stalls_checked_by_the_tests(monkeypatch):
    """The stall timer never fires on its own: tests call check_stalls()."""
    monkeypatch.setattr(dispatcher_module, "STALL_CHECK_S", 3600.0)


class Rig:
    """One model's queue and dispatcher, with fake workers added to it."""

    def __init__(self, policy: BatchPolicy, workers: int) -> None:
        self.clock = FakeClock()
        self.queue = CallQueue(policy)
        self.dispatcher = Dispatcher(MODEL, self.queue, clock=self.clock)
        self.added = 0
        self.workers = [self.worker() for _ in range(workers)]

    def worker(self) -> FakeWorker:
        """A worker that just became ready."""
        worker = FakeWorker(f"{MODEL}/{self.added}", self.clock, self.dispatcher)
        self.added += 1
        self.dispatcher.add(worker)
        return worker

    def submit(self, *payloads: Any) -> list[Call]:
        loop = asyncio.get_running_loop()
        calls = [Call(payload, loop.create_future()) for payload in payloads]
        for call in calls:
            self.dispatcher.submit(call)
        return calls

    async def new_worker_serving_all(self) -> FakeWorker:
        """A worker that just became ready (a replacement), once it has served
        everything left in the queue."""
        worker = self.worker()
        await serve_until_idle(worker)
        return worker


async def rig(
    workers: int = 2, policy: BatchPolicy | None = None, pace: float | None = None
) -> tuple[Rig, list[FakeWorker]]:
    """A rig; with ``pace``, every worker has answered one message that took
    ``pace`` seconds (the dispatcher learned its speed), and nothing is held."""
    setup = Rig(policy or BatchPolicy(), workers)
    if pace is not None:
        for i in range(workers):  # one each: the others hold theirs
            setup.submit(f"warm{i}")
            await turn()
        for worker in setup.workers:
            assert worker.run(seconds=pace)
            worker.send()
            worker.writes.clear()
        await turn()
    return setup, setup.workers


async def one_pipelined_worker(*payloads: Any) -> tuple[Rig, FakeWorker, list[Call]]:
    """One worker whose pace (a quarter of the pipeline budget) has it handed
    four calls at a time, and the calls of ``payloads`` submitted to it
    (after one turn, it holds up to four)."""
    setup, (w0,) = await rig(workers=1, pace=PIPELINE_BUDGET_S / 4)
    calls = setup.submit(*payloads)
    await turn()
    return setup, w0, calls


async def turn() -> None:
    """Let one turn of the event loop run (the pumps scheduled so far)."""
    await asyncio.sleep(0)


async def serve_until_idle(*workers: FakeWorker, seconds: float = 0.001) -> None:
    """The workers answer everything they get until nothing is left."""
    for _ in range(100):
        await turn()
        ran = False
        for worker in workers:
            while worker.run(seconds=seconds):
                ran = True
            worker.send()
        if not ran:
            return
    raise AssertionError("the workers never became idle")


def results(calls: list[Call]) -> list[Any]:
    return [call.future.result() for call in calls]


def error(call: Call) -> DeepaasError:
    exc = call.future.exception()
    assert isinstance(exc, DeepaasError), exc
    return exc


@contextlib.contextmanager
def request_id(value: str) -> Iterator[None]:
    """Calls made in the block belong to the request ``value``."""
    token = REQUEST_ID.set(value)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


def died() -> WorkerDied:
    return WorkerDied("the worker process of model 'm' was killed by SIGSEGV")


# -- fairness -----------------------------------------------------------------


async def test_idle_workers_share_the_calls():
    setup, (w0, w1) = await rig()
    calls = setup.submit("a", "b")
    await turn()
    assert (w0.received(), w1.received()) == (["a"], ["b"])
    await serve_until_idle(w0, w1)
    assert results(calls) == ["a", "b"]


@pytest.mark.parametrize("workers", [2, 3])
async def test_idle_workers_take_turns(workers):
    """Least-loaded ties rotate: one call at a time does not all go to the
    first worker."""
    setup, fakes = await rig(workers=workers)
    served_by = []
    for i in range(2 * workers):
        (call,) = setup.submit(i)
        await turn()
        (worker,) = [w for w in fakes if setup.dispatcher.held(w)]
        served_by.append(fakes.index(worker))
        worker.serve()
        assert call.future.result() == i
    assert served_by == [*range(workers)] * 2


async def test_busy_worker_gets_nothing_while_another_is_free():
    setup, (w0, w1) = await rig()
    setup.submit("a")
    await turn()
    w0.start()
    setup.submit("b")
    await turn()
    setup.submit("c")
    await turn()
    assert (w0.received(), w1.received()) == (["a"], ["b"])
    assert len(setup.queue) == 1  # both hold what they can
    w1.serve()
    await turn()
    assert (w0.received(), w1.received()) == (["a"], ["b", "c"])


async def test_calls_queued_in_one_turn_go_to_each_worker_in_one_write():
    setup, (w0, w1) = await rig(pace=PIPELINE_BUDGET_S / 8)  # 8 calls each
    names = [f"c{i}" for i in range(10)]
    calls = setup.submit(*names)
    await turn()
    assert (len(w0.writes), len(w1.writes)) == (1, 1)
    assert w0.received() == names[:5]
    assert w1.received() == names[5:]
    await serve_until_idle(w0, w1)
    assert results(calls) == names


# -- pipelining ---------------------------------------------------------------


async def test_worker_without_history_holds_one_call():
    setup, (w0,) = await rig(workers=1)
    setup.submit("a", "b", "c")
    await turn()
    assert w0.received() == ["a"]
    assert len(setup.queue) == 2


@pytest.mark.parametrize("depth", [2, 4, 20])
async def test_fast_worker_holds_about_the_pipeline_budget(depth):
    setup, (w0,) = await rig(workers=1, pace=PIPELINE_BUDGET_S / depth)
    setup.submit(*range(30))
    await turn()
    assert w0.received() == list(range(depth))
    assert setup.dispatcher.held(w0) == depth
    assert len(setup.queue) == 30 - depth


async def test_pace_is_learned_per_call_of_a_message():
    setup, (w0,) = await rig(workers=1, pace=PIPELINE_BUDGET_S / 4)
    setup.submit(*range(4))
    await turn()
    w0.serve(seconds=PIPELINE_BUDGET_S / 4)  # 4 calls, one message, one Results
    setup.submit(*range(4, 10))
    await turn()
    assert w0.received() == list(range(8))  # still 4 at a time


async def test_pipeline_never_holds_more_than_pipeline_max():
    setup, (w0,) = await rig(workers=1, pace=1e-9)
    setup.submit(*range(PIPELINE_MAX + 5))
    await turn()
    assert setup.dispatcher.held(w0) == PIPELINE_MAX
    assert len(setup.queue) == 5


async def test_slow_worker_holds_one_call():
    setup, (w0,) = await rig(workers=1, pace=0.5)
    setup.submit("a", "b", "c")
    await turn()
    assert w0.received() == ["a"]


# -- batches ------------------------------------------------------------------


async def test_batches_take_up_to_max_batch_size_oldest_first():
    setup, (w0,) = await rig(workers=1, policy=BatchPolicy(max_batch_size=4))
    names = [f"c{i}" for i in range(10)]
    calls = setup.submit(*names)
    await serve_until_idle(w0, seconds=0.5)
    assert [m.method for m in w0.messages] == ["predict_batch"] * 3
    assert [[p for _, p in m.items] for m in w0.messages] == [
        names[0:4],
        names[4:8],
        names[8:10],
    ]
    assert results(calls) == names


async def test_lone_call_waits_for_companions_until_due():
    policy = BatchPolicy(max_batch_size=4, max_delay=0.5)
    setup, (w0,) = await rig(workers=1, policy=policy)
    setup.submit("a")
    await turn()
    setup.clock.advance(0.3)
    setup.submit("b")
    await turn()
    setup.clock.advance(0.19)
    setup.dispatcher.pump()
    assert w0.messages == []
    setup.clock.advance(0.01)  # "a" waited max_delay
    setup.dispatcher.pump()
    assert w0.received() == ["a", "b"]
    assert len(w0.messages) == 1


async def test_full_batch_goes_at_once():
    policy = BatchPolicy(max_batch_size=4, max_delay=0.5)
    setup, (w0, w1) = await rig(policy=policy)
    setup.submit("a", "b", "c", "d", "e")
    await turn()
    assert (w0.received(), w1.received()) == (["a", "b", "c", "d"], [])
    setup.clock.advance(0.5)
    setup.dispatcher.pump()
    assert w1.received() == ["e"]


async def test_error_of_one_batch_item_reaches_only_its_call():
    setup, (w0,) = await rig(workers=1, policy=BatchPolicy(max_batch_size=4))
    a, b, c = setup.submit("a", "b", "c")
    await turn()
    assert w0.start() == [1, 2, 3]
    w0.finish("A", RemoteError(422, "b is not an image"), "C")
    w0.send()
    assert (a.future.result(), c.future.result()) == ("A", "C")
    assert (error(b).status, error(b).message) == (422, "b is not an image")


async def test_a_batch_failing_together_carries_its_traceback_once():
    """Each caller's error has the plugin's traceback as its detail (the API
    logs it under the failed request's line), but a batch that failed as
    one logs it once: the others name the request it is logged with."""
    setup, (w0,) = await rig(workers=1, policy=BatchPolicy(max_batch_size=4))
    with request_id("r-a"):
        (a,) = setup.submit("a")
    with request_id("r-b"):
        (b,) = setup.submit("b")
    await turn()
    w0.start()
    failed = RemoteError(500, "ValueError: no", "Traceback ...\nValueError: no\n")
    w0.finish(failed, failed)
    w0.send()
    assert error(a).detail == failed.traceback
    assert error(b).detail == "(its traceback is logged with request r-a)"
    assert error(b).message == "ValueError: no"


async def test_a_failure_nobody_waits_for_is_logged_with_its_traceback(caplog):
    setup, (w0,) = await rig(workers=1)
    with request_id("r-gone"):
        (a,) = setup.submit("a")
    await turn()
    w0.start()
    a.future.cancel()  # its client left
    w0.finish(RemoteError(500, "ValueError: no", "Traceback ...\nValueError: no\n"))
    caplog.set_level(logging.INFO, "deepaas.engine.outcomes")
    w0.send()
    (logged,) = caplog.records
    assert logged.levelno == logging.WARNING
    assert logged.request_id == "r-gone"
    assert logged.getMessage() == (
        "model m: a call nobody waits for any more failed (500): ValueError: no\n"
        "Traceback ...\nValueError: no"
    )


async def test_arguments_that_cannot_be_sent_fail_only_their_call():
    _, w0, (a, bad, c) = await one_pipelined_worker("a", {"x": lambda: None}, "c")
    assert error(bad).status == 500
    assert "could not be sent to the worker" in error(bad).message
    assert w0.received() == ["a", "c"]
    await serve_until_idle(w0)
    assert results([a, c]) == ["a", "c"]


# -- deadlines ----------------------------------------------------------------


async def test_expired_queued_call_did_not_start_and_leaves_the_queue():
    setup, (w0,) = await rig(workers=1)
    a, b, c = setup.submit("a", "b", "c")
    await turn()
    w0.start()
    assert setup.dispatcher.expire(b, 5.0) is None
    assert error(b).status == 504
    assert "did not start this request within 5 s" in error(b).message
    assert len(setup.queue) == 1
    w0.finish()
    w0.send()
    await serve_until_idle(w0)
    assert w0.received() == ["a", "c"]
    assert results([a, c]) == ["a", "c"]
    assert "(all its workers were busy)" in error(b).message


async def test_expired_call_of_a_model_with_no_worker_ready_says_so():
    """No worker has become ready (its warm() is slow or hangs): the 504 says
    so, not that its workers were busy, which sent the operator adding
    workers instead of looking at warm()."""
    setup, _ = await rig(workers=0)
    (a,) = setup.submit("a")
    await turn()
    assert setup.dispatcher.expire(a, 3.0) is None
    assert error(a).status == 504
    assert error(a).message == (
        "model 'm' did not start this request within 3 s (no worker of it was "
        "ready: they were starting or being replaced; if this lasts, its warm() "
        "may be slow or stuck)"
    )


async def test_expired_running_call_hands_its_worker_over_and_spares_the_rest():
    setup, w0, (a, b, c) = await one_pipelined_worker("a", "b", "c")
    w0.start()
    assert setup.dispatcher.expire(a, 5.0) is w0
    assert error(a).status == 504
    assert "did not answer within 5 s" in error(a).message
    assert not b.future.done() and not c.future.done()
    w0.die(died(), fail_running=False)  # the pool killed it
    assert len(setup.queue) == 2
    w1 = await setup.new_worker_serving_all()
    assert w1.received() == ["b", "c"]
    assert results([b, c]) == ["b", "c"]


async def test_expired_pipelined_call_takes_back_the_calls_behind_the_running_one():
    setup, w0, (a, b, c, d) = await one_pipelined_worker("a", "b", "c", "d")
    assert w0.seqs() == [[2, 3, 4, 5]]
    assert w0.start() == [2]
    assert setup.dispatcher.expire(c, 5.0) is None
    assert error(c).status == 504
    assert "did not start" in error(c).message
    assert len(setup.queue) == 2  # b and d
    assert setup.dispatcher.held(w0) == 1
    w1 = await setup.new_worker_serving_all()
    assert w1.received() == ["b", "d"]
    w0.finish()
    assert w0.start() == []  # skips what was taken back
    assert w0.skipped == [3, 4, 5]
    w0.send()
    assert results([a, b, d]) == ["a", "b", "d"]


# -- a worker dies --------------------------------------------------------------


async def test_dead_worker_fails_only_its_running_call_and_requeues_the_rest():
    setup, w0, (a, b, c, d, e) = await one_pipelined_worker("a", "b", "c", "d", "e")
    assert w0.received() == ["a", "b", "c", "d"]
    w0.run()  # "a" is computed, not sent (its message is not done)
    w0.start()  # "b" runs
    crash = died()
    w0.die(crash)
    assert b.future.exception() is crash
    assert not any(call.future.done() for call in (a, c, d, e))
    assert len(setup.queue) == 4
    w1 = await setup.new_worker_serving_all()
    assert w1.received() == ["a", "c", "d", "e"]  # back at the head, in order
    assert results([a, c, d, e]) == ["a", "c", "d", "e"]


async def test_dead_worker_fails_the_whole_batch_it_ran_and_requeues_the_next():
    policy = BatchPolicy(max_batch_size=2)
    setup, (w0,) = await rig(workers=1, policy=policy, pace=PIPELINE_BUDGET_S / 2)
    a, b, c, d, e = setup.submit("a", "b", "c", "d", "e")
    await turn()
    assert [[p for _, p in m.items] for m in w0.messages] == [["a", "b"], ["c", "d"]]
    w0.start()
    w0.die(died())
    assert error(a).status == error(b).status == 503
    assert len(setup.queue) == 3
    w1 = await setup.new_worker_serving_all()
    assert [[p for _, p in m.items] for m in w1.messages] == [["c", "d"], ["e"]]
    assert results([c, d, e]) == ["c", "d", "e"]


async def test_worker_dying_between_calls_fails_nothing():
    setup, w0, (a, b) = await one_pipelined_worker("a", "b")
    w0.run()  # "a" computed, its answer not sent; "b" not started
    w0.die(died())
    assert not a.future.done() and not b.future.done()
    assert len(setup.queue) == 2
    await setup.new_worker_serving_all()
    assert results([a, b]) == ["a", "b"]


async def test_dead_worker_drops_calls_whose_client_left():
    setup, w0, (a, b, _) = await one_pipelined_worker("a", "b", "c")
    w0.start()
    b.future.cancel()
    w0.die(died())
    assert error(a).status == 503
    assert len(setup.queue) == 1
    w1 = await setup.new_worker_serving_all()
    assert w1.received() == ["c"]


async def test_answer_from_a_worker_given_up_on_is_discarded(tmp_path):
    setup, (w0,) = await rig(workers=1)
    (a,) = setup.submit("a")
    await turn()
    w0.start()
    w0.die(died())
    output = tmp_path / "output.bin"
    output.write_bytes(b"x")
    w0.finish(PredictResult("image/png", path=str(output), delete=True))
    w0.send()
    assert error(a).status == 503
    assert not output.exists()


# -- head-of-line ---------------------------------------------------------------


async def test_stalled_worker_gives_back_the_calls_waiting_behind_its_call():
    fast = PIPELINE_BUDGET_S / 4
    setup, (w0, w1) = await rig(pace=fast)
    calls = setup.submit("a", "b", "c", "d", "e", "f")
    await turn()
    assert (w0.received(), w1.received()) == (["a", "b", "c"], ["d", "e", "f"])
    await serve_until_idle(w1, seconds=fast)
    started = setup.clock()
    assert w0.start() == [2]  # "a" runs long
    setup.clock.now = started + STALL_AFTER_S * 0.9
    setup.dispatcher.check_stalls()
    assert setup.dispatcher.held(w0) == 3
    setup.clock.now = started + STALL_AFTER_S * 1.1
    setup.dispatcher.check_stalls()
    assert setup.dispatcher.held(w0) == 1
    await turn()
    assert w1.received() == ["d", "e", "f", "b", "c"]
    (g,) = setup.submit("g")
    await turn()
    assert w1.received()[-1] == "g"  # w0 holds less, but takes nothing now
    w0.finish(seconds=0.06)
    assert w0.start() == []
    assert w0.skipped == [3, 4]
    w0.send()
    await serve_until_idle(w1, seconds=fast)
    assert results([*calls, g]) == ["a", "b", "c", "d", "e", "f", "g"]
    assert w0.received() == ["a", "b", "c"]


async def test_stalled_worker_takes_one_call_at_a_time_until_it_answers():
    fast = PIPELINE_BUDGET_S / 4
    setup, (w0, w1) = await rig(pace=fast)
    setup.submit("a", "b", "c", "d")
    await turn()
    started = setup.clock()
    w0.start()
    w1.start()
    setup.clock.now = started + STALL_AFTER_S * 1.1
    setup.dispatcher.check_stalls()  # both stalled: everything waiting goes back
    assert len(setup.queue) == 2
    await turn()
    assert setup.dispatcher.held(w0) == setup.dispatcher.held(w1) == 1
    w1.finish(seconds=fast)
    w1.send()
    await turn()
    assert setup.dispatcher.held(w1) == 2  # answered: it pipelines again
    assert setup.dispatcher.held(w0) == 1


async def test_stalled_worker_gives_back_the_batches_behind_its_batch():
    fast = PIPELINE_BUDGET_S / 4
    policy = BatchPolicy(max_batch_size=2)
    setup, (w0, w1) = await rig(policy=policy, pace=fast)
    calls = setup.submit("a", "b", "c", "d", "e", "f")
    await turn()
    assert [[p for _, p in m.items] for m in w0.messages] == [["a", "b"], ["e", "f"]]
    await serve_until_idle(w1, seconds=fast)
    started = setup.clock()
    assert w0.start() == [2, 3]
    setup.clock.now = started + STALL_AFTER_S * 1.1
    setup.dispatcher.check_stalls()
    await serve_until_idle(w1, seconds=fast)
    assert [[p for _, p in m.items] for m in w1.messages] == [["c", "d"], ["e", "f"]]
    w0.finish(seconds=0.06)
    assert w0.start() == []
    assert w0.skipped == [4, 5]
    w0.send()
    assert results(calls) == ["a", "b", "c", "d", "e", "f"]


async def test_a_call_is_answered_while_a_later_call_of_its_message_runs():
    setup, w0, (a, b) = await one_pipelined_worker("a", "b")
    assert len(w0.messages) == 1  # one message of both
    w0.run()
    assert w0.start() == [w0.seqs()[0][1]]  # "a" was sent back before "b" started
    w0.send()
    assert a.future.result() == "a"
    assert not b.future.done()
    assert setup.dispatcher.held(w0) == 1
    w0.finish()
    w0.send()
    assert b.future.result() == "b"
    assert setup.dispatcher.held(w0) == 0


async def test_late_answer_for_a_call_taken_back_is_discarded(tmp_path):
    fast = PIPELINE_BUDGET_S / 4
    setup, (w0, w1) = await rig(pace=fast)
    a, b, c, d = setup.submit("a", "b", "c", "d")
    await turn()
    assert (w0.received(), w1.received()) == (["a", "b"], ["c", "d"])
    await serve_until_idle(w1, seconds=fast)
    output = tmp_path / "a.bin"
    output.write_bytes(b"x")
    w0.run(PredictResult("image/png", path=str(output), delete=True), seconds=fast)
    started = setup.clock()
    w0.start()  # "b" runs long; "a" waits in its outbox with it
    setup.clock.now = started + STALL_AFTER_S * 1.1
    setup.dispatcher.check_stalls()
    await serve_until_idle(w1, seconds=fast)
    assert a.future.result() == "a"  # computed again by w1
    w0.finish()
    w0.send()
    assert not output.exists()
    assert results([b, c, d]) == ["b", "c", "d"]


async def test_call_taken_back_while_the_worker_marks_it_is_not_lost():
    setup, w0, (a, b) = await one_pipelined_worker("a", "b")
    w0.run()  # "a" computed; as the worker marks "b", the parent retires it
    assert w0.start(meanwhile=lambda: setup.dispatcher.retire(w0)) == []
    assert w0.skipped == [3]
    w0.send()
    assert setup.dispatcher.held(w0) == 0
    w1 = await setup.new_worker_serving_all()
    assert w1.received() == ["a", "b"]
    assert results([a, b]) == ["a", "b"]


# -- retire -------------------------------------------------------------------


async def test_retired_worker_gets_no_calls_and_gives_back_what_it_has_not_started():
    setup, w0, (a, b, c) = await one_pipelined_worker("a", "b", "c")
    w0.start()
    setup.dispatcher.retire(w0)
    assert len(setup.queue) == 2
    drained = asyncio.ensure_future(setup.dispatcher.drained(w0))
    w1 = await setup.new_worker_serving_all()
    (d,) = setup.submit("d")
    await serve_until_idle(w1)
    assert w0.received() == ["a", "b", "c"]
    assert w1.received() == ["b", "c", "d"]
    assert not drained.done()
    w0.finish()
    assert w0.start() == []
    w0.send()
    await asyncio.wait_for(drained, 1)
    assert results([a, b, c, d]) == ["a", "b", "c", "d"]


async def test_drained_returns_at_once_when_nothing_is_held():
    setup, (w0,) = await rig(workers=1)
    setup.dispatcher.retire(w0)
    await asyncio.wait_for(setup.dispatcher.drained(w0), 1)


async def test_retiring_worker_gets_no_new_calls_while_another_takes_calls():
    setup, (w0, w1) = await rig()
    (a,) = setup.submit("a")
    await turn()
    w0.serve()  # w0 is idle from now on
    await turn()
    setup.dispatcher.mark_retiring(w0)
    b, c = setup.submit("b", "c")
    await turn()
    # Even with w1 busy and w0 idle, "c" waits for w1: what w0 runs is bounded.
    assert (w0.received(), w1.received()) == (["a"], ["b"])
    assert len(setup.queue) == 1
    w1.serve()
    await turn()
    assert (w0.received(), w1.received()) == (["a"], ["b", "c"])
    w1.serve()
    w2 = setup.worker()  # another ready worker: a replacement
    (d,) = setup.submit("d")
    await serve_until_idle(w0, w1, w2)
    assert w0.received() == ["a"]
    assert results([a, b, c, d]) == ["a", "b", "c", "d"]


async def test_retiring_worker_finishes_the_calls_it_was_handed():
    setup, w0, calls = await one_pipelined_worker(*"abcdef")
    assert w0.received() == list("abcd")
    setup.dispatcher.mark_retiring(w0)
    w1 = setup.worker()  # its replacement is ready
    await turn()
    assert w1.received() == ["e"]  # not "a".."d": w0 keeps those
    w0.serve(seconds=PIPELINE_BUDGET_S / 4)
    await turn()
    assert len(setup.queue) == 1  # "f" waits for w1, not for idle w0
    await serve_until_idle(w0, w1)
    assert (w0.received(), w1.received()) == (list("abcd"), ["e", "f"])
    assert results(calls) == list("abcdef")


async def test_a_lone_retiring_worker_serves_until_another_is_ready():
    setup, (w0, w1) = await rig()
    setup.dispatcher.mark_retiring(w0)
    w1.die(died())  # w0 is all there is: capacity never drops to zero
    a, b = setup.submit("a", "b")
    await serve_until_idle(w0)
    assert w0.received() == ["a", "b"]
    w2 = setup.worker()  # its replacement is ready
    (c,) = setup.submit("c")
    await serve_until_idle(w0, w2)
    assert (w0.received(), w2.received()) == (["a", "b"], ["c"])
    assert results([a, b, c]) == ["a", "b", "c"]


async def test_workers_all_retiring_keep_serving_and_share():
    setup, (w0, w1) = await rig()
    setup.dispatcher.mark_retiring(w0)
    setup.dispatcher.mark_retiring(w1)
    calls = setup.submit("a", "b")
    await turn()
    assert (w0.received(), w1.received()) == (["a"], ["b"])
    await serve_until_idle(w0, w1)
    assert results(calls) == ["a", "b"]


# -- queue length ---------------------------------------------------------------


async def test_call_whose_client_left_stops_counting_at_once():
    setup, _ = await rig(workers=0)
    _, b, _ = setup.submit("a", "b", "c")
    assert len(setup.queue) == 3
    b.future.cancel()
    setup.queue.discard(b)  # what the runtime does when its caller is cancelled
    assert len(setup.queue) == 2
    w0 = setup.worker()
    await serve_until_idle(w0)
    assert w0.received() == ["a", "c"]
    assert len(setup.queue) == 0


async def test_requeued_calls_count_again():
    setup, w0, _ = await one_pipelined_worker("a", "b", "c")
    assert len(setup.queue) == 0
    w0.start()
    setup.dispatcher.retire(w0)
    assert len(setup.queue) == 2


# -- fail_all -----------------------------------------------------------------


async def test_fail_all_fails_every_queued_and_held_call():
    setup, (w0, w1) = await rig()
    calls = setup.submit("a", "b", "c")
    await turn()
    w0.start()
    stop = ModelUnavailable("the server is shutting down")
    setup.dispatcher.fail_all(stop)
    assert [call.future.exception() for call in calls] == [stop] * 3
    assert len(setup.queue) == 0
    assert setup.dispatcher.held(w0) == setup.dispatcher.held(w1) == 0
    w0.finish()
    w0.send()  # a late answer is dropped
