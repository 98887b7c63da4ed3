"""``deepaas-run``: serve the installed models over HTTP.

Start-up: read the settings, hide the GPUs from this process, load the
plugins for introspection, start the HTTP server and the workers, print a
banner. SIGINT/SIGTERM: stop accepting, let requests in flight finish, stop
every worker (no orphan process), remove temporary files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence

from aiohttp import web

from deepaas import __version__, log
from deepaas.api import HEALTH, RUNTIMES, build_app
from deepaas.config import ConfigError, Settings, load_settings
from deepaas.engine.runtime import ModelRuntime
from deepaas.model import loading

LOG = logging.getLogger("deepaas")


def _install_loop(choice: str) -> None:
    if choice == "asyncio":
        return
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("loop = uvloop, but uvloop is not installed") from None
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _settled(runtimes: Iterable[ModelRuntime]) -> None:
    """Wait until every model has a warm worker or has failed to start one."""
    while not all(rt.pool.ready_workers or rt.pool.start_error for rt in runtimes):
        await asyncio.sleep(0.02)


async def drain(app: web.Application, timeout: float, hurry: asyncio.Event) -> None:
    """Turn readiness off, refuse new predictions, let those in flight end.

    A second SIGINT/SIGTERM (``hurry``) stops waiting.
    """
    app[HEALTH].draining = True
    runtimes = app[RUNTIMES].values()
    for runtime in runtimes:
        runtime.draining = True
    pending = sum(rt.pending for rt in runtimes)
    LOG.info(
        "stopping: %d request(s) in flight get up to %gs to finish", pending, timeout
    )
    deadline = time.monotonic() + timeout
    while (
        sum(rt.pending for rt in runtimes)
        and time.monotonic() < deadline
        and not hurry.is_set()
    ):
        await asyncio.sleep(0.05)
    left = sum(rt.pending for rt in runtimes)
    if left:
        LOG.warning("stopping with %d request(s) unfinished after %gs", left, timeout)


def _banner(
    settings: Settings, specs: Sequence[loading.PluginSpec], seconds: float
) -> str:
    names = [spec.name for spec in specs]
    base = f"http://{settings.listen_ip}:{settings.listen_port}{settings.base_path}"
    lines = [
        f"deepaas {__version__} ready in {seconds:.1f}s, serving "
        f"{', '.join(names)} ({settings.workers} worker(s) per model)",
        f"  API:     {base}/",
        f"  models:  {base}/v2/models/",
        f"  spec:    {base}/swagger.json  {base}/openapi.json",
    ]
    if settings.doc_endpoint:
        lines.insert(2, f"  docs:    {base}/api")
    return "\n".join(lines)


async def serve(
    settings: Settings,
    specs: Sequence[loading.PluginSpec],
    worker_env: dict[str, str],
    started: float,
) -> None:
    capture = log.OutputCapture() if settings.debug_endpoint else None
    app = build_app(settings, specs, worker_env=worker_env, capture=capture)
    runner = web.AppRunner(
        app,
        access_log_class=web.AccessLogger,
        shutdown_timeout=max(1.0, settings.shutdown_timeout),
        handle_signals=False,
        # A client that hangs up cancels its request: a queued prediction is
        # then dropped instead of computed for nobody.
        handler_cancellation=True,
    )
    stop = asyncio.Event()
    hurry = asyncio.Event()  # a second signal: stop without waiting

    def on_signal() -> None:
        (hurry if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await runner.setup()
        site = web.TCPSite(
            runner, settings.listen_ip, settings.listen_port, reuse_address=True
        )
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.listen_ip}:{settings.listen_port}: "
                f"{exc.strerror or exc}"
            ) from None
        ready_or_stop = asyncio.ensure_future(_settled(app[RUNTIMES].values()))
        stop_wait = asyncio.ensure_future(stop.wait())
        await asyncio.wait(
            {ready_or_stop, stop_wait}, return_when=asyncio.FIRST_COMPLETED
        )
        if not stop.is_set():
            seconds = time.monotonic() - started
            print(_banner(settings, specs, seconds), file=sys.stderr, flush=True)
            for runtime in app[RUNTIMES].values():
                if runtime.pool.start_error:
                    LOG.error(
                        "model %s is NOT serving: %s",
                        runtime.model,
                        runtime.pool.start_error,
                    )
        await stop_wait
        ready_or_stop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ready_or_stop
        await drain(app, settings.shutdown_timeout, hurry)
    finally:
        await runner.cleanup()
    LOG.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        print(f"deepaas-run: error: {exc}", file=sys.stderr)
        return 2
    log.setup(settings.log_level, settings.log_file)
    # Workers get the environment as it was; this process never sees a GPU,
    # so a plugin importing torch or TensorFlow here cannot grab GPU memory.
    worker_env = dict(os.environ)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        specs = loading.discover(settings.model_name)
        _install_loop(settings.loop)
        asyncio.run(serve(settings, specs, worker_env, started))
    except (loading.PluginLoadError, ConfigError) as exc:
        print(f"deepaas-run: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
