"""Framing of wire messages: what ``pack_tree`` writes reads back the same."""

from __future__ import annotations

import datetime
import pickle

import pytest

from deepaas.engine import protocol
from deepaas.model.v2.results import PredictResult


def _read_one(frame: bytes):
    [message] = protocol.FrameDecoder().feed(frame)
    return message


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"text": "héllo", "n": 3, "x": 1.5, "flag": True, "none": None},
        {"options": [{"a": [1, 2, {"b": "c"}]}] * 3, "big": list(range(10_000))},
        {"when": datetime.date(2026, 12, 1), "blob": b"\x00\xff" * 100},
    ],
)
def test_pack_tree_reads_back_equal(arguments):
    message = protocol.Invoke("predict", [(1, arguments), (2, {"k": "v"})])
    assert _read_one(protocol.pack_tree(message)) == message
    assert _read_one(protocol.pack(message)) == message


def test_pack_tree_writes_no_memo():
    """The point of it: no memo opcodes (PUT/MEMOIZE) for a tree of values."""
    message = protocol.Invoke(
        "predict", [(1, {"strings": [f"s{i}" for i in range(50)]})]
    )
    tree = protocol.pack_tree(message)[protocol.HEADER_SIZE :]
    usual = protocol.pack(message)[protocol.HEADER_SIZE :]
    assert pickle.MEMOIZE in usual
    assert pickle.MEMOIZE not in tree
    assert len(tree) < len(usual)


def test_a_cycle_falls_back_to_the_usual_pickle():
    cyclic: list = []
    cyclic.append(cyclic)
    message = protocol.Invoke("predict", [(1, {"x": cyclic})])
    back = _read_one(protocol.pack_tree(message))
    inner = back.items[0][1]["x"]
    assert inner[0] is inner  # the cycle survived


def test_an_unpicklable_argument_still_raises():
    message = protocol.Invoke("predict", [(1, {"f": lambda: None})])
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        protocol.pack_tree(message)


_EVERY_KIND = [
    protocol.Invoke("predict_batch", [(1, {"x": 1}), (2, {"x": 2})]),
    protocol.Ready(1234),
    protocol.StartFailed("warm", "no weights"),
    protocol.Results(
        [
            (1, True, PredictResult("application/json", b'{"a": 1}')),
            (2, False, protocol.RemoteError(507, "disk full", "tb")),
            (3, True, PredictResult("image/png", None, "/tmp/x.png", True, "x.png")),
        ],
        0.25,
        "max_memory",
    ),
    protocol.Train({"epochs": 2}),
    protocol.Progress({"loss": 0.5}),
    protocol.TrainDone('{"ok": true}'),
]


@pytest.mark.parametrize("message", _EVERY_KIND, ids=lambda m: type(m).__name__)
def test_every_kind_reads_back_as_itself(message):
    back = _read_one(protocol.pack(message))
    assert type(back) is type(message)
    assert back == message
    if isinstance(message, protocol.Results):
        kinds = [type(value) for _, _, value in back.items]
        assert kinds == [PredictResult, protocol.RemoteError, PredictResult]


@pytest.mark.parametrize("message", _EVERY_KIND, ids=lambda m: type(m).__name__)
def test_the_wire_names_no_class(message):
    """Plain tuples on the wire: a class pickled by reference costs ~5 us
    each way on the event loop's thread."""
    payload = protocol.pack(message)[protocol.HEADER_SIZE :]
    assert b"deepaas" not in payload
    assert pickle.loads(payload)[0] == protocol._KIND_INDEX[type(message)]


def test_messages_split_across_reads_and_joined_in_one():
    frames = b"".join(protocol.pack(m) for m in _EVERY_KIND)
    decoder = protocol.FrameDecoder()
    got = []
    for i in range(0, len(frames), 5):
        got += decoder.feed(frames[i : i + 5])
    assert got == _EVERY_KIND
    assert protocol.FrameDecoder().feed(frames) == _EVERY_KIND


def test_a_pickle_that_is_no_message_raises():
    payload = pickle.dumps((99, "x"))
    frame = protocol._HEADER.pack(len(payload)) + payload
    with pytest.raises(IndexError):
        protocol.FrameDecoder().feed(frame)
