"""The training process: load the plugin, run ``train(**kwargs)``, report back.

Started by :mod:`deepaas.training.jobs` as ``python -m
deepaas.training.runner CONFIG`` (a fresh interpreter in its own session, so
a cancel kills its whole process group). Its stdout and stderr are the job's
log file; its device environment (``CUDA_VISIBLE_DEVICES``,
``DEEPAAS_DEVICES``) is set by the parent. Messages use the engine's framing
(:mod:`deepaas.engine.protocol`) over one socket.

Parent to runner::

    (CALL, "train", kwargs)            once, right after start

Runner to parent::

    (PROGRESS, {key: value})           deepaas.training.report(...)
    (RESULT, output_json)              train() returned (output as JSON text)
    (FAILED, stage, message)           import, warm or train failed
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from deepaas.engine.protocol import CALL, FAILED, RESULT, FrameDecoder, pack
from deepaas.engine.worker import _die_with_parent, describe_exception
from deepaas.model import loading
from deepaas.training import context

PROGRESS = "progress"
EXIT_FAILED = 1


class Channel:
    """The socket to the parent; safe to use from any thread."""

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


def run(config: dict[str, Any], channel: Channel) -> int:
    message = channel.receive()
    if message[0] != CALL:
        raise ValueError(f"unexpected message {message[0]!r}")
    kwargs = message[2]
    logger = logging.getLogger(f"deepaas.training.{config['model']}")
    ctx = context.TrainingContext(
        uuid=config["uuid"],
        model=config["model"],
        devices=tuple(config["devices"]),
        job_dir=config["job_dir"],
        log_path=config["log_path"],
        logger=logger,
        send=lambda metrics: channel.send((PROGRESS, metrics)),
    )
    context.set_current(ctx)
    spec = loading.PluginSpec(config["model"], config["target"])
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
        output = train(**kwargs)
    except BaseException as exc:  # a plugin may raise anything
        error = describe_exception(exc)
        sys.stderr.write(error.traceback)
        if isinstance(exc, loading.PluginLoadError):
            text = str(exc)
        elif stage == "train":
            text = error.message
        else:
            text = f"{stage}() of model {spec.name!r} failed: {error.message}"
        channel.send((FAILED, stage, text))
        return EXIT_FAILED
    try:
        encoded = json.dumps(output)
    except (TypeError, ValueError) as exc:
        channel.send(
            (
                FAILED,
                "result",
                f"train() returned a value that is not JSON-able "
                f"({type(output).__name__}): {exc}",
            )
        )
        return EXIT_FAILED
    channel.send((RESULT, encoded))
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    config = json.loads(argv[0])
    _die_with_parent(config["parent_pid"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sock = socket.socket(fileno=config["fd"])
    os.set_inheritable(sock.fileno(), False)
    code = EXIT_FAILED
    try:
        code = run(config, Channel(sock))
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the server went away: nothing left to report
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    # Skip interpreter shutdown: stray plugin threads must not keep us alive.
    os._exit(code)


if __name__ == "__main__":
    main()
