"""Infer calls in the engine, without processes: arrays in frames (raw
bytes after the pickle, never lists), the queue's batches of one group
counted in rows, and the dispatcher handing them to fake workers."""

from __future__ import annotations

import asyncio
import pickle
import pickletools
from typing import Any

import numpy as np
import pytest

from deepaas.engine import dispatcher as dispatcher_module
from deepaas.engine import protocol
from deepaas.engine.batching import (
    INFER,
    BatchPolicy,
    Call,
    CallQueue,
    resolve_policy,
)
from deepaas.engine.dispatcher import Dispatcher
from tests.fakes.worker import FakeClock, FakeWorker

pytestmark = pytest.mark.timeout(10)

BIG = protocol.OUT_OF_BAND_MIN // 4  # float32 elements: a buffer of its own


def image(rows: int, fill: float = 1.0, width: int = BIG) -> np.ndarray:
    return np.full((rows, width), fill, dtype=np.float32)


def read_back(data: bytes, step: int) -> list[Any]:
    decoder = protocol.FrameDecoder()
    messages: list[Any] = []
    for start in range(0, len(data), step):
        messages += decoder.feed(data[start : start + step])
    return messages


# -- frames -----------------------------------------------------------------------


def test_small_messages_are_framed_as_before():
    message = protocol.Invoke("infer", [(1, {"x": np.arange(3)})])
    (frame,) = protocol.pack_parts(message)
    assert frame == protocol.pack(message)


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 30])
def test_big_arrays_travel_after_the_pickle_and_read_back_writable_and_aligned(
    step,
):
    x = image(3)
    message = protocol.Invoke(
        "infer_batch",
        [(1, {"x": x, "k": np.arange(4)}), (2, {"x": x + 1, "k": np.arange(2)})],
    )
    parts = protocol.pack_parts(message)
    views = [part for part in parts if isinstance(part, memoryview)]
    assert len(views) == 2  # the two big arrays; the small ones in the pickle
    assert np.shares_memory(np.frombuffer(views[0], np.float32), x)  # not copied
    assert len(parts[0]) < 1000  # no array bytes in the pickle
    data = b"".join([*protocol.pack_parts(protocol.Ready(1)), *parts])
    ready, got = read_back(data, step)
    assert ready == protocol.Ready(1)
    first, second = (payload for _, payload in got.items)
    assert np.array_equal(first["x"], x) and np.array_equal(second["x"], x + 1)
    assert first["k"].tolist() == [0, 1, 2, 3]
    for array in (first["x"], second["x"]):
        assert array.flags.writeable and array.flags.aligned
        assert array.ctypes.data % 16 == 0


def test_arguments_of_a_big_body_keep_their_arrays_out_of_the_pickle():
    """``tree`` (no memo) and buffers together; and a cycle still falls back."""
    x = image(1)
    arguments: dict[str, Any] = {"x": x, "names": [f"n{i}" for i in range(100)]}
    message = protocol.Invoke("infer", [(1, arguments)])
    parts = protocol.pack_parts(message, tree=True)
    assert sum(isinstance(part, memoryview) for part in parts) == 1
    (got,) = read_back(b"".join(parts), 1 << 30)
    assert np.array_equal(got.items[0][1]["x"], x)
    assert got.items[0][1]["names"] == arguments["names"]
    arguments["self"] = arguments  # a cycle: pickled the usual way
    parts = protocol.pack_parts(message, tree=True)
    (got,) = read_back(b"".join(parts), 1 << 30)
    assert got.items[0][1]["self"] is got.items[0][1]


def test_a_frame_with_buffers_can_be_read_into_its_own_buffer():
    """The worker reads a big frame's rest straight into it (no copy)."""
    x = image(2)
    data = b"".join(protocol.pack_parts(protocol.Invoke("infer", [(1, {"x": x})])))
    decoder = protocol.FrameDecoder()
    assert decoder.filling() is None
    messages = decoder.feed(data[:100])
    position = 100
    while (target := decoder.filling()) is not None:
        size = min(len(target), 5000)
        target[:size] = data[position : position + size]
        position += size
        messages += decoder.filled(size)
    assert position == len(data)
    assert np.array_equal(messages[0].items[0][1]["x"], x)


def test_results_carry_output_arrays_as_a_dict():
    outputs = {"y": image(2), "n": np.array([[2], [2]])}
    results = protocol.Results(
        [(1, True, outputs), (2, False, protocol.RemoteError(500, "no"))], 0.5
    )
    (got,) = read_back(b"".join(protocol.pack_parts(results)), 1 << 30)
    (seq, ok, value), failed = got.items
    assert (seq, ok) == (1, True) and np.array_equal(value["y"], outputs["y"])
    assert failed == (2, False, protocol.RemoteError(500, "no"))


def test_arrays_are_never_pickled_as_lists():
    x = np.arange(1000, dtype=np.float64)
    frame = protocol.pack(protocol.Invoke("infer", [(1, {"x": x})]))
    ops = pickletools.genops(frame[protocol.HEADER_SIZE :])
    opcodes = {op.name for op, _, _ in ops}
    assert "BINFLOAT" not in opcodes  # a float list would be pickled so
    assert len(frame) < x.nbytes + 500


def test_coalesce_joins_bytes_and_keeps_views():
    view = memoryview(bytes(10))
    parts = protocol.coalesce([b"a", b"b", view, b"", b"c"])
    assert parts == [b"ab", view, b"c"]


def test_a_corrupt_frame_with_buffers_raises():
    x = image(1)
    data = bytearray(
        b"".join(protocol.pack_parts(protocol.Invoke("infer", [(1, {"x": x})])))
    )
    data[protocol.HEADER_SIZE + 12 : protocol.HEADER_SIZE + 20] = bytes(8)  # size 0
    with pytest.raises((ValueError, pickle.UnpicklingError)):
        protocol.FrameDecoder().feed(bytes(data))


# -- the queue ----------------------------------------------------------------------


def infer_call(rows: int, group: Any = ("g",), tag: Any = None) -> Call:
    future = asyncio.get_running_loop().create_future()
    return Call(tag, future, method=INFER, rows=rows, group=group)


def predict_call(tag: Any = None) -> Call:
    return Call(tag, asyncio.get_running_loop().create_future())


def test_resolve_policy_batches_infer_by_the_signature_and_the_flag():
    assert resolve_policy(False, None, None, None, 0) == BatchPolicy()
    assert resolve_policy(False, None, None, None, 1) == BatchPolicy()
    policy = resolve_policy(False, {"max_delay_ms": 5}, None, None, 8)
    assert policy == BatchPolicy(max_batch_size=1, max_delay=0.005, max_infer_rows=8)
    assert policy.batched
    assert resolve_policy(False, None, 4, None, 8).max_infer_rows == 4  # lowered
    assert resolve_policy(False, None, 16, None, 8).max_infer_rows == 8  # not raised
    assert not resolve_policy(False, None, 1, None, 8).batched  # off
    both = resolve_policy(True, {"max_batch_size": 3}, None, None, 6)
    assert (both.max_batch_size, both.max_infer_rows) == (3, 6)


async def test_a_batch_takes_calls_of_the_oldest_ones_group_up_to_the_rows():
    queue = CallQueue(BatchPolicy(max_infer_rows=4))
    calls = [
        infer_call(2, ("a",), "a1"),
        infer_call(1, ("b",), "b1"),
        predict_call("p1"),
        infer_call(3, ("a",), "a2"),  # 2 + 3 > 4: waits
        infer_call(1, ("a",), "a3"),
        infer_call(1, ("a",), "a4"),
        infer_call(1, ("a",), "a5"),  # 2 + 1 + 1 = 4: full
    ]
    for call in calls:
        queue.append(call)
    assert [c.payload for c in queue.take_batch()] == ["a1", "a3", "a4"]
    assert len(queue) == 4
    assert [c.payload for c in queue.take_batch()] == ["b1"]
    assert [c.payload for c in queue.take_batch()] == ["p1"]  # predict alone
    assert [c.payload for c in queue.take_batch()] == ["a2", "a5"]
    assert queue.take_batch() == [] and len(queue) == 0


async def test_a_call_too_big_to_share_runs_alone_never_split():
    queue = CallQueue(BatchPolicy(max_infer_rows=4))
    for call in (infer_call(4, tag="full"), infer_call(1, tag="next")):
        queue.append(call)
    assert [c.payload for c in queue.take_batch()] == ["full"]
    assert [c.payload for c in queue.take_batch()] == ["next"]


async def test_predict_batches_skip_infer_calls_and_calls_carry_one_method():
    queue = CallQueue(BatchPolicy(max_batch_size=3, max_infer_rows=4))
    for call in (
        predict_call("p1"),
        infer_call(1, tag="i1"),
        predict_call("p2"),
        predict_call("p3"),
        predict_call("p4"),
    ):
        queue.append(call)
    assert [c.payload for c in queue.take_batch()] == ["p1", "p2", "p3"]
    assert [c.payload for c in queue.take(8)] == ["i1"]  # stops at predict
    assert [c.payload for c in queue.take(8)] == ["p4"]


async def test_rows_make_a_batch_full_without_waiting_for_the_delay():
    queue = CallQueue(BatchPolicy(max_delay=10.0, max_infer_rows=4))
    queue.append(infer_call(2))
    assert queue.ready_at(0.0) is not None and queue.ready_at(0.0) > 0.0
    queue.append(infer_call(2))
    assert queue.ready_at(0.0) == 0.0


async def test_a_settled_call_leaves_the_rows_count():
    queue = CallQueue(BatchPolicy(max_delay=10.0, max_infer_rows=4))
    big = infer_call(3)
    queue.append(big)
    queue.discard(big)
    queue.append(infer_call(2))
    assert queue.ready_at(0.0) != 0.0  # 2 rows: not full


# -- the dispatcher ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def _stalls_checked_by_the_tests(monkeypatch):
    monkeypatch.setattr(dispatcher_module, "STALL_CHECK_S", 3600.0)


async def test_infer_calls_of_one_group_go_as_one_infer_batch():
    clock = FakeClock()
    queue = CallQueue(BatchPolicy(max_infer_rows=4))
    dispatcher = Dispatcher("m", queue, clock=clock)
    calls = [
        infer_call(1, ("a",), {"x": np.ones((1, 2))}),
        infer_call(1, ("b",), {"x": np.ones((1, 3))}),
        infer_call(2, ("a",), {"x": np.ones((2, 2))}),
    ]
    for call in calls:
        dispatcher.submit(call)
    worker = FakeWorker("m/0", clock, dispatcher)
    dispatcher.add(worker)
    dispatcher.pump()  # what the loop would run next (call_soon)
    assert [m.method for m in worker.messages] == ["infer_batch"]
    assert worker.seqs() == [[1, 2]]  # the calls of group "a"
    worker.serve()
    dispatcher.pump()  # what the loop would run next (call_soon)
    assert [m.method for m in worker.messages] == ["infer_batch", "infer"]
    worker.serve()
    assert [call.future.result()["x"].shape for call in calls] == [
        (1, 2),
        (1, 3),
        (2, 2),
    ]


async def test_a_batch_of_big_arrays_reaches_the_worker_intact():
    clock = FakeClock()
    dispatcher = Dispatcher("m", CallQueue(BatchPolicy(max_infer_rows=4)), clock=clock)
    calls = [infer_call(1, tag={"x": image(1, fill)}) for fill in (1.0, 2.0)]
    for call in calls:
        dispatcher.submit(call)
    worker = FakeWorker("m/0", clock, dispatcher)
    dispatcher.add(worker)
    dispatcher.pump()  # what the loop would run next (call_soon)
    (message,) = worker.messages
    assert message.method == "infer_batch"
    assert [payload["x"][0, 0] for _, payload in message.items] == [1.0, 2.0]
    worker.serve()
    assert calls[1].future.result()["x"].shape == (1, BIG)
