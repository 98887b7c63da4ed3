"""A full state directory (a small tmpfs): nothing stalls, nothing is lost.

A training that finishes while the disk is full frees its slot (the queued
job behind it runs), its final state is shown from memory and written once
there is room again; new trainings are refused with 507.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from deepaas.server import SERVER
from tests.support import Client, plugin_spec, start_client, training_ended, wait_for

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]

GATED = "/v2/models/gated/train/"
KEEPER = "deepaas.training.keeper"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write zeros into ``path`` until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):  # to the last byte
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _stored(path: Path) -> dict[str, str]:
    """uuid -> status, as the database holds it (another connection)."""
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT uuid, status FROM trainings").fetchall())


@pytest_asyncio.fixture
async def client(small_disk: Path) -> AsyncIterator[Client]:
    state = small_disk / "state"
    client = await start_client(
        [plugin_spec("gated")], {"state_dir": str(state), "devices": "cpu"}
    )
    yield client
    await client.close()


async def test_a_training_ending_on_a_full_disk_frees_its_slot(
    client: Client, small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.ERROR)
    caplog.set_level(logging.INFO, logger=KEEPER)
    keeper = client.app[SERVER].trainings.keeper
    database = small_disk / "state" / "trainings.sqlite3"
    gate = tmp_path / "gate"  # on another disk: opening it needs no room
    open_gate = tmp_path / "open"
    open_gate.touch()
    first = await (await client.post(GATED, json={"gate": str(gate)})).json()
    second = await (await client.post(GATED, json={"gate": str(open_gate)})).json()
    assert (first["status"], second["status"]) == ("running", "queued")

    async def recorded() -> bool:
        return _stored(database) == {first["uuid"]: "running", second["uuid"]: "queued"}

    assert await wait_for(recorded)
    filler = small_disk / "filler"
    await asyncio.get_running_loop().run_in_executor(None, _fill, filler)

    response = await client.post(GATED, json={"gate": str(open_gate)})
    body = await response.json()
    assert response.status == 507, body
    assert "full" in body["message"]

    gate.touch()  # the first training ends now, on a full disk

    ended = [
        await training_ended(client, GATED + r["uuid"], 20) for r in (first, second)
    ]
    assert [r["status"] for r in ended] == ["done", "done"]  # the slot was freed
    # Shown from memory: the database could not take it.
    assert _stored(database)[first["uuid"]] == "running"

    async def tried_a_few_times() -> bool:
        return keeper.failed_tries >= 4

    assert await wait_for(tried_a_few_times)  # a few heartbeats on a full disk
    listed = await (await client.get(GATED)).json()
    assert [r["status"] for r in listed] == ["done", "done"]

    filler.unlink()  # room again: the kept states are written

    async def written() -> bool:
        return _stored(database) == {first["uuid"]: "done", second["uuid"]: "done"}

    assert await wait_for(written, timeout=10)
    response = await client.post(GATED, json={"gate": str(open_gate)})
    assert response.status == 200, await response.text()
    # The keeper's log says when writing fails and when it works again, once
    # each: not at every try.
    said = [r.getMessage() for r in caplog.records if r.name == KEEPER]
    assert sum("cannot write" in m for m in said) == 1, said
    assert sum("written again" in m for m in said) == 1, said
    assert "will retry" in next(m for m in said if "cannot write" in m)
    errors = [r.getMessage() for r in caplog.records if r.name.startswith("asyncio")]
    assert not errors, errors  # no "Task exception was never retrieved"
    assert not [r for r in caplog.records if r.name == "deepaas.tasks"]


async def test_an_upload_that_fills_the_disk_is_507(client: Client, small_disk: Path):
    """The space check passes (a few MB free), then the upload fills it."""
    free = shutil.disk_usage(small_disk).free
    data = aiohttp.FormData()
    data.add_field("gate", "/nonexistent")
    data.add_field("data", os.urandom(1024) * (free // 1024 + 64), filename="big")
    response = await client.post(GATED, data=data)
    answer = await response.json()
    assert response.status == 507, answer
    assert "full" in answer["message"]
    jobs = small_disk / "state" / "jobs"

    async def removed() -> bool:
        return not os.listdir(jobs)

    assert await wait_for(removed)
    assert shutil.disk_usage(small_disk).free >= free - 512 * 1024
