"""A predict worker's answers on their way to the parent: sent together,
and never held behind a slow call.

Answers that are made close together go out together: one
:class:`~deepaas.engine.protocol.Results` frame per message (not one per
call) and the frames of the messages read together in one write. On the
parent's event loop, the busiest thread of the server, each frame costs a
decode and a pass of the dispatcher: sending each call's answer in a frame
of its own cost the API process 11% more instructions per trivial
prediction (callgrind, 318k against 287k; ``benchmarks/README.md``).

Holding answers must not make one wait for a slow call that follows (a
message's next call, or the next message read with it): the worker's
thread is then inside the plugin, and cannot send. So a *flusher* thread
sends what is held once its oldest answer is :data:`FLUSH_AFTER_S` old and
the worker's thread has gone on to another call: an answer waits for a
slow call at most that long (plus the time the plugin holds the GIL
without letting go, up to the interpreter's switch interval, 5 ms). The
worker's thread sends itself whenever it has nothing else to run, so in
the common case the flusher only wakes, finds nothing held, and sleeps.

The answers of a message sent before its end go in a ``Results`` with
``final`` False; the message's last ``Results`` is ``final``. All
sending happens under one lock, so frames never interleave and answers
keep their order.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from deepaas.engine.protocol import Results, coalesce, pack_parts

#: How long a made answer may wait for companions once the worker's thread
#: runs another call (seconds).
FLUSH_AFTER_S = 0.0005


class Outbox:
    """Answers made and not yet sent, for one worker's socket."""

    def __init__(self, sock: socket.socket, delay: float = FLUSH_AFTER_S) -> None:
        self._sock = sock
        self._delay = delay
        self._lock = threading.Lock()
        self._whole: list[Results] = []  # ended messages' answers
        self._partial: list[tuple[int, bool, Any]] = []  # the running message's
        self._clock = 0.0  # when the running message's unsent part began
        self._made = 0.0  # when its latest answer was made
        self._since = 0.0  # when the oldest unsent answer was made; 0: none
        self._wake = threading.Event()
        self._stopped = False

    def start_flusher(self) -> None:
        """Start the thread that sends what waits behind a slow call."""
        threading.Thread(
            target=self._flusher, name="deepaas-outbox", daemon=True
        ).start()

    def stop_flusher(self) -> None:
        with self._lock:
            self._stopped = True
        self._wake.set()

    # -- the worker's thread ------------------------------------------------

    def begin(self) -> None:
        """A message starts: its compute time counts from now."""
        with self._lock:
            self._clock = time.perf_counter()

    def add(self, item: tuple[int, bool, Any]) -> None:
        """One call's answer (a message of several calls, not a batch)."""
        now = time.perf_counter()
        with self._lock:
            self._partial.append(item)
            self._made = now
            if not self._since:
                self._since = now

    def end(self, items: list[tuple[int, bool, Any]], retire: str | None) -> None:
        """The message ended: its final ``Results``, with ``items`` (a
        batch's answers) after those :meth:`add` gave."""
        now = time.perf_counter()
        with self._lock:
            answers = self._partial + items if items else self._partial
            self._whole.append(Results(answers, now - self._clock, retire))
            self._partial = []
            if not self._since:
                self._since = now

    def before_call(self) -> None:
        """A call is about to start: what is held must not wait for it."""
        if self._since:
            self._wake.set()

    def stale(self) -> bool:
        """Has the oldest held answer waited :data:`FLUSH_AFTER_S`?"""
        since = self._since
        return bool(since) and time.perf_counter() - since >= self._delay

    def flush(self) -> None:
        """Send everything held now."""
        with self._lock:
            if self._since:
                self._send_held()

    # -- both threads, under the lock -------------------------------------------

    def _send_held(self) -> None:
        parts = []
        for results in self._whole:
            parts.extend(pack_parts(results))
        if self._partial:
            early = Results(self._partial, self._made - self._clock, final=False)
            parts.extend(pack_parts(early))
            self._clock = self._made
        self._whole, self._partial, self._since = [], [], 0.0
        for part in coalesce(parts):
            self._sock.sendall(part)

    # -- the flusher thread ---------------------------------------------------

    def _flusher(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self._delay)
            with self._lock:
                if self._stopped:
                    return
                if self._since and time.perf_counter() - self._since >= self._delay:
                    try:
                        self._send_held()
                    except OSError:  # the parent is gone: the worker's recv sees it
                        return
                if not self._since:  # nothing held: sleep until armed again
                    self._wake.clear()
