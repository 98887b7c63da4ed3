"""How the API process and its children talk: typed messages and a scoreboard.

**Messages.** One stream socket per child (a predict worker or a training
job) carries frames: an 8-byte big-endian length, then a pickle of one of
the :class:`~typing.NamedTuple` messages below, in their wire form (see
:func:`pack`). Only plain values cross:
arguments (uploaded files travel as paths), rendered results, numpy arrays
(an infer call's inputs and outputs), and errors reduced to
:class:`RemoteError` (a status and strings), so nothing a plugin returns or
raises can fail to unpickle on the other side. An array is pickled as its
raw bytes (pickle protocol 5), never as a list; one of
:data:`OUT_OF_BAND_MIN` bytes or more travels after the pickle, not inside
it (:func:`pack_parts`): it is neither copied into the pickle when sent
nor out of the frame when received.

Parent to predict worker: :class:`Invoke` (one call, several calls, or one
batch; of predict, or of a tensor-native plugin's infer). Predict worker to
parent: :class:`Ready`, :class:`StartFailed`, :class:`Results` (exactly one
``final`` one per :class:`Invoke`, in order; a message of several calls
has its earlier calls answered as they are computed, in ``Results`` that
are not ``final``).

Parent to training job: :class:`Train` (once). Training job to parent:
:class:`Progress` (any number), then :class:`TrainDone` or
:class:`StartFailed` (import, warm, train or result stage).

**Scoreboard.** Each predict worker also shares a few bytes of memory with
the parent (:class:`Scoreboard`, in :mod:`deepaas.engine.scoreboard` and
importable from here): before it runs a call it writes the call's
sequence number there, and it skips calls the parent has taken back. The
parent reads it without a system call, so it always knows which call a
worker is running: when the worker dies or outlives a deadline, only that
call fails and the calls it had not started go to another worker; when a
usually fast call runs long, the calls queued behind it in that worker are
taken back. See :mod:`deepaas.engine.dispatcher`.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from deepaas.engine.buffers import (  # noqa: F401 (coalesce: re-exported)
    OUT_OF_BAND_MIN,
    WITH_BUFFERS,
    Part,
    buffers_frame,
    coalesce,
    split_buffers_frame,
)
from deepaas.engine.scoreboard import SCOREBOARD_SIZE, Scoreboard  # noqa: F401
from deepaas.model.v2.results import PredictResult


class RemoteError(NamedTuple):
    """An error raised in a worker, reduced to what the client is told.

    ``status`` is the HTTP status to answer (500 for a plugin exception, or
    the status of an aiohttp ``HTTPException`` the plugin raised).
    ``traceback`` is for the server's log, never the client: the plugin's
    traceback (or another detail), logged under the line that reports the
    failed request.
    """

    status: int
    message: str
    traceback: str = ""


# -- predict workers ----------------------------------------------------------


class Invoke(NamedTuple):
    """Run ``method`` on ``items``: "predict" or "infer" (each item on its
    own), "predict_batch" or "infer_batch" (the items are one batch: one
    call to the model).

    ``items`` are ``(seq, kwargs)`` pairs; ``seq`` numbers the calls sent to
    this worker, 1, 2, 3, ... in the order it must run them. An infer
    call's kwargs are its input arrays by name. ``request_ids`` are the ids
    of the items' requests, in their order (None for a call made outside a
    request; empty: none known): the worker tags what its plugin writes
    while it runs an item with that item's id (a batch's, with all of
    them), see :mod:`deepaas.tracing`.
    """

    method: str
    items: list[tuple[int, dict[str, Any]]]
    request_ids: Sequence[str | None] = ()


class Ready(NamedTuple):
    """The worker imported and warmed the plugin; it takes calls now."""

    pid: int


class StartFailed(NamedTuple):
    """Import, ``warm()``, ``train()`` or its result failed: ``message`` says
    why, ``traceback`` (maybe empty) is logged with it. A predict worker
    exits after sending it."""

    stage: str
    message: str
    traceback: str = ""


class Results(NamedTuple):
    """The answers to one :class:`Invoke`, or to its calls so far, in its
    order.

    ``items`` are ``(seq, ok, value)``: ``value`` is a rendered
    :class:`~deepaas.model.v2.results.PredictResult` (a predict call) or a
    dict of output arrays by name (an infer call) when ``ok``, else a
    :class:`RemoteError`. A call the parent took back is left out.
    ``seconds`` is the compute time of the whole message. ``retire`` is set
    when the worker should be replaced once this is delivered:
    ``"out_of_memory"`` (the model raised MemoryError) or ``"max_memory"``
    (its resident memory passed the limit it was given). ``final`` is False
    for the answers a worker sends while it still runs later calls of the
    same message (never for a batch): the message is answered by the one
    ``final`` Results that follows them.
    """

    items: list[tuple[int, bool, Any]]
    seconds: float
    retire: str | None = None
    final: bool = True


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
    """``message`` as plain tuples; KeyError for anything not a message.
    An infer call's outputs (a dict) stay a dict."""
    index = _KIND_INDEX[type(message)]
    if index == _RESULTS:
        items = [
            (seq, ok, value if type(value) is dict else tuple(value))
            for seq, ok, value in message.items
        ]
        return (index, items, message.seconds, message.retire, message.final)
    return (index, *message)


def _from_wire(wire: tuple[Any, ...]) -> Any:
    """The message :func:`_to_wire` made ``wire`` from."""
    index = wire[0]
    if index == _RESULTS:
        items = [
            (
                seq,
                ok,
                value
                if type(value) is dict
                else _new_tuple(PredictResult if ok else RemoteError, value),
            )
            for seq, ok, value in wire[1]
        ]
        return _new_tuple(Results, (items, wire[2], wire[3], wire[4]))
    return _new_tuple(_KINDS[index], wire[1:])


def pack(message: Any) -> bytes:
    """Frame one message: an 8-byte length, then the pickle of its wire form.

    Raises whatever pickling raises for a value that cannot be pickled.
    """
    payload = pickle.dumps(_to_wire(message), protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def pack_tree(message: Any) -> bytes:
    """:func:`pack` for a message of request arguments, parsed from JSON or
    a form: a tree of plain values (see :func:`pack_parts`)."""
    return b"".join(pack_parts(message, tree=True))


def pack_parts(message: Any, tree: bool = False) -> list[Part]:
    """Frame one message as parts to write in order: one bytes, and after
    it, for every array of :data:`OUT_OF_BAND_MIN` bytes or more, a view of
    the array's memory (no copy: leave the arrays alone until the parts are
    written) and the zeros that align the next one.

    Such a frame has the top bit of its length set (its layout:
    :mod:`deepaas.engine.buffers`).

    ``tree``: the message holds request arguments parsed from a big JSON
    or form body: a tree of plain values, pickled without a memo (see
    :func:`_fast_pickle`). Raises whatever pickling raises for a value that
    cannot be pickled.
    """
    buffers: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < OUT_OF_BAND_MIN:
            return True  # in the pickle
        buffers.append(view)
        return False

    wire = _to_wire(message)
    framed = _fast_pickle(wire, out_of_band) if tree else None
    payload: bytes | memoryview
    if framed is not None:
        if not buffers:
            return [framed]
        payload = memoryview(framed)[HEADER_SIZE:]
    else:
        buffers.clear()
        payload = pickle.dumps(
            wire, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=out_of_band
        )
        if not buffers:
            return [_HEADER.pack(len(payload)) + payload]
    return buffers_frame(payload, buffers)


def _fast_pickle(
    wire: Any, out_of_band: Callable[[pickle.PickleBuffer], bool]
) -> bytes | None:
    """``wire`` pickled without a memo (``Pickler.fast``), after its
    frame's length (written into the same buffer: a big pickle is not
    copied once more to prepend it); None when fast mode refuses it (a
    cycle, in an argument a plugin's own field made).

    The memo, which only serves cycles and shared objects, is most of
    pickle's time for big trees, spent holding the GIL on the event loop's
    thread (9 million short strings: 3.9 s with it, 0.35 s without); for a
    small message the set-up costs more than the memo saves (10 us against
    6 us), so only calls from big bodies are sent this way.
    """
    out = io.BytesIO()
    out.write(bytes(HEADER_SIZE))
    pickler = pickle.Pickler(
        out, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=out_of_band
    )
    pickler.fast = True
    try:
        pickler.dump(wire)
    except (ValueError, RecursionError):
        return None
    frame = out.getbuffer()
    _HEADER.pack_into(frame, 0, len(frame) - HEADER_SIZE)
    del frame  # release the export before reading the bytes
    return out.getvalue()


def _unpack_buffers(frame: bytearray) -> Any:
    """The message of a frame with buffers (its bytes after the length).
    Its arrays are views of ``frame``: writable, aligned, not copied."""
    pickled, buffers = split_buffers_frame(frame)
    return _from_wire(pickle.loads(pickled, buffers=buffers))


class FrameDecoder:
    """Accumulates bytes from a stream and yields whole messages.

    A frame with buffers (:func:`pack_parts`) is read into a buffer of its
    own, allocated once its length is known, which its arrays then view.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._frame: bytearray | None = None  # a frame with buffers, filling
        self._filled = 0

    def feed(self, data: bytes | memoryview) -> list[Any]:
        """Add ``data``; return the messages completed by it (maybe none).

        Raises whatever unpickling raises for a corrupt stream (IndexError or
        TypeError for a pickle that is not a message).
        """
        messages: list[Any] = []
        if self._frame is not None:
            taken = self._fill(data, 0, messages)
            if taken == len(data):
                return messages
            data = memoryview(data)[taken:]
        buffer = self._buffer
        if not buffer and not messages and len(data) > HEADER_SIZE:
            # The usual case: ``data`` is whole messages, read from where the
            # last read stopped; they are read from it, not copied first.
            (size,) = _HEADER.unpack_from(data)
            if len(data) == HEADER_SIZE + size:
                return [_from_wire(pickle.loads(data[HEADER_SIZE:]))]
        buffer += data
        start = 0
        end = len(buffer)
        with memoryview(buffer) as view:
            while end - start >= HEADER_SIZE:
                (size,) = _HEADER.unpack_from(view, start)
                body_start = start + HEADER_SIZE
                if size & WITH_BUFFERS:
                    self._frame = bytearray(size & ~WITH_BUFFERS)
                    self._filled = 0
                    start = body_start + self._fill(view, body_start, messages)
                    if self._frame is not None:
                        break
                    continue
                if end - body_start < size:
                    break
                with view[body_start : body_start + size] as body:
                    messages.append(_from_wire(pickle.loads(body)))
                start = body_start + size
        if start:
            del buffer[:start]
        return messages

    def filling(self) -> memoryview | None:
        """Where the rest of a frame with buffers goes, while one is being
        filled: read into it, then call :meth:`filled` (its bytes are then
        copied no more). None otherwise: :meth:`feed` what is read."""
        if self._frame is None:
            return None
        return memoryview(self._frame)[self._filled :]

    def filled(self, size: int) -> list[Any]:
        """``size`` bytes were read into :meth:`filling`'s view; the message
        they complete, if they do."""
        frame = self._frame
        assert frame is not None
        self._filled += size
        if self._filled < len(frame):
            return []
        self._frame = None
        return [_unpack_buffers(frame)]

    def _fill(self, data: bytes | memoryview, start: int, messages: list[Any]) -> int:
        """Copy what ``data[start:]`` holds of the frame being filled; when
        that completes it, its message goes to ``messages``. Returns the
        number of bytes taken."""
        target = self.filling()
        assert target is not None
        take = min(len(target), len(data) - start)
        with target, memoryview(data) as view:
            target[:take] = view[start : start + take]
        messages.extend(self.filled(take))
        return take
