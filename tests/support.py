"""Helpers shared by the API tests (imported as ``tests.support``)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from deepaas.api import METRICS, front
from deepaas.config import Settings
from deepaas.log import OutputCapture
from deepaas.model.loading import PluginSpec
from deepaas.server import SERVER, build_app
from deepaas.training.store import FINISHED

REPO_ROOT = Path(__file__).resolve().parent.parent

DEMO = PluginSpec("demo", "deepaas_example.demo")
DEMO_CLASS = PluginSpec("demo_class", "deepaas_example.classy:DemoModel")
DEMO_SPECS: tuple[PluginSpec, ...] = (DEMO, DEMO_CLASS)

Client = TestClient[web.Request, web.Application]
CAPTURE = web.AppKey("test_capture", OutputCapture)


def plugin_spec(name: str, target: str | None = None) -> PluginSpec:
    """A plugin from ``tests/plugins``: ``plugin_spec("echo")``, or with a
    target relative to that package (``plugin_spec("x", "bad:Model")``)."""
    return PluginSpec(name, f"tests.plugins.{target or name}")


class MakeClient(Protocol):
    def __call__(
        self, specs: Sequence[PluginSpec] = ..., **settings: Any
    ) -> Awaitable[Client]: ...


async def start_client(specs: Sequence[PluginSpec], settings: dict[str, Any]) -> Client:
    """Build the app (real workers), serve it on a test server, return a client.

    With ``debug_endpoint=True`` the app gets an :class:`OutputCapture`, as
    ``deepaas-run`` gives it; the capture is ``client.app[CAPTURE]``.
    """
    capture = OutputCapture() if settings.get("debug_endpoint") else None
    app = build_app(
        Settings(**settings),
        list(specs),
        capture=capture,
        extra_path=(str(REPO_ROOT),),
    )
    if capture is not None:
        app[CAPTURE] = capture
    return await serve_client(app)


async def serve_client(app: web.Application) -> Client:
    """A started test client of ``app``, served as ``deepaas-run`` serves it
    (through the front door: JSON errors, request metrics)."""
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    install_front_door(client)
    return client


def install_front_door(client: Client) -> None:
    """Put :mod:`deepaas.api.front` in front of a started client's app."""
    runner = client.server.runner
    assert isinstance(runner, web.AppRunner)
    front.install(runner, client.app[METRICS])


def server_tmp_dir(client: Client) -> str:
    """The directory where the app writes uploads and large results."""
    return client.app[SERVER].scratch.path


def listdir(path: str) -> list[str]:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


async def eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll a plain predicate until it holds (True) or ``seconds`` pass
    (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0
) -> bool:
    """Poll an async predicate until it holds or ``timeout`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await predicate():
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)


async def training_ended(
    client: Client,
    url: str,
    timeout: float = 30.0,
    decode: Callable[[bytes], Any] = json.loads,
) -> dict[str, Any]:
    """GET a training's record at ``url`` (``.../train/<uuid>``) until it
    ended (done, error or cancelled) and return it; fails with the last
    record seen if ``timeout`` seconds pass first. ``decode`` reads each
    body (a test of strict JSON passes its own)."""
    seen: list[dict[str, Any]] = []

    async def ended() -> bool:
        response = await client.get(url)
        body = await response.read()
        assert response.status == 200, body[:2000]
        seen[:] = [decode(body)]  # the last record seen
        return seen[-1]["status"] in FINISHED

    assert await wait_for(ended, timeout), f"the training did not end: {seen[-1:]}"
    return seen[-1]


async def predict(
    client: Client, model: str = "demo", *, expect: int | None = 200, **kwargs: Any
) -> Any:
    """POST to the model's predict route; check the status; return the JSON."""
    response = await client.post(f"/v2/models/{model}/predict/", **kwargs)
    body = await response.read()
    if expect is not None:
        assert response.status == expect, body[:2000]
    return await response.json() if body else None


async def tmp_dir_empties(client: Client, timeout: float = 5.0) -> list[str]:
    """What is left in the server's tmp dir once it is empty or ``timeout``
    passes (a result file is removed just after its last byte is sent)."""
    path = server_tmp_dir(client)

    async def empty() -> bool:
        return not listdir(path)

    await wait_for(empty, timeout)
    return listdir(path)
