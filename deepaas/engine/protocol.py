"""How the API process and its children talk: typed messages and a scoreboard.

**Messages.** One stream socket per child (a predict worker or a training
job) carries frames: an 8-byte big-endian length, then a pickle of one of
the :class:`~typing.NamedTuple` messages below, in their wire form (see
:func:`pack`). Only plain values cross:
arguments (uploaded files travel as paths), rendered results, and errors
reduced to :class:`RemoteError` (a status and strings), so nothing a plugin
returns or raises can fail to unpickle on the other side.

Parent to predict worker: :class:`Invoke` (one call, several calls, or one
batch). Predict worker to parent: :class:`Ready`, :class:`StartFailed`,
:class:`Results` (exactly one per :class:`Invoke`, in order).

Parent to training job: :class:`Train` (once). Training job to parent:
:class:`Progress` (any number), then :class:`TrainDone` or
:class:`StartFailed` (import, warm, train or result stage).

**Scoreboard.** Each predict worker also shares a few bytes of memory with
the parent (:class:`Scoreboard`): before it runs a call it writes the call's
sequence number there, and it skips calls the parent has taken back. The
parent reads it without a system call, so it always knows which call a
worker is running: when the worker dies or outlives a deadline, only that
call fails and the calls it had not started go to another worker; when a
usually fast call runs long, the calls queued behind it in that worker are
taken back. See :mod:`deepaas.engine.dispatcher`.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import struct
from typing import Any, NamedTuple

from deepaas.model.v2.results import PredictResult


class RemoteError(NamedTuple):
    """An error raised in a worker, reduced to what the client is told.

    ``status`` is the HTTP status to answer (500 for a plugin exception, or
    the status of an aiohttp ``HTTPException`` the plugin raised).
    """

    status: int
    message: str
    traceback: str = ""


# -- predict workers ----------------------------------------------------------


class Invoke(NamedTuple):
    """Run ``method`` ("predict" or "predict_batch") on ``items``.

    ``items`` are ``(seq, kwargs)`` pairs; ``seq`` numbers the calls sent to
    this worker, 1, 2, 3, ... in the order it must run them. For
    "predict_batch" the items are one batch.
    """

    method: str
    items: list[tuple[int, dict[str, Any]]]


class Ready(NamedTuple):
    """The worker imported and warmed the plugin; it takes calls now."""

    pid: int


class StartFailed(NamedTuple):
    """Import, ``warm()``, ``train()`` or its result failed: ``message`` says
    why. A predict worker exits after sending it."""

    stage: str
    message: str


class Results(NamedTuple):
    """The answers to one :class:`Invoke`, in its order.

    ``items`` are ``(seq, ok, value)``: ``value`` is a rendered
    :class:`~deepaas.model.v2.results.PredictResult` when ``ok``, else a
    :class:`RemoteError`. A call the parent took back is left out.
    ``seconds`` is the compute time of the whole message. ``retire`` is set
    when the worker should be replaced once this is delivered:
    ``"out_of_memory"`` (the model raised MemoryError) or ``"max_memory"``
    (its resident memory passed the limit it was given).
    """

    items: list[tuple[int, bool, Any]]
    seconds: float
    retire: str | None = None


# -- training jobs ------------------------------------------------------------


class Train(NamedTuple):
    """Run ``train(**kwargs)`` (sent once, right after the job starts)."""

    kwargs: dict[str, Any]


class Progress(NamedTuple):
    """Values the training reported with ``deepaas.training.report()``."""

    values: dict[str, Any]


class TrainDone(NamedTuple):
    """``train()`` returned; ``output`` is its value as JSON text."""

    output: str


# -- framing ------------------------------------------------------------------

_HEADER = struct.Struct("!Q")
HEADER_SIZE = _HEADER.size


# On the wire a message is a plain tuple: its kind's index in _KINDS, then
# its fields; the values in a Results are plain tuples too. A NamedTuple is
# pickled by a reference to its class, which pickle checks by import and
# rebuilds through Python code: about 5 us more each way per message, on the
# event loop's thread (a predict call crosses twice), against 1 us for the
# plain tuple.
_KINDS: tuple[type[tuple[Any, ...]], ...] = (
    Invoke,
    Ready,
    StartFailed,
    Results,
    Train,
    Progress,
    TrainDone,
)
_KIND_INDEX = {kind: index for index, kind in enumerate(_KINDS)}
_RESULTS = _KIND_INDEX[Results]
_new_tuple = tuple.__new__


def _to_wire(message: Any) -> tuple[Any, ...]:
    """``message`` as plain tuples; KeyError for anything not a message."""
    index = _KIND_INDEX[type(message)]
    if index == _RESULTS:
        items = [(seq, ok, tuple(value)) for seq, ok, value in message.items]
        return (index, items, message.seconds, message.retire)
    return (index, *message)


def _from_wire(wire: tuple[Any, ...]) -> Any:
    """The message :func:`_to_wire` made ``wire`` from."""
    index = wire[0]
    if index == _RESULTS:
        items = [
            (seq, ok, _new_tuple(PredictResult if ok else RemoteError, value))
            for seq, ok, value in wire[1]
        ]
        return _new_tuple(Results, (items, wire[2], wire[3]))
    return _new_tuple(_KINDS[index], wire[1:])


def pack(message: Any) -> bytes:
    """Frame one message: an 8-byte length, then the pickle of its wire form.

    Raises whatever pickling raises for a value that cannot be pickled.
    """
    payload = pickle.dumps(_to_wire(message), protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def pack_tree(message: Any) -> bytes:
    """:func:`pack` for a message of request arguments, parsed from JSON or
    a form: a tree of plain values, with no cycles and no object shared.

    Pickled without a memo (``Pickler.fast``): the memo, which only serves
    cycles and shared objects, is most of pickle's time for big trees, which
    it spends holding the GIL on the event loop's thread (9 million short
    strings: 3.9 s with it, 0.35 s without). For a small message the
    pickler's set-up costs more than the memo saves (10 us against 6 us),
    so only calls from big bodies are sent this way. A message the fast mode
    refuses (a cycle, in an argument a plugin's own field made) is pickled
    the usual way.
    """
    buffer = io.BytesIO()
    buffer.write(bytes(HEADER_SIZE))
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    try:
        pickler.dump(_to_wire(message))
    except (ValueError, RecursionError):
        return pack(message)
    frame = buffer.getbuffer()
    _HEADER.pack_into(frame, 0, len(frame) - HEADER_SIZE)
    del frame  # release the export before reading the bytes
    return buffer.getvalue()


class FrameDecoder:
    """Accumulates bytes from a stream and yields whole messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Add ``data``; return the messages completed by it (maybe none).

        Raises whatever unpickling raises for a corrupt stream (IndexError or
        TypeError for a pickle that is not a message).
        """
        buffer = self._buffer
        if not buffer and len(data) > HEADER_SIZE:
            # The usual case: ``data`` is whole messages, read from where the
            # last read stopped; they are read from it, not copied first.
            (size,) = _HEADER.unpack_from(data)
            if len(data) == HEADER_SIZE + size:
                return [_from_wire(pickle.loads(data[HEADER_SIZE:]))]
        buffer += data
        messages = []
        start = 0
        end = len(buffer)
        with memoryview(buffer) as view:
            while end - start >= HEADER_SIZE:
                (size,) = _HEADER.unpack_from(view, start)
                body_start = start + HEADER_SIZE
                if end - body_start < size:
                    break
                with view[body_start : body_start + size] as body:
                    messages.append(_from_wire(pickle.loads(body)))
                start = body_start + size
        if start:
            del buffer[:start]
        return messages


# -- scoreboard ---------------------------------------------------------------

_INT = struct.Struct("<q")
_FLOAT = struct.Struct("<d")
_RUNNING = 0  # seq of the call being computed; 0: none        (worker writes)
_STARTED = 8  # time.monotonic() when it started, in seconds    (worker writes)
_REVOKED_LO = 16  # calls numbered lo..hi are skipped; 0: none    (parent writes)
_REVOKED_HI = 24
SCOREBOARD_SIZE = 32


class Scoreboard:
    """The few bytes a worker and its parent share (see the module docstring).

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
