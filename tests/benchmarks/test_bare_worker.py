"""``benchmarks/bare_aiohttp.py --worker``: the floor of process-isolated
serving that ``predict_overhead.py --candidate bare-worker`` measures. It
must answer what deepaas answers, from its worker, and leave no process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.deepaas_run import alive, children, free_port, until

BARE = Path(__file__).resolve().parents[2] / "benchmarks" / "bare_aiohttp.py"
PATH = "/v2/models/bench_trivial/predict/"


def post(url: str, body: bytes = b"", json_body: bool = False) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} if json_body else {}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def answers(url: str) -> bool:
    try:
        post(url + "?x=0")
    except OSError:
        return False
    return True


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_worker_computes_each_answer_and_leaves_with_the_server(loop: str) -> None:
    pytest.importorskip(loop)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(BARE), "--port", str(port), "--loop", loop, "--worker"],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}{PATH}"
    try:
        until(lambda: answers(url), "the bare server to answer")
        (worker,) = children(server.pid)
        ok = {"status": "OK", "predictions": {"echo": 42}}
        assert post(url + "?x=41") == (200, ok)
        assert post(url, b'{"x": -8}', json_body=True) == (
            200,
            {"status": "OK", "predictions": {"echo": -7}},
        )
        status, body = post(url + "?x=abc")
        assert status == 400 and "integer" in body["message"]
        # Answers come back to the request that asked, not in arrival order.
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda x: post(f"{url}?x={x}")[1], range(64)))
        assert [g["predictions"]["echo"] for g in got] == list(range(1, 65))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    until(lambda: not alive(worker), "the worker to exit with the server")
