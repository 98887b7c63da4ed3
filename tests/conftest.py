"""Shared fixtures: applications with real worker processes, no mocks.

``make_client(specs, **settings)`` builds the app with
:func:`deepaas.api.build_app`, starts it on a test server and returns an
aiohttp ``TestClient``. Clients are cached per module (one app per distinct
configuration), because every app start spawns one worker process per
model; they are closed, and their workers stopped, when the module ends.

Tests that use it run on the module's event loop::

    pytestmark = pytest.mark.asyncio(loop_scope="module")
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from deepaas.api import METRICS
from deepaas.model.loading import PluginSpec
from tests.support import (
    DEMO_SPECS,
    Client,
    MakeClient,
    install_front_door,
    start_client,
)

_STATE_HOME = ""
_TMP_ROOT = ""
_SAVED: dict[str, str | None] = {}  # environment variables as they were
_SAVED_TEMPDIR: str | None = None
_SESSION_PID = os.getpid()


def pytest_configure(config: pytest.Config) -> None:
    """A private temp folder and state directory for the whole session.

    ``TMPDIR`` (and ``tempfile.tempdir``) point at a fresh directory, so
    the scratch directories of the servers the tests start, in process or
    as subprocesses (which inherit the environment), never sit beside real
    servers' in the shared ``/tmp``: a test server's sweep cannot remove
    theirs, nor theirs a test's. Apps built without ``state_dir`` keep
    their training records in there too, never in the user's
    ``~/.local/state`` (platformdirs reads ``XDG_STATE_HOME``), and the
    example plugins their caches (``demo_onnx``'s model file), never in
    ``~/.cache`` (``XDG_CACHE_HOME``).
    """
    global _STATE_HOME, _TMP_ROOT, _SAVED_TEMPDIR
    _TMP_ROOT = tempfile.mkdtemp(prefix="deepaas-tests-")
    _STATE_HOME = os.path.join(_TMP_ROOT, "state")
    os.mkdir(_STATE_HOME)
    cache = os.path.join(_TMP_ROOT, "cache")
    os.mkdir(cache)
    tmp = os.path.join(_TMP_ROOT, "tmp")
    os.mkdir(tmp)
    for name, value in (
        ("TMPDIR", tmp),
        ("XDG_STATE_HOME", _STATE_HOME),
        ("XDG_CACHE_HOME", cache),
    ):
        _SAVED[name] = os.environ.get(name)
        os.environ[name] = value
    _SAVED_TEMPDIR = tempfile.tempdir
    tempfile.tempdir = tmp
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_on_sigterm)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (CI's timeout, ``kill``) ends the session as Ctrl-C does:
    the fixtures stop their servers and workers, and this folder goes. A
    child forked from this process (not exec'd) dies as it would have."""
    if os.getpid() != _SESSION_PID:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise KeyboardInterrupt("SIGTERM")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _TMP_ROOT:
        return
    tempfile.tempdir = _SAVED_TEMPDIR
    for name, value in _SAVED.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(_TMP_ROOT, ignore_errors=True)


@pytest.fixture
def aiohttp_client(aiohttp_client: Any) -> Any:
    """pytest-aiohttp's ``aiohttp_client``; a deepaas app gets the front door
    that ``deepaas-run`` puts before it (JSON errors, request metrics)."""

    async def make(app: Any, *args: Any, **kwargs: Any) -> Any:
        client = await aiohttp_client(app, *args, **kwargs)
        if isinstance(app, web.Application) and METRICS in app:
            install_front_door(client)
        return client

    return make


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def make_client() -> AsyncIterator[MakeClient]:
    """Factory of started test clients, one per configuration and module."""
    clients: dict[Any, Client] = {}

    async def make(specs: Sequence[PluginSpec] = DEMO_SPECS, **settings: Any) -> Client:
        key = (tuple(specs), tuple(sorted(settings.items())))
        if key not in clients:
            clients[key] = await start_client(specs, settings)
        return clients[key]

    yield make
    await asyncio.gather(*(client.close() for client in clients.values()))


@pytest_asyncio.fixture(loop_scope="module")
async def demo_client(make_client: MakeClient) -> Client:
    """The two example plugins with the default settings."""
    return await make_client()


#: Modules whose tests run on both event loops: they drive aiohttp's
#: protocol at the socket level, where uvloop's transports (deepaas-run's
#: loop when installed) pause and resume reading differently from asyncio's
#: (a flow-control bug in the connection guard showed only on uvloop); and
#: the worker channel's write flow control.
BOTH_LOOPS = frozenset(
    {
        "tests.api.test_conn_pipelining",
        "tests.api.test_conn_errors",
        "tests.engine.test_channel",
    }
)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Any]:
    factories: dict[str, Any] = {"asyncio": asyncio.new_event_loop}
    module = getattr(item, "module", None)
    if module is not None and module.__name__ in BOTH_LOOPS:
        try:
            import uvloop
        except ImportError:
            return factories
        factories["uvloop"] = uvloop.new_event_loop
    return factories
