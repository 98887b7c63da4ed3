"""--reload: a new version whose import hangs is said in the log, while the
last good version keeps serving (the load runs off the event loop)."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from deepaas import devloop
from deepaas.model.loading import PluginSpec
from tests.support import eventually

pytestmark = pytest.mark.timeout(30)


async def test_a_load_that_hangs_is_logged_and_the_loop_stays_free(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(devloop, "SLOW_LOAD_S", 0.05)
    spec = PluginSpec("echo", "tests.plugins.echo")
    watcher = devloop.PluginWatcher([spec], views=None, runtimes={})  # type: ignore[arg-type]
    release = threading.Event()
    committed = []

    def prepare(spec: PluginSpec):  # as an import stuck on a lock would
        assert release.wait(20)
        return lambda: committed.append(spec.name)

    monkeypatch.setattr(watcher, "_prepare", prepare)
    caplog.set_level(logging.WARNING, logger="deepaas")
    reload = asyncio.ensure_future(watcher._reload(spec, []))
    assert await eventually(
        lambda: "the new version is still loading after 0.05s" in caplog.text
    )
    assert not reload.done()  # still waiting, the loop free meanwhile
    release.set()
    await asyncio.wait_for(reload, 10)
    assert committed == ["echo"]
    assert watcher.reloads == 1
