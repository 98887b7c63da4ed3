"""``deepaas-run``: serve the installed models over HTTP.

Start-up: read the settings, hide the GPUs from this process, load the
plugins for introspection, start the HTTP server and the workers, print a
banner. SIGINT/SIGTERM: stop accepting, let requests in flight finish, stop
every worker (no orphan process), remove temporary files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence

from deepaas import __version__, log
from deepaas.config import ConfigError, Settings, load_settings
from deepaas.model import loading
from deepaas.server import Server

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
    server = Server(settings, specs, worker_env=worker_env, capture=capture)

    def ready() -> None:
        seconds = time.monotonic() - started
        print(_banner(settings, specs, seconds), file=sys.stderr, flush=True)
        for name, error in server.start_errors().items():
            LOG.error("model %s is NOT serving: %s", name, error)

    await server.serve(ready)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        print(f"deepaas-run: error: {exc}", file=sys.stderr)
        return 2
    try:
        log.setup(settings.log_level, settings.log_file)
    except OSError as exc:
        print(
            f"deepaas-run: error: cannot open log_file {settings.log_file!r}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
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
