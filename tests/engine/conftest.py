"""Fixtures for engine tests: an app over test plugins, with real workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepaas.config import Settings
from deepaas.model.loading import PluginSpec
from deepaas.server import SERVER, build_app

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine_client(aiohttp_client):
    """``await engine_client("batcher", workers=2, ...)`` -> (client, runtime)."""

    async def start(name: str, target: str | None = None, **settings):
        spec = PluginSpec(name, target or f"tests.plugins.{name}")
        app = build_app(Settings(**settings), [spec], extra_path=(str(REPO_ROOT),))
        client = await aiohttp_client(app)
        runtime = app[SERVER].runtimes[name]
        assert await runtime.wait_ready(20)
        return client, runtime

    return start
