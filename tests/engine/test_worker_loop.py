"""The predict worker's loop (:class:`deepaas.engine.worker.WorkerLoop`)
over a real socket pair, in a thread of the test: what it sends, and when.

An answer already computed is sent before the worker starts its next
call, whether that call came in the same message or in a message read
with it: a slow call never holds a fast one's answer back.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

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


@pytest.fixture
def worker(tmp_path) -> Iterator[Parent]:
    """A worker loop serving the gate plugin in a thread."""
    gate_plugin.RELEASE.clear()
    ours, theirs = socket.socketpair()
    board = Scoreboard.create()
    config = {"model": "gated", "target": "tests.engine.gate_plugin"}
    loop = WorkerLoop({**config, "tmp_dir": str(tmp_path)}, theirs, board)
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


def test_fast_calls_of_one_message_each_answered_in_order(worker):
    worker.sock.sendall(pack(Invoke("predict", [(1, FAST), (2, FAST), (3, FAST)])))
    answers = [worker.read() for _ in range(3)]
    assert [_answers(a) for a in answers] == [[(1, True)], [(2, True)], [(3, True)]]
    assert [a.final for a in answers if isinstance(a, Results)] == [False, False, True]
