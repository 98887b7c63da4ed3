"""Framing of wire messages: what ``pack_tree`` writes reads back the same."""

from __future__ import annotations

import datetime
import pickle

import pytest

from deepaas.engine import protocol


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
