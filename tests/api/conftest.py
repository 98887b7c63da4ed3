"""Every API test fails if aiohttp logged an unhandled server-side error."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_unhandled_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.ERROR, logger="aiohttp.server")
    yield
    errors = [
        record.getMessage()
        for when in ("setup", "call")
        for record in caplog.get_records(when)
        if record.name == "aiohttp.server" and record.levelno >= logging.ERROR
    ]
    assert not errors, f"aiohttp logged unhandled errors: {errors}"
