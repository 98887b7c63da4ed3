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
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest_asyncio

from deepaas.model.loading import PluginSpec
from tests.support import DEMO_SPECS, Client, MakeClient, start_client


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
