"""A plugin's ``get_metadata()`` that is slow or stuck (a file on a hung
network share) holds up the requests for model documents, not the server:
it ran on the event loop, so /healthz, predictions and a SIGTERM all waited
for it (a liveness probe failed, and the pod was restarted for it)."""

from __future__ import annotations

import concurrent.futures
import http.client
import signal

import pytest

from tests.deepaas_run import until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PLUGIN = """
import os
import time

GATE = GATE_PATH
ENTERED = ENTERED_PATH


def get_metadata():
    if os.path.exists(GATE):  # stuck until the test removes the gate
        open(ENTERED, "w").close()
        while os.path.exists(GATE):
            time.sleep(0.01)
    return {"name": "stuck", "description": "answered once the gate was gone"}


def predict(**kwargs):
    return {"ok": True}
"""

#: Seconds a request may take while get_metadata() is stuck: it was held
#: until the gate went (for ever).
QUICK_S = 5.0


def _quick(port: int, method: str, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=QUICK_S)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_stuck_get_metadata_holds_up_only_the_model_documents(server, tmp_path):
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    plugin = tmp_path / "stuck.py"
    plugin.write_text(
        PLUGIN.replace("GATE_PATH", repr(str(gate))).replace(
            "ENTERED_PATH", repr(str(entered))
        )
    )
    srv = server(str(plugin), "--devices", "cpu", "--shutdown-timeout", "1")
    srv.wait_ready()
    gate.touch()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        listing = pool.submit(srv.request, "GET", "/v2/models/")
        one = pool.submit(srv.request, "GET", "/v2/models/stuck")  # OIP's
        until(entered.exists, "get_metadata() is stuck")
        assert _quick(srv.port, "GET", "/healthz") == 200
        assert _quick(srv.port, "POST", "/v2/models/stuck/predict/") == 200
        assert _quick(srv.port, "GET", "/v2/models/stuck/ready") == 200
        assert not listing.done() and not one.done()
        gate.unlink()
        status, doc = listing.result(timeout=30)
        assert status == 200, doc
        assert doc["models"][0]["description"] == "answered once the gate was gone"
        status, doc = one.result(timeout=30)
        assert status == 200, doc
        assert doc["description"] == "answered once the gate was gone"
        assert doc["inputs"] == []  # with the OIP keys

    gate.touch()  # stuck again: a SIGTERM stops the server all the same
    entered.unlink()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        waiting = [
            pool.submit(_quick, srv.port, "GET", path)
            for path in ("/v2/models/stuck/", "/v2/models/")
        ]
        until(entered.exists, "get_metadata() is stuck again")
        assert srv.stop(signal.SIGTERM, timeout=1 + 5 + 4) == 0, srv.output()
        # Counted in flight: answered 503 at the shutdown timeout, not dropped.
        assert [w.result(timeout=30) for w in waiting] == [503, 503]
    gate.unlink()
