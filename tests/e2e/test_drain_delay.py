"""``--drain-delay``: the lame duck after SIGTERM, with a real ``deepaas-run``.

From the signal on, readiness answers 503 (a balancer's health check or
Kubernetes' endpoint controller takes the replica out), while new requests
are still served for ``--drain-delay`` seconds; only then does the bounded
drain of ``--shutdown-timeout`` begin, and the process exits within
``--drain-delay`` + ``--shutdown-timeout`` + 5 s of the signal. A second
signal cuts the delay short.

Order comes from polled state with deadlines, never from sleeps; the only
timings asserted are lower bounds the server cannot miss by being slow
(nothing refused before the delay) and the documented exit bound.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deepaas_run import HANG_S, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MODEL = "faults"
PREDICT = f"/v2/models/{MODEL}/predict/"
STOP_BUDGET_S = 5.0  # exit within --drain-delay + --shutdown-timeout + this
SHUTTING_DOWN = {"message": "the server is shutting down"}


def _start(server: Any, *args: str) -> Any:
    return server(
        "--plugin", f"{MODEL}=tests.plugins.faults", "--devices", "cpu", *args
    ).wait_ready()


def _readiness(srv: Any) -> tuple[int, Any]:
    return srv.request("GET", "/readyz")


def test_lame_duck_serves_for_the_delay_then_drains_within_the_bound(
    server, tmp_path: Path
):
    delay, timeout = 3.0, 2.0
    srv = _start(
        server,
        "--drain-delay", f"{delay:g}",
        "--shutdown-timeout", f"{timeout:g}",
        "--workers", "2",  # one holds the long request, one serves the rest
    )  # fmt: skip
    assert _readiness(srv)[0] == 200

    def both_ready() -> bool:
        workers = srv.request("GET", "/v2/system/")[1]["workers"]
        return [w["state"] for w in workers] == ["ready", "ready"]

    until(both_ready, "both workers are ready")

    # A request in flight across the whole stop: it never finishes on its own
    # (it waits for a file that never appears), so the drain must answer it.
    started = tmp_path / "started"
    held: dict[str, Any] = {}

    def hold() -> None:
        try:
            held["answer"] = srv.request(
                "POST", f"{PREDICT}?mode=slow&seconds=60&started={started}"
            )
        except BaseException as exc:  # a dropped connection is what we test
            held["answer"] = exc

    holder = threading.Thread(target=hold)
    holder.start()
    until(started.exists, "the held request runs in the worker")

    sent = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    until(lambda: _readiness(srv)[0] == 503, "readiness turns 503")
    assert _readiness(srv)[1]["status"] == "draining"
    assert srv.request("GET", "/v2/health/ready")[0] == 503
    assert srv.request("GET", "/healthz")[0] == 200  # alive: not restarted

    # New requests: served (200) until the delay ends, then refused (503),
    # never the other way round, and never refused before the delay.
    answers: list[tuple[float, int, Any]] = []

    def refused() -> bool:
        status, body = srv.request("POST", f"{PREDICT}?mode=ok")
        answers.append((time.monotonic() - sent, status, body))
        return status == 503

    until(refused, "new requests are refused after the delay", delay + HANG_S)
    statuses = [status for _, status, _ in answers]
    assert set(statuses[:-1]) == {200}, answers  # served in the delay
    refused_at, _, body = answers[-1]
    assert body == SHUTTING_DOWN
    assert refused_at >= delay, answers
    assert len(statuses) > 1, "no request was sent during the delay"
    assert "new requests are still served for 3s (--drain-delay)" in srv.output()

    # The held request is answered 503 at the shutdown timeout; the process
    # exits within the documented bound.
    srv.proc.wait(timeout=delay + timeout + STOP_BUDGET_S + HANG_S)
    exited_after = time.monotonic() - sent
    assert srv.proc.returncode == 0, srv.output()
    assert exited_after <= delay + timeout + STOP_BUDGET_S, srv.output()
    holder.join(timeout=HANG_S)
    assert held["answer"] == (503, SHUTTING_DOWN)


def test_a_second_signal_cuts_the_delay_short(server):
    delay = 600.0  # far longer than the test may take
    srv = _start(server, "--drain-delay", f"{delay:g}", "--shutdown-timeout", "2")
    srv.proc.send_signal(signal.SIGTERM)
    until(lambda: _readiness(srv)[0] == 503, "readiness turns 503")
    status, body = srv.request("POST", f"{PREDICT}?mode=ok")
    assert status == 200, body  # the lame duck still serves
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.stop(timeout=HANG_S) == 0, srv.output()


def test_default_is_no_delay(server):
    srv = _start(server, "--shutdown-timeout", "30")
    sent = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    # Idle: nothing to drain, so the process exits at once (no delay).
    srv.proc.wait(timeout=HANG_S)
    assert srv.proc.returncode == 0, srv.output()
    assert time.monotonic() - sent < STOP_BUDGET_S, srv.output()
    assert "--drain-delay" not in srv.output()
