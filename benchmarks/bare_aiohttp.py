"""Bare aiohttp baseline for the predict-overhead benchmark.

Serves ``POST /v2/models/bench_trivial/predict/`` and answers, inline, the same
JSON body DEEPaaS returns for the ``bench_trivial`` plugin::

    {"status": "OK", "predictions": {"echo": x + 1}}

where ``x`` is read from the query string (integer, default 0); and
``POST /v2/models/bench_tensor/infer``, which reads the whole body and answers
``{"read": <its size>}`` (the floor under a route that takes a body).

With ``--worker``, the predict handler does not compute ``x + 1`` itself: it
sends ``x`` to one child process and answers what the child sends back, the
least any server pays that runs model code outside its event loop's process
(as deepaas does, for fault isolation and GPU placement): a socket pair
between the two, 16-byte records (a request id and ``x``, each a big-endian
64-bit integer), no validation, batching, metrics or fault handling. The
child reads as many records as have arrived and answers them in one write.

Usage::

    python benchmarks/bare_aiohttp.py --port 8081 [--loop asyncio|uvloop] [--worker]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import sys
from typing import cast

from aiohttp import web

PREDICT_PATH = "/v2/models/bench_trivial/predict/"
#: Reads the whole body and answers its size: the floor under any route
#: that takes a body (``benchmarks/oip_infer.py``'s case (e)).
READ_PATH = "/v2/models/bench_tensor/infer"


async def read_x(request: web.Request) -> int:
    """``x`` from a JSON body when one is sent, else from the query string
    (default 0); ``ValueError`` when it is not an integer."""
    if request.body_exists and request.content_type == "application/json":
        return int((await request.json()).get("x", 0))
    return int(request.query.get("x", 0))


def bad_x() -> web.Response:
    """The 400 answer to an ``x`` that is not an integer."""
    return web.json_response(
        {"status": "error", "message": "x must be an integer"}, status=400
    )


async def predict(request: web.Request) -> web.Response:
    """Answer ``{"status": "OK", "predictions": {"echo": x + 1}}``, with
    ``x`` from the query string, or from a JSON body when one is sent."""
    try:
        x = await read_x(request)
    except ValueError:
        return bad_x()
    return web.json_response({"status": "OK", "predictions": {"echo": x + 1}})


async def read_body(request: web.Request) -> web.Response:
    """Answer ``{"read": <the body's size in bytes>}`` once it is all read."""
    body = await request.read()
    return web.json_response({"read": len(body)})


#: One record between the handler and the worker: a request id, then ``x``
#: (the answer carries ``x + 1``).
RECORD = struct.Struct("!qq")


def serve_records(sock: socket.socket) -> None:
    """The worker's loop: answer each record ``(id, x)`` with ``(id, x + 1)``,
    all those read at once in one write, until the handler's end closes."""
    pending = b""
    while data := sock.recv(65536):
        pending += data
        whole = len(pending) - len(pending) % RECORD.size
        answers = [
            RECORD.pack(rid, x + 1) for rid, x in RECORD.iter_unpack(pending[:whole])
        ]
        pending = pending[whole:]
        sock.sendall(b"".join(answers))


class WorkerLink(asyncio.Protocol):
    """The handler's end of the socket pair: sends ``x`` and resolves the
    request's future when its answer comes back."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: dict[int, asyncio.Future[int]] = {}
        self.next_id = 0
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.pending += data
        whole = len(self.pending) - len(self.pending) % RECORD.size
        for rid, answer in RECORD.iter_unpack(self.pending[:whole]):
            future = self.waiting.pop(rid)
            if not future.done():
                future.set_result(answer)
        self.pending = self.pending[whole:]

    async def call(self, x: int) -> int:
        """Send ``x`` to the worker; return its answer."""
        assert self.transport is not None
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        self.transport.write(RECORD.pack(self.next_id, x))
        return await future


def start_worker() -> socket.socket:
    """Fork the worker (before any event loop exists); return the socket
    the handler talks to it through. The worker exits when it closes."""
    ours, theirs = socket.socketpair()
    if os.fork() == 0:
        ours.close()
        try:
            serve_records(theirs)
        finally:
            os._exit(0)
    theirs.close()
    return ours


def forwarding(sock: socket.socket):  # type: ignore[no-untyped-def]
    """A predict handler that has the worker behind ``sock`` compute x + 1."""
    link = WorkerLink()

    async def connect(app: web.Application) -> None:
        await asyncio.get_running_loop().connect_accepted_socket(lambda: link, sock)

    async def predict_in_worker(request: web.Request) -> web.Response:
        try:
            x = await read_x(request)
        except ValueError:
            return bad_x()
        echo = await link.call(x)
        return web.json_response({"status": "OK", "predictions": {"echo": echo}})

    return connect, predict_in_worker


def make_app(worker: socket.socket | None = None) -> web.Application:
    """Build the baseline application (bodies up to 64 MiB); with
    ``worker``, predict has that worker compute its answer."""
    app = web.Application(client_max_size=64 * 2**20)
    if worker is None:
        app.router.add_post(PREDICT_PATH, predict)
    else:
        connect, handler = forwarding(worker)
        app.on_startup.append(connect)
        app.router.add_post(PREDICT_PATH, handler)
    app.router.add_post(READ_PATH, read_body)
    return app


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """Create an event loop of the implementation called ``name``."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            sys.exit("bare_aiohttp: --loop uvloop given but uvloop is not installed")
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument("--port", type=int, default=8081, help="default: %(default)s")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop implementation (default: %(default)s)",
    )
    parser.add_argument(
        "--uvloop",
        dest="loop",
        action="store_const",
        const="uvloop",
        help="same as --loop uvloop",
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="predict has a child process compute x + 1 (the floor of "
        "process-isolated serving)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the baseline server until SIGINT/SIGTERM."""
    args = parse_args(argv)
    worker = start_worker() if args.worker else None
    loop = new_loop(args.loop)
    print(
        f"bare_aiohttp: http://{args.host}:{args.port}{PREDICT_PATH} "
        f"(loop={args.loop}{', worker' if worker else ''})",
        flush=True,
    )
    web.run_app(
        make_app(worker),
        host=args.host,
        port=args.port,
        access_log=None,
        shutdown_timeout=1.0,
        loop=loop,
        print=None,
    )


if __name__ == "__main__":
    main()
