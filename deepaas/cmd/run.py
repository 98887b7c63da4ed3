"""``deepaas-run``: serve the installed models over HTTP.

Start-up: read the settings, hide the GPUs from this process, check that
the port is free, load the plugins for introspection (every broken one is
reported), listen, start the workers, print a banner naming the models that
serve and those that failed. SIGINT/SIGTERM: stop accepting, let requests
in flight finish, stop every worker (no orphan process), remove temporary
files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping, Sequence

from deepaas import __version__, log, places, version_line
from deepaas.api.site import listen_error
from deepaas.api.tokens import TokenTable, load_tokens
from deepaas.config import ConfigError, Settings, load_settings
from deepaas.model import loading
from deepaas.model.given import PluginUsageError, given_specs
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
    settings: Settings,
    specs: Sequence[loading.PluginSpec],
    seconds: float,
    failed: Mapping[str, str],
    port: int | None = None,
) -> str:
    """What serves where: the models that started, those that did not
    (their errors are logged just before), and which deepaas this is.
    ``port``: the one listened on (``--listen-port 0`` lets the system choose)."""
    serving = [spec.name for spec in specs if spec.name not in failed]
    port = settings.listen_port if port is None else port
    base = f"http://{settings.listen_ip}:{port}{settings.base_path}"
    lines = [
        f"deepaas {__version__} ready in {seconds:.1f}s, serving "
        f"{', '.join(serving) or 'no model'} ({settings.workers} worker(s) per model)",
    ]
    if failed:
        lines.append(
            f"  FAILED:  {', '.join(failed)} (NOT serving, see the error(s) above; "
            "requests to it answer 503)"
        )
    lines += [
        f"  deepaas: {version_line()}",
        f"  API:     {base}/",
    ]
    if settings.doc_endpoint:
        lines.append(f"  docs:    {base}/api")
    lines += [
        f"  models:  {base}/v2/models/",
        f"  spec:    {base}/swagger.json  {base}/openapi.json",
    ]
    return "\n".join(lines)


def _check_port(settings: Settings) -> None:
    """Fail at once when the port cannot be listened on (another server holds
    it, say), before plugins are imported, which may take long.

    The server binds it again, before it starts any worker; this early
    check only saves the wait.
    """
    host, port = settings.listen_ip, settings.listen_port
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As the server's own socket: a port left in TIME_WAIT is usable.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise ConfigError(listen_error(host, port, exc)) from None


async def serve(
    settings: Settings,
    specs: Sequence[loading.PluginSpec],
    worker_env: dict[str, str],
    started: float,
    extra_path: tuple[str, ...] = (),
    tokens: TokenTable | None = None,
) -> None:
    capture = log.OutputCapture() if settings.debug_endpoint else None
    server = Server(
        settings,
        specs,
        worker_env=worker_env,
        capture=capture,
        extra_path=extra_path,
        tokens=tokens,
    )

    def ready() -> None:
        seconds = time.monotonic() - started
        failed = server.start_errors()
        for name, error in failed.items():
            LOG.error("model %s is NOT serving: %s", name, error)
        banner = _banner(settings, server.specs, seconds, failed, server.port)
        print(banner, file=sys.stderr, flush=True)

    await server.serve(ready)


def main(argv: Sequence[str] | None = None) -> int:
    """``deepaas-run``: its exit status, once the server stopped.

    A thread that plugin code started here (at import, in get_metadata())
    and that is no daemon would keep the process alive after the server
    stopped, interpreter shutdown waiting for it: past the bound of a stop,
    until something kills it. Such threads are named in the log, and the
    process exits without waiting for them.
    """
    before = set(threading.enumerate())
    code = _main(argv)
    left = [
        t
        for t in threading.enumerate()
        if t not in before and not t.daemon and t.is_alive()
    ]
    if left:
        LOG.warning(
            "exiting without waiting for %d thread(s) that plugin code "
            "started and that are still running: %s",
            len(left),
            ", ".join(t.name for t in left),
        )
        logging.shutdown()
        with contextlib.suppress(BaseException):  # stdio the plugin may have closed
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: Sequence[str] | None) -> int:
    started = time.monotonic()
    try:
        settings = load_settings(argv)
        # A bad token file is a usage error, said before anything is loaded.
        tokens = load_tokens(settings.auth_token_file, settings.auth_tokens)
    except ConfigError as exc:
        print(f"deepaas-run: error: {exc}", file=sys.stderr)
        return 2
    try:
        log.setup(settings.log_level, settings.log_file, access_log=settings.access_log)
    except OSError as exc:
        print(
            f"deepaas-run: error: cannot open log_file {settings.log_file!r}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    try:
        # A writable state dir and temp folder: the home and the installation
        # may be read-only (HPC, Apptainer, udocker: docs/hpc.md).
        chosen = places.choose(settings.state_dir, os.environ)
    except ConfigError as exc:
        print(f"deepaas-run: error: {exc}", file=sys.stderr)
        return 2
    settings = settings.replace(state_dir=chosen.state_dir)
    if chosen.scratch_parent != places.temp_folder():
        # No writable TMPDIR or /tmp: this process and its workers use this.
        os.environ["TMPDIR"] = tempfile.tempdir = chosen.scratch_parent
    # Workers get the environment as it was; this process never sees a GPU,
    # so a plugin importing torch or TensorFlow here cannot grab GPU memory.
    # The state directory, however it was set (flag, environment, config
    # file), for plugins (imported here, in workers and in trainings) to keep
    # what they learn there, as deepaas-cli new's does.
    os.environ["DEEPAAS_STATE_DIR"] = settings.resolved_state_dir
    worker_env = dict(os.environ)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        given = given_specs(settings.plugin)
        _check_port(settings)
        specs, extra_path = _all_specs(settings, given)
        _install_loop(settings.loop)
        asyncio.run(serve(settings, specs, worker_env, started, extra_path, tokens))
    except PluginUsageError as exc:
        print(f"deepaas-run: error: {exc}", file=sys.stderr)
        return 2
    except loading.PluginLoadError as exc:
        _report_plugin_errors(exc, settings.debug)
        return 2 if exc.usage else 1
    except ConfigError as exc:
        print(f"deepaas-run: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _all_specs(
    settings: Settings, given: list[loading.PluginSpec]
) -> tuple[list[loading.PluginSpec], tuple[str, ...]]:
    """The plugins to serve, and the folder workers import given modules from.

    Installed models are served when no plugin (nor ``--model-repository``)
    is given, or when ``--model-name`` names them beside the given ones (a
    name there that is a given plugin's selects nothing more). A
    module given with ``--plugin`` imports from the current folder (as
    ``python -m`` would).
    """
    if not given and not settings.model_repository:
        return loading.discover(settings.model_name), ()
    # --model-name may name a given plugin too: it is served either way.
    given_names = {s.name for s in given}
    wanted = [name for name in settings.model_name if name not in given_names]
    installed = loading.discover(wanted) if wanted else []
    clash = {s.name for s in installed} & given_names
    if clash:
        raise PluginUsageError(
            f"model name(s) {', '.join(sorted(clash))} both installed and given; "
            "choose another name for the given one as NAME=TARGET"
        )
    if not given:  # a repository's models (the server opens it), and these
        return installed, ()
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return [*installed, *given], (cwd,)


def _report_plugin_errors(exc: loading.PluginLoadError, debug: bool) -> None:
    """One line per broken plugin; with ``--debug``, their tracebacks first."""
    if debug:
        for cause in exc.causes:
            traceback.print_exception(cause, file=sys.stderr)
    for line in str(exc).splitlines():
        print(f"deepaas-run: error: {line}", file=sys.stderr)
    if exc.causes and not debug:
        print("deepaas-run: --debug shows the full traceback", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
