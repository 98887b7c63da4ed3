"""QA: a real ``deepaas-run`` serving plugins that misbehave on purpose
(what they raise, return, leave running, or do to the process they run
in); each test held a defect, now fixed. Every server runs on a free port
of 127.0.0.1 and is stopped when its test ends (:class:`DeepaasRun`)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deepaas_run import DeepaasRun, closed_at_end

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str], DeepaasRun]]:
    """``serve(source)``: ``deepaas-run`` serving the plugin ``source`` as
    model ``hostile``, ready."""

    def start(source: str, *args: str, env: dict[str, str] | None = None) -> DeepaasRun:
        plugin = tmp_path / "hostile.py"
        plugin.write_text(textwrap.dedent(source))
        return DeepaasRun(
            tmp_path, "--plugin", f"hostile={plugin}", *args, env=env
        ).wait_ready()

    with closed_at_end(start) as started:
        yield started


PREDICT = "/v2/models/hostile/predict/"

# -- the worker ---------------------------------------------------------------

STR_RAISES = """
import os
import threading
import time

from marshmallow import fields


class Unprintable(Exception):
    def __str__(self):
        raise KeyboardInterrupt("from __str__")


def warm():
    # A thread that never ends, not a daemon (a data loader, a watchdog).
    threading.Thread(target=time.sleep, args=(3600,)).start()


def get_predict_args():
    return {"fail": fields.Bool(load_default=False)}


def predict(fail):
    if fail:
        raise Unprintable()
    return {"pid": os.getpid()}
"""


def test_exception_whose_str_raises_a_base_exception_is_a_500(serve) -> None:
    """Printing the exception raised KeyboardInterrupt in the worker, out of
    the error's description: the worker died of it (a 503) or, with a
    thread of the plugin still running, never exited, and that request and
    every later one hung."""
    srv = serve(STR_RAISES)
    status, body = srv.request("POST", PREDICT)
    assert status == 200
    pid = body["predictions"]["pid"]
    status, body = srv.request("POST", PREDICT + "?fail=true")
    assert status == 500, body
    assert body == {"message": "Unprintable: <exception could not be printed>"}
    status, body = srv.request("POST", PREDICT)
    assert (status, body["predictions"]["pid"]) == (200, pid)  # the same worker
