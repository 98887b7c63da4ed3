"""``get_metadata()`` runs on the metadata thread, never on the event loop
(:func:`deepaas.api.v2.models.read_document`): a stuck one times out with a
:class:`ViewError` naming it while the loop goes on, and later calls run
once it returns. The server-level scenario is tests/e2e/test_stuck_metadata.py.
"""

from __future__ import annotations

import asyncio
import threading
import types

import pytest

from deepaas.api.v2.models import read_document
from deepaas.api.views import ViewError
from deepaas.model.v2.wrapper import ModelWrapper

pytestmark = pytest.mark.timeout(30)


async def test_a_stuck_get_metadata_times_out_and_the_loop_runs_meanwhile() -> None:
    release, entered = threading.Event(), threading.Event()
    loop_thread = threading.get_ident()
    ran_on: list[int] = []

    def get_metadata() -> dict[str, str]:
        ran_on.append(threading.get_ident())
        entered.set()
        release.wait(20)
        return {"description": "late"}

    model = ModelWrapper("stuck", types.SimpleNamespace(get_metadata=get_metadata))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        with pytest.raises(ViewError, match=r"get_metadata\(\) did not answer"):
            await read_document("", model, timeout=0.2)
        assert entered.is_set() and ticks > 10  # the loop was never held
    finally:
        task.cancel()
        release.set()
    # the thread is free again once the plugin returns: the next call answers
    document = await read_document("", model, timeout=20)
    assert document["description"] == "late"
    assert ran_on and all(ident != loop_thread for ident in ran_on)


async def test_a_stuck_model_holds_up_no_other_models_document() -> None:
    release = threading.Event()

    def stuck() -> dict[str, str]:
        release.wait(20)
        return {"description": "stuck"}

    stuck_model = ModelWrapper("stuck2", types.SimpleNamespace(get_metadata=stuck))
    fast_model = ModelWrapper(
        "fast", types.SimpleNamespace(get_metadata=lambda: {"description": "fast"})
    )
    held = asyncio.create_task(read_document("", stuck_model, timeout=20))
    try:
        # Each model has its thread: the fast one answers at once.
        document = await read_document("", fast_model, timeout=5)
        assert document["description"] == "fast"
        assert not held.done()
    finally:
        release.set()
    assert (await held)["description"] == "stuck"
