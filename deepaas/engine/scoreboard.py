"""The few bytes a predict worker and its parent share: which call the
worker runs, since when, and which calls the parent took back (see
:mod:`deepaas.engine.protocol`, whose messages these complement, and
:mod:`deepaas.engine.dispatcher`, which reads them).
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

_INT = struct.Struct("<q")
_FLOAT = struct.Struct("<d")
_RUNNING = 0  # seq of the call being computed; 0: none        (worker writes)
_STARTED = 8  # time.monotonic() when it started, in seconds    (worker writes)
_REVOKED_LO = 16  # calls numbered lo..hi are skipped; 0: none    (parent writes)
_REVOKED_HI = 24
SCOREBOARD_SIZE = 32


class Scoreboard:
    """The few bytes a worker and its parent share (see
    :mod:`deepaas.engine.protocol`'s docstring).

    Each field has one writer. The fields are read without locks: a reader
    may see a field one update late, so the worker checks "taken back" both
    before and after it marks a call running, and the parent gives every
    call it takes back to another worker, even one the board shows running
    at that moment (the worker's second look may still skip it). In the
    rare race where the worker's second look misses the take-back, the call
    is computed twice and the answer of the worker that now holds it is
    used (predictions are meant to be pure functions of their arguments).

    There is one taken-back range: the parent only takes back calls after
    the one a worker runs, so a new range never starts before a call the
    worker has yet to pass; the calls of an older range are behind it.

    ``buffer`` is a shared mapping (:meth:`create`, :meth:`attach`), or any
    writable buffer of :data:`SCOREBOARD_SIZE` bytes (tests use a
    ``bytearray``).
    """

    __slots__ = ("_buffer", "fd")

    def __init__(self, buffer: Any, fd: int | None = None) -> None:
        self._buffer = buffer
        self.fd = fd  # the descriptor a child maps; None for a plain buffer

    @classmethod
    def create(cls) -> Scoreboard:
        """A zeroed scoreboard in anonymous shared memory, to give a child.

        Pass :attr:`fd` to the child (``pass_fds``) and close it with
        :meth:`close_fd` once the child started.
        """
        memfd_create = getattr(os, "memfd_create", None)
        if memfd_create is not None:
            fd = memfd_create("deepaas-scoreboard", os.MFD_CLOEXEC)
        else:  # pragma: no cover - not Linux: an unlinked temporary file
            import tempfile

            with tempfile.TemporaryFile() as file:
                fd = os.dup(file.fileno())
        os.ftruncate(fd, mmap.PAGESIZE)
        return cls(mmap.mmap(fd, mmap.PAGESIZE), fd)

    @classmethod
    def attach(cls, fd: int) -> Scoreboard:
        """The child's side: map the descriptor its parent passed."""
        board = cls(mmap.mmap(fd, mmap.PAGESIZE))
        os.close(fd)
        return board

    def close_fd(self) -> None:
        """Close the descriptor (the mapping stays)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def release(self) -> None:
        """Unmap the shared memory, keeping its last values in a plain buffer.

        For the parent once its child is gone: a mapping holds a descriptor
        of its own (Python's ``mmap`` duplicates the one it maps) until it is
        closed, and a dead worker's handle may live on (the worker that
        replaces it points back at it), so waiting for the garbage collector
        left one descriptor open per replaced worker.
        """
        buffer = self._buffer
        if isinstance(buffer, mmap.mmap) and not buffer.closed:
            self._buffer = bytearray(buffer[:SCOREBOARD_SIZE])
            buffer.close()

    # -- worker side ----------------------------------------------------------

    def _revoked(self, seq: int) -> bool:
        buffer = self._buffer
        lo = _INT.unpack_from(buffer, _REVOKED_LO)[0]
        return bool(lo) and lo <= seq <= _INT.unpack_from(buffer, _REVOKED_HI)[0]

    def start(self, seq: int, now: float) -> bool:
        """Mark ``seq`` running; False (and nothing marked) if taken back."""
        if self._revoked(seq):
            return False
        buffer = self._buffer
        _FLOAT.pack_into(buffer, _STARTED, now)
        _INT.pack_into(buffer, _RUNNING, seq)
        if self._revoked(seq):  # taken back while we marked it
            _INT.pack_into(buffer, _RUNNING, 0)
            return False
        return True

    def finish(self) -> None:
        """Nothing is running any more."""
        _INT.pack_into(self._buffer, _RUNNING, 0)

    # -- parent side ----------------------------------------------------------

    def running(self) -> tuple[int, float]:
        """``(seq, started)`` of the call being computed; ``(0, 0.0)`` if none."""
        buffer = self._buffer
        seq = _INT.unpack_from(buffer, _RUNNING)[0]
        started = _FLOAT.unpack_from(buffer, _STARTED)[0]
        return seq, started

    def revoke(self, lo: int, hi: int) -> None:
        """Take back the calls numbered ``lo`` to ``hi`` not yet started."""
        buffer = self._buffer
        _INT.pack_into(buffer, _REVOKED_HI, hi)
        _INT.pack_into(buffer, _REVOKED_LO, lo)
