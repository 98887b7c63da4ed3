"""The worker process: load the plugin, warm it, then serve calls.

Started by :mod:`deepaas.engine.pool` as ``python -m deepaas.engine.worker
CONFIG`` (a fresh interpreter, never a fork of the server). Its device
environment is already set by the parent; it reads only the JSON ``CONFIG``
argument and the socket whose descriptor that names.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import signal
import socket
import sys
import time
import traceback
from typing import Any

from deepaas.engine.protocol import (
    CALL,
    FAILED,
    READY,
    RESULT,
    FrameDecoder,
    RemoteError,
    pack,
)
from deepaas.model import loading
from deepaas.model.v2.results import OutputError, ResultRenderer

EXIT_START_FAILED = 3
FLUSH_AFTER_S = 0.0005


def describe_exception(exc: BaseException) -> RemoteError:
    """Reduce any exception to a picklable status and message.

    An aiohttp ``HTTPException`` raised by plugin code keeps its status and
    reason (without importing aiohttp here); anything else is a 500 saying
    ``<ExceptionType>: <text>``.
    """
    cls = type(exc)
    tb = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    try:
        text = str(exc)
    except Exception:
        text = "<exception could not be printed>"
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if (
        cls.__module__.startswith("aiohttp.")
        and isinstance(status, int)
        and 400 <= status <= 599
    ):
        reason = getattr(exc, "reason", None) or text
        return RemoteError(status, str(reason), tb)
    if isinstance(exc, NotImplementedError):
        return RemoteError(501, f"NotImplementedError: {text}".rstrip(": "), tb)
    message = f"{cls.__name__}: {text}" if text else cls.__name__
    return RemoteError(500, message, tb)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill us if the server dies, so no worker is orphaned."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != parent_pid:
        os._exit(EXIT_START_FAILED)


class WorkerLoop:
    """Serves calls from one socket until the parent closes it."""

    def __init__(self, config: dict[str, Any], sock: socket.socket) -> None:
        self.config = config
        self.sock = sock

    def send(self, message: Any) -> None:
        self.sock.sendall(pack(message))

    def start(self) -> ResultRenderer:
        spec = loading.PluginSpec(self.config["model"], self.config["target"])
        stage = "import"
        try:
            model = loading.load(spec)
            if self.config.get("warm", True):
                stage = "warm"
                model.warm()
        except BaseException as exc:
            error = describe_exception(exc)
            sys.stderr.write(error.traceback)
            message = (
                str(exc)
                if isinstance(exc, loading.PluginLoadError)
                else f"{stage}() of model {spec.name!r} failed: {error.message}"
            )
            self.send((FAILED, stage, message))
            raise SystemExit(EXIT_START_FAILED) from None
        return ResultRenderer(model, self.config["tmp_dir"])

    def serve(self, renderer: ResultRenderer) -> None:
        """Answer calls until the parent closes the socket.

        Calls that arrived together are answered together (one write), but a
        result never waits more than FLUSH_AFTER_S for its companions.
        """
        self.send((READY, {"pid": os.getpid()}))
        decoder = FrameDecoder()
        pending: collections.deque[Any] = collections.deque()
        outbox: list[bytes] = []
        first_unsent = 0.0
        while True:
            if not pending:
                if outbox:
                    self.sock.sendall(b"".join(outbox))
                    outbox.clear()
                data = self.sock.recv(1 << 20)
                if not data:
                    return
                pending.extend(decoder.feed(data))
                continue
            message = pending.popleft()
            if message[0] != CALL:
                continue
            if not outbox:
                first_unsent = time.perf_counter()
            outbox.append(pack(self.call(renderer, message[1], message[2])))
            if time.perf_counter() - first_unsent > FLUSH_AFTER_S:
                self.sock.sendall(b"".join(outbox))
                outbox.clear()

    def call(
        self, renderer: ResultRenderer, method: str, items: list[tuple[int, Any]]
    ) -> tuple[Any, ...]:
        """Run one call (or one batch); whatever happens, a RESULT message."""
        started = time.perf_counter()
        if method == "predict_batch":
            results = self._predict_batch(renderer, items)
        else:
            results = [self._predict(renderer, cid, payload) for cid, payload in items]
        return (RESULT, results, time.perf_counter() - started)

    def _predict(
        self, renderer: ResultRenderer, call_id: int, payload: Any
    ) -> tuple[int, bool, Any]:
        try:
            output = renderer.model.predict(payload)
        except BaseException as exc:  # a plugin may raise anything
            return (call_id, False, self._failure(renderer, exc))
        return self._render(renderer, call_id, payload, output)

    def _predict_batch(
        self, renderer: ResultRenderer, items: list[tuple[int, Any]]
    ) -> list[tuple[int, bool, Any]]:
        payloads = [payload for _, payload in items]
        try:
            outputs = renderer.model.predict_batch(payloads)
        except BaseException as exc:  # every request of the batch gets it
            error = self._failure(renderer, exc)
            return [(cid, False, error) for cid, _ in items]
        results = []
        for (call_id, payload), output in zip(items, outputs, strict=True):
            if isinstance(output, BaseException):  # fails only its request
                results.append((call_id, False, describe_exception(output)))
            else:
                results.append(self._render(renderer, call_id, payload, output))
        return results

    @staticmethod
    def _render(
        renderer: ResultRenderer, call_id: int, payload: Any, output: Any
    ) -> tuple[int, bool, Any]:
        try:
            return (call_id, True, renderer.render(output, payload.get("accept")))
        except OutputError as exc:
            return (call_id, False, RemoteError(500, str(exc)))
        except Exception as exc:
            return (call_id, False, describe_exception(exc))

    @staticmethod
    def _failure(renderer: ResultRenderer, exc: BaseException) -> RemoteError:
        error = describe_exception(exc)
        sys.stderr.write(
            f"model {renderer.model.name!r} raised during predict:\n{error.traceback}"
        )
        return error


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    config = json.loads(argv[0])
    _die_with_parent(config["parent_pid"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    sock = socket.socket(fileno=config["fd"])
    os.set_inheritable(sock.fileno(), False)
    worker = WorkerLoop(config, sock)
    try:
        worker.serve(worker.start())
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server went away: nothing left to answer
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    # Skip interpreter shutdown: stray plugin threads must not keep us alive.
    os._exit(0)


if __name__ == "__main__":
    main()
