"""The predict worker's loop (:class:`deepaas.engine.worker.WorkerLoop`)
over a real socket pair, in a thread of the test: what it sends, and when.

Answers made close together are sent together, but an answer already
computed never waits long for a slow call that follows it, whether that
call came in the same message or in a message read with it
(:mod:`deepaas.engine.outbox`).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from deepaas.engine.outbox import Outbox
from deepaas.engine.protocol import FrameDecoder, Invoke, Results, Scoreboard, pack
from deepaas.engine.worker import WorkerLoop
from tests.engine import gate_plugin

pytestmark = pytest.mark.timeout(60)

FAST = {"wait": False}
SLOW = {"wait": True}


class Parent:
    """The parent's end of the socket: reads what the worker sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder()
        self.received: list[object] = []

    def read(self, seconds: float = 30.0) -> object:
        """The next message; fails the test if none comes in ``seconds``."""
        self.sock.settimeout(seconds)
        while not self.received:
            data = self.sock.recv(1 << 16)
            assert data, "the worker closed its socket"
            self.received.extend(self.decoder.feed(data))
        return self.received.pop(0)


def _serving(tmp_path, delay: float | None = None) -> Iterator[Parent]:
    """A worker loop serving the gate plugin in a thread; ``delay``: its
    outbox's (default: FLUSH_AFTER_S)."""
    gate_plugin.RELEASE.clear()
    ours, theirs = socket.socketpair()
    board = Scoreboard.create()
    config = {"model": "gated", "target": "tests.engine.gate_plugin"}
    loop = WorkerLoop({**config, "tmp_dir": str(tmp_path)}, theirs, board)
    if delay is not None:
        loop.outbox = Outbox(theirs, delay)
    renderer = loop.start()
    assert renderer is not None
    thread = threading.Thread(target=loop.serve, args=(renderer,), daemon=True)
    thread.start()
    parent = Parent(ours)
    try:
        assert type(parent.read()).__name__ == "Ready"
        yield parent
    finally:
        gate_plugin.RELEASE.set()  # whatever the test left waiting ends
        ours.close()
        thread.join(30)
        theirs.close()
        board.close_fd()
    assert not thread.is_alive()


@pytest.fixture
def worker(tmp_path) -> Iterator[Parent]:
    yield from _serving(tmp_path)


@pytest.fixture
def patient_worker(tmp_path) -> Iterator[Parent]:
    """Its outbox waits 60 s before sending for itself: what goes out
    together is what the worker's thread sends, however busy the machine."""
    yield from _serving(tmp_path, 60.0)


def _answers(results: object) -> list[tuple[int, bool]]:
    assert isinstance(results, Results)
    return [(seq, ok) for seq, ok, _ in results.items]


def test_a_call_answered_while_a_later_call_of_its_message_runs(worker):
    worker.sock.sendall(pack(Invoke("predict", [(1, FAST), (2, SLOW)])))
    first = worker.read()  # the slow call has not been released
    assert _answers(first) == [(1, True)]
    assert isinstance(first, Results) and not first.final
    gate_plugin.RELEASE.set()
    last = worker.read()
    assert _answers(last) == [(2, True)]
    assert isinstance(last, Results) and last.final


def test_a_call_answered_while_a_message_read_with_it_runs(worker):
    # Both messages in one write: the worker reads them together.
    worker.sock.sendall(
        pack(Invoke("predict", [(1, FAST)])) + pack(Invoke("predict", [(2, SLOW)]))
    )
    first = worker.read()
    assert _answers(first) == [(1, True)]
    assert isinstance(first, Results) and first.final
    gate_plugin.RELEASE.set()
    assert _answers(worker.read()) == [(2, True)]


def test_fast_calls_of_one_message_are_answered_together(patient_worker):
    """Answers made close together go in one frame: each frame costs the
    parent's event loop a decode and a dispatcher pass."""
    patient_worker.sock.sendall(
        pack(Invoke("predict", [(1, FAST), (2, FAST), (3, FAST)]))
    )
    answer = patient_worker.read()
    assert _answers(answer) == [(1, True), (2, True), (3, True)]
    assert isinstance(answer, Results) and answer.final


def test_messages_read_together_are_answered_in_one_write(patient_worker):
    patient_worker.sock.sendall(
        pack(Invoke("predict", [(1, FAST)])) + pack(Invoke("predict", [(2, FAST)]))
    )
    # Both frames come in the worker's one write: one recv returns both.
    patient_worker.sock.settimeout(30)
    data = patient_worker.sock.recv(1 << 16)
    frames = patient_worker.decoder.feed(data)
    assert [_answers(f) for f in frames] == [[(1, True)], [(2, True)]]
