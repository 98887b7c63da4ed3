"""The training process: load the plugin, run ``train(**kwargs)``, report back.

Started by :mod:`deepaas.training.jobs` through the engine's supervisor
(:mod:`deepaas.engine.process`) as ``python -m deepaas.training.runner
CONFIG``: a fresh interpreter in its own session (a cancel kills its whole
process group), its stdout and stderr appended to the job's log file, its
working directory the job's own, its device environment
(``CUDA_VISIBLE_DEVICES``, ``DEEPAAS_DEVICES``) set by the parent.

Messages (:mod:`deepaas.engine.protocol`): the parent sends one
:class:`~deepaas.engine.protocol.Train`; the runner answers any number of
:class:`~deepaas.engine.protocol.Progress` (``deepaas.training.report()``),
then :class:`~deepaas.engine.protocol.TrainDone` or
:class:`~deepaas.engine.protocol.StartFailed` (stage ``import``, ``warm``,
``train`` or ``result``).
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from deepaas.engine.process import EXIT_FAILED, child_main
from deepaas.engine.protocol import (
    FrameDecoder,
    Progress,
    StartFailed,
    Train,
    TrainDone,
    pack,
)
from deepaas.engine.worker import describe_exception
from deepaas.model import loading
from deepaas.model.v2.results import dumps
from deepaas.training import context


class Channel:
    """The socket to the parent; safe to use from any thread (a plugin may
    report progress from its own threads)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, message: Any) -> None:
        frame = pack(message)
        with self.lock:
            self.sock.sendall(frame)

    def receive(self) -> Any:
        decoder = FrameDecoder()
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("the server closed the connection")
            messages = decoder.feed(data)
            if messages:
                return messages[0]


class TextEcho:
    """Sends reports on; a value that is not a number (a phase, a path) is
    also written to the job's log when it changes: it has no curve, and the
    log is where a reader follows the training."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self.send = send
        self.texts: dict[str, Any] = {}

    def __call__(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number or value is None or self.texts.get(key, self) == value:
                continue
            self.texts[key] = value
            print(f"deepaas: report {key}={value!r}", file=sys.stderr, flush=True)
        self.send(values)


def run(config: dict[str, Any], sock: socket.socket) -> int:
    """Train once; the exit status (0 when ``train()`` returned)."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    channel = Channel(sock)
    message = channel.receive()
    if not isinstance(message, Train):
        raise ValueError(f"unexpected message {type(message).__name__}")
    logger = logging.getLogger(f"deepaas.training.{config['model']}")
    ctx = context.TrainingContext(
        uuid=config["uuid"],
        model=config["model"],
        devices=tuple(config["devices"]),
        job_dir=config["job_dir"],
        log_path=config["log_path"],
        logger=logger,
        send=TextEcho(lambda values: channel.send(Progress(values))),
    )
    context.set_current(ctx)
    spec = loading.PluginSpec(
        config["model"], config["target"], config.get("origin", "")
    )
    stage = "import"
    try:
        model = loading.load(spec)
        if config.get("warm", True):
            stage = "warm"
            model.warm()
        stage = "train"
        train = getattr(model.plugin, "train", None)
        if train is None:
            raise NotImplementedError(f"model {spec.name!r} does not implement train")
        output = train(**message.kwargs)
    except BaseException as exc:  # a plugin may raise anything
        error = describe_exception(exc)
        sys.stderr.write(error.traceback)  # the job's log, read over HTTP
        if isinstance(exc, loading.PluginLoadError):
            text = str(exc)
        elif stage == "train":
            text = error.message
        else:
            text = f"{stage}() of model {spec.name!r} failed: {error.message}"
        # and the server's log, in the record that says the training failed
        channel.send(StartFailed(stage, text, error.traceback))
        return EXIT_FAILED
    try:
        # as predictions are: NaN and infinities as null, numpy as lists
        encoded = dumps(output).decode()
    except (TypeError, ValueError, RecursionError) as exc:  # nested too deep
        channel.send(
            StartFailed(
                "result",
                f"train() returned a value that is not JSON-able "
                f"({type(output).__name__}): {exc}",
            )
        )
        return EXIT_FAILED
    channel.send(TrainDone(encoded))
    return 0


def main() -> None:
    child_main(run)


if __name__ == "__main__":
    main()
