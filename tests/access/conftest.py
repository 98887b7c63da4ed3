"""Fixtures of the access tests: a real headless Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.access.browser import Browser, chromium_or_skip


@pytest_asyncio.fixture(loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    chromium_or_skip()
    profile: Path = tmp_path_factory.mktemp("chromium")
    async with Browser.start(str(profile)) as started:
        yield started
