"""Bare aiohttp baseline for the predict-overhead benchmark.

Serves ``POST /v2/models/bench_trivial/predict/`` and answers, inline, the same
JSON body DEEPaaS returns for the ``bench_trivial`` plugin::

    {"status": "OK", "predictions": {"echo": x + 1}}

where ``x`` is read from the query string (integer, default 0); and
``POST /v2/models/bench_tensor/infer``, which reads the whole body and answers
``{"read": <its size>}`` (the floor under a route that takes a body).

Usage::

    python benchmarks/bare_aiohttp.py --port 8081 [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

PREDICT_PATH = "/v2/models/bench_trivial/predict/"
#: Reads the whole body and answers its size: the floor under any route
#: that takes a body (``benchmarks/oip_infer.py``'s case (e)).
READ_PATH = "/v2/models/bench_tensor/infer"


async def predict(request: web.Request) -> web.Response:
    """Answer ``{"status": "OK", "predictions": {"echo": x + 1}}``, with
    ``x`` from the query string, or from a JSON body when one is sent."""
    try:
        if request.body_exists and request.content_type == "application/json":
            x = int((await request.json()).get("x", 0))
        else:
            x = int(request.query.get("x", 0))
    except ValueError:
        return web.json_response(
            {"status": "error", "message": "x must be an integer"}, status=400
        )
    return web.json_response({"status": "OK", "predictions": {"echo": x + 1}})


async def read_body(request: web.Request) -> web.Response:
    """Answer ``{"read": <the body's size in bytes>}`` once it is all read."""
    body = await request.read()
    return web.json_response({"read": len(body)})


def make_app() -> web.Application:
    """Build the baseline application (bodies up to 64 MiB)."""
    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post(PREDICT_PATH, predict)
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the baseline server until SIGINT/SIGTERM."""
    args = parse_args(argv)
    loop = new_loop(args.loop)
    print(
        f"bare_aiohttp: http://{args.host}:{args.port}{PREDICT_PATH} "
        f"(loop={args.loop})",
        flush=True,
    )
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        shutdown_timeout=1.0,
        loop=loop,
        print=None,
    )


if __name__ == "__main__":
    main()
