"""The predict worker process: load the plugin, warm it, then serve calls.

Started by :mod:`deepaas.engine.pool` through :mod:`deepaas.engine.process`
as ``python -m deepaas.engine.worker CONFIG`` (a fresh interpreter, never a
fork of the server). Its device environment is already set by the parent;
it reads only the JSON ``CONFIG`` argument, the socket and the scoreboard
whose descriptors that names (see :mod:`deepaas.engine.protocol`).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import sys
import time
from typing import Any

from deepaas import scratch
from deepaas.engine.failures import describe_exception
from deepaas.engine.process import EXIT_FAILED, child_main
from deepaas.engine.protocol import (
    FrameDecoder,
    Invoke,
    Ready,
    RemoteError,
    Results,
    Scoreboard,
    StartFailed,
    coalesce,
    pack,
    pack_parts,
)
from deepaas.log import RecordLines
from deepaas.model import loading
from deepaas.model.signature import InferOutputError
from deepaas.model.v2.results import OutputError, ResultRenderer
from deepaas.tracing import TaggedOutput

RECV_SIZE = 1 << 20
OUT_OF_MEMORY = "out_of_memory"
MAX_MEMORY = "max_memory"


def resident_bytes() -> int:
    """This process's resident memory (RSS) in bytes; 0 where unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class WorkerLoop:
    """Serves calls from one socket until the parent closes it."""

    def __init__(
        self, config: dict[str, Any], sock: socket.socket, board: Scoreboard
    ) -> None:
        self.config = config
        self.sock = sock
        self.board = board
        self.max_memory = int(config.get("max_memory", 0))
        self.retire: str | None = None

    def send(self, message: Any) -> None:
        self.sock.sendall(pack(message))

    def start(self) -> ResultRenderer | None:
        """Import and warm the plugin; None (after saying why) if that failed."""
        config = self.config
        spec = loading.PluginSpec(
            config["model"], config["target"], config.get("origin", "entry point")
        )
        stage = "import"
        try:
            model = loading.load(spec)
            if self.config.get("warm", True):
                stage = "warm"
                model.warm()
        except BaseException as exc:
            error = describe_exception(exc)
            message = (
                str(exc)
                if isinstance(exc, loading.PluginLoadError)
                else f"{stage}() of model {spec.name!r} failed: {error.message}"
            )
            # The traceback goes with the message: the server logs both in
            # one record (a respawn with the same files sends none).
            detail = error.traceback if self.config.get("traceback", True) else ""
            self.send(StartFailed(stage, message, detail))
            return None
        prefix = self.config.get("result_prefix", "result-")
        return ResultRenderer(model, self.config["tmp_dir"], prefix)

    def serve(self, renderer: ResultRenderer) -> None:
        """Answer calls until the parent closes the socket.

        A result is sent as soon as it is computed, before the next call
        starts: however long that call runs, an answer already made never
        waits for it (nor for a call of the same message: see :meth:`call`).
        """
        self.send(Ready(os.getpid()))
        decoder = FrameDecoder()
        # Read into one buffer allocated now, not a new 1 MiB per read: when
        # the model has used up the memory it may use (RLIMIT_AS), its own
        # allocation fails (a 500, then warm-before-retire), not this loop's.
        inbox = bytearray(RECV_SIZE)
        view = memoryview(inbox)
        pending: collections.deque[Any] = collections.deque()
        while True:
            if not pending:
                target = decoder.filling()  # a big frame's rest: read into it
                if target is not None:
                    with target:
                        size = self.sock.recv_into(target)
                    if not size:
                        return
                    pending.extend(decoder.filled(size))
                    continue
                size = self.sock.recv_into(inbox)
                if not size:
                    return
                pending.extend(decoder.feed(view[:size]))
                continue
            message = pending.popleft()
            if type(message) is Invoke:
                self.answer(self.call(renderer, message))

    def answer(self, results: Results) -> None:
        """Send ``results``: the small frames in one write, an array's
        buffer as it is (no copy)."""
        for part in coalesce(pack_parts(results)):
            self.sock.sendall(part)

    def call(self, renderer: ResultRenderer, message: Invoke) -> Results:
        """Run one message (calls or a batch); whatever happens, its Results.

        Of a message of several calls (not a batch), each call's answer but
        the last is sent on its own (a ``Results`` with ``final`` False)
        before the next call starts: a fast call never waits for a slow one
        sent with it. The returned ``Results`` answers the rest.

        What the plugin writes meanwhile is tagged with the request id of
        the call it runs (a batch's: all of them, comma-separated).
        """
        started = time.perf_counter()
        method = message.method
        ids = message.request_ids
        try:
            if method == "predict_batch" or method == "infer_batch":
                TaggedOutput.running = ",".join(filter(None, ids)) or None
                if method == "predict_batch":
                    results = self._predict_batch(renderer, message.items)
                else:
                    results = self._infer_batch(renderer, message.items)
            else:
                one = self._infer if method == "infer" else self._predict
                results = []
                for index, (seq, payload) in enumerate(message.items):
                    if self.retire == OUT_OF_MEMORY:
                        break  # the heap is spent: the parent gives these to another
                    if results:
                        now = time.perf_counter()
                        self.answer(Results(results, now - started, final=False))
                        started, results = now, []
                    if self.board.start(seq, time.monotonic()):
                        TaggedOutput.running = ids[index] if index < len(ids) else None
                        results.append(one(renderer, seq, payload))
                        self.board.finish()
        finally:
            TaggedOutput.running = None
        retire = self.retire
        if retire is None and self.max_memory and resident_bytes() > self.max_memory:
            retire = self.retire = MAX_MEMORY
        return Results(results, time.perf_counter() - started, retire)

    def _predict(
        self, renderer: ResultRenderer, seq: int, payload: Any
    ) -> tuple[int, bool, Any]:
        try:
            output = renderer.model.predict(payload)
        except BaseException as exc:  # a plugin may raise anything
            return (seq, False, self._failure(renderer, exc))
        return self._render(renderer, seq, payload, output)

    def _predict_batch(
        self, renderer: ResultRenderer, items: list[tuple[int, Any]]
    ) -> list[tuple[int, bool, Any]]:
        if self.retire == OUT_OF_MEMORY or not items:
            return []  # the heap is spent: the parent gives it to another
        if not self.board.start(items[0][0], time.monotonic()):
            return []  # the parent took the batch back
        try:
            payloads = [payload for _, payload in items]
            try:
                outputs = renderer.model.predict_batch(payloads)
            except BaseException as exc:  # every request of the batch gets it
                error = self._failure(renderer, exc)
                return [(seq, False, error) for seq, _ in items]
            results = []
            for (seq, payload), output in zip(items, outputs, strict=True):
                if isinstance(output, BaseException):  # fails only its request
                    results.append((seq, False, describe_exception(output)))
                else:
                    results.append(self._render(renderer, seq, payload, output))
            return results
        finally:
            self.board.finish()

    def _infer(
        self, renderer: ResultRenderer, seq: int, arrays: Any
    ) -> tuple[int, bool, Any]:
        """A tensor-native call: its output arrays, as they are (the API
        process encodes them)."""
        try:
            return (seq, True, renderer.model.infer(arrays))
        except InferOutputError as exc:
            return (seq, False, RemoteError(500, str(exc)))
        except BaseException as exc:  # a plugin may raise anything
            return (seq, False, self._failure(renderer, exc))

    def _infer_batch(
        self, renderer: ResultRenderer, items: list[tuple[int, Any]]
    ) -> list[tuple[int, bool, Any]]:
        """Calls of one group as one ``infer`` (see
        :mod:`deepaas.model.stacking`); a failure fails them all, but for
        calls the model refused as inputs (a 400), which fail alone
        (:meth:`~deepaas.model.v2.wrapper.ModelWrapper.infer_batch`)."""
        if self.retire == OUT_OF_MEMORY or not items:
            return []  # the heap is spent: the parent gives it to another
        if not self.board.start(items[0][0], time.monotonic()):
            return []  # the parent took the batch back
        try:
            try:
                outputs = renderer.model.infer_batch([arrays for _, arrays in items])
            except InferOutputError as exc:
                error = RemoteError(500, str(exc))
            except BaseException as exc:  # every call of the batch gets it
                error = self._failure(renderer, exc)
            else:
                return [
                    (seq, False, self._failure(renderer, output))
                    if isinstance(output, BaseException)  # refused alone
                    else (seq, True, output)
                    for (seq, _), output in zip(items, outputs, strict=True)
                ]
            return [(seq, False, error) for seq, _ in items]
        finally:
            self.board.finish()

    def _render(
        self, renderer: ResultRenderer, seq: int, payload: Any, output: Any
    ) -> tuple[int, bool, Any]:
        try:
            return (seq, True, renderer.render(output, payload.get("accept")))
        except OutputError as exc:
            return (seq, False, RemoteError(500, str(exc)))
        except OSError as exc:
            if not scratch.is_no_space(exc):
                return (seq, False, self._failure(renderer, exc))
            detail = f"cannot write the result of this call: {exc}"
            return (seq, False, RemoteError(507, scratch.NO_SPACE_MESSAGE, detail))
        except BaseException as exc:
            return (seq, False, self._failure(renderer, exc))

    def _failure(self, renderer: ResultRenderer, exc: BaseException) -> RemoteError:
        if isinstance(exc, MemoryError):
            # The heap may be exhausted for good: answer, then be replaced.
            self.retire = OUT_OF_MEMORY
            return RemoteError(
                500,
                f"model {renderer.model.name!r} ran out of memory while handling "
                "this request; its worker is being replaced",
            )
        # Its traceback travels with it: the server logs it under the line
        # that reports the failed request, at that line's level.
        return describe_exception(exc)


def run(config: dict[str, Any], sock: socket.socket) -> int:
    """The worker's life: start, say ready, serve; its exit status."""
    # Before the plugin is imported: a logging handler it makes writes here.
    sys.stdout = TaggedOutput(sys.stdout)
    sys.stderr = TaggedOutput(sys.stderr)
    # What it logs with no handler of its own: a record with its traceback
    # to the server's log, at its level (not a line per line, at INFO).
    logging.lastResort = RecordLines()
    board = Scoreboard.attach(config["board_fd"])
    worker = WorkerLoop(config, sock, board)
    renderer = worker.start()
    if renderer is None:
        return EXIT_FAILED
    worker.serve(renderer)
    return 0


def main() -> None:
    child_main(run)


if __name__ == "__main__":
    main()
