"""Training routes never stall the event loop: SQLite waits on its own thread.

Another process holding the database's write lock for two seconds makes a
submission wait (the insert waits for the lock on the store's thread), but
the loop goes on serving: the stall probe (tests/loop_probe.py) sees no gap
longer than 50 ms while reads, a submission, a scrape and a log stream run.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.loop_probe import LoopStallProbe
from tests.support import plugin_spec, start_client

pytestmark = pytest.mark.timeout(60)

TRAIN = "/v2/models/trainer/train/"
HOLD_S = 2.0
STALL_LIMIT_S = 0.05


class LockHolder(threading.Thread):
    """Another connection holding the database's write lock for a while."""

    def __init__(self, path: Path, seconds: float) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.seconds = seconds
        self.held = threading.Event()

    def run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("BEGIN EXCLUSIVE")
            self.held.set()
            time.sleep(self.seconds)  # the lock held: the condition under test
            db.execute("COMMIT")
        finally:
            db.close()


async def test_a_locked_store_does_not_stall_the_loop(tmp_path: Path):
    state = tmp_path / "state"
    client = await start_client(
        [plugin_spec("trainer")], {"state_dir": str(state), "devices": "cpu"}
    )
    try:
        done = await (await client.post(TRAIN, json={"mode": "print"})).json()
        holder = LockHolder(state / "trainings.sqlite3", HOLD_S)
        loop = asyncio.get_running_loop()
        async with LoopStallProbe() as probe:
            holder.start()
            await loop.run_in_executor(None, holder.held.wait)
            started = time.monotonic()
            submit = asyncio.ensure_future(client.post(TRAIN, json={"mode": "sleep"}))
            for path in (TRAIN, TRAIN + done["uuid"], TRAIN + done["uuid"] + "/logs"):
                response = await client.get(path)
                assert response.status == 200, await response.text()
            metrics = await client.get("/metrics")
            assert "deepaas_trainings" in await metrics.text()
            response = await submit
            waited = time.monotonic() - started
            assert response.status == 200, await response.text()
        await loop.run_in_executor(None, holder.join)
        assert waited > HOLD_S / 2  # the insert did wait for the lock
        assert probe.wakeups > 10, probe
        assert probe.longest < STALL_LIMIT_S, probe
    finally:
        await client.close()
