"""Request ids (``deepaas.tracing``): taken from ``X-Request-ID`` or made,
returned on every answer, on the log lines about the request, on the
worker's lines while it runs the call, in the training records."""

from __future__ import annotations

import io
import logging
import re
import socket
import sys
from typing import Any

import pytest

from deepaas import log, tracing
from tests.support import DEMO, Client, MakeClient, eventually, plugin_spec

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

CHATTY = plugin_spec("chatty")
MADE = re.compile(r"[0-9a-f]{32}")


async def test_a_usable_id_is_kept_and_others_replaced() -> None:
    for given in (
        "abc",
        "0" * 128,
        "Root=1-5759e988-bd862e3fe1be46a994272793",
        "a:b/c",
    ):
        assert tracing.accepted(given) == given
    for given in (None, "", "x" * 129, "two words", "caf\u00e9", "tab\there", "\x1f"):
        assert MADE.fullmatch(tracing.accepted(given)), given
    made = {tracing.new_id() for _ in range(1000)}
    assert len(made) == 1000 and all(MADE.fullmatch(i) for i in made)


async def test_the_filter_puts_the_id_before_the_message() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s: %(request)s%(message)s"))
    handler.addFilter(tracing.RequestIdFilter())
    log = logging.getLogger("tests.access.filter")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("outside")
        token = tracing.REQUEST_ID.set("r-1")
        log.warning("inside")
        log.warning("given", extra={"request_id": "r-2"})
        tracing.REQUEST_ID.reset(token)
    finally:
        log.removeHandler(handler)
    assert stream.getvalue().splitlines() == [
        "tests.access.filter: outside",
        "tests.access.filter: [r-1] inside",
        "tests.access.filter: [r-2] given",
    ]


async def test_a_workers_lines_are_tagged_only_while_a_call_runs() -> None:
    out = io.StringIO()
    tagged = tracing.TaggedOutput(out)  # type: ignore[arg-type]
    tagged.write("before ")
    try:
        tracing.TaggedOutput.running = "r-9"
        tagged.write("end of before\n")  # a line begun outside stays untagged
        tagged.write("one\ntwo")
        tagged.write(" and more\n")
        tagged.writelines(["three\n", ""])
    finally:
        tracing.TaggedOutput.running = None
    tagged.write("after\n")
    lines = [tracing.untag(line) for line in out.getvalue().splitlines()]
    assert lines == [
        (None, "before end of before"),
        ("r-9", "one"),
        ("r-9", "two and more"),
        ("r-9", "three"),
        (None, "after"),
    ]
    assert tagged.getvalue() == out.getvalue()  # the rest is the stream's


async def test_a_batch_is_tagged_with_all_its_ids() -> None:
    from deepaas.engine.protocol import Invoke
    from deepaas.engine.worker import WorkerLoop

    seen: list[str | None] = []

    class Model:
        name = "m"

        def predict_batch(self, batch: list[Any]) -> list[Any]:
            seen.append(tracing.TaggedOutput.running)
            return [dict(item) for item in batch]

        def predict(self, item: Any) -> Any:
            seen.append(tracing.TaggedOutput.running)
            return dict(item)

    class Board:
        def start(self, seq: int, now: float) -> bool:
            return True

        def finish(self) -> None:
            pass

    class Renderer:
        model = Model()

        def render(self, output: Any, accept: Any) -> Any:
            return ("json", output)

    # The socket takes the answers a message of several calls sends early.
    ours, theirs = socket.socketpair()
    with ours, theirs:
        loop = WorkerLoop({}, theirs, Board())  # type: ignore[arg-type]
        items = [(1, {"x": 1}), (2, {"x": 2}), (3, {"x": 3})]
        loop.call(Renderer(), Invoke("predict_batch", items, ("a", None, "c")))  # type: ignore[arg-type]
        loop.call(Renderer(), Invoke("predict", items, ("a", "b")))  # type: ignore[arg-type]
        loop.call(Renderer(), Invoke("predict", items[:1]))  # type: ignore[arg-type]
    assert seen == ["a,c", "a", "b", None, None]
    assert tracing.TaggedOutput.running is None


# -- over HTTP ----------------------------------------------------------------


async def answers(client: Client) -> list[tuple[str, Any]]:
    """(what, answer) for one request of each kind of answer."""
    return [
        ("200", await client.get("/v2/models/")),
        ("404 unrouted", await client.get("/no/such/route")),
        ("404 model", await client.get("/v2/models/nope/")),
        ("405", await client.delete("/v2/models/")),
        ("422", await client.post("/v2/models/demo/predict/?number=1000")),
        ("308", await client.get("/v2/models", allow_redirects=False)),
        ("HEAD", await client.head("/healthz")),
    ]  # a request the parser refuses: tests/access/test_end_to_end.py


async def test_every_answer_carries_an_id(make_client: MakeClient) -> None:
    client = await make_client([DEMO])
    ids = set()
    for what, answer in await answers(client):
        request_id = answer.headers.get("X-Request-ID", "")
        assert MADE.fullmatch(request_id), what
        ids.add(request_id)
    assert len(ids) == 7  # one each


async def test_a_clients_id_comes_back(make_client: MakeClient) -> None:
    client = await make_client([DEMO])
    response = await client.get("/v2/models/", headers={"X-Request-ID": "mine-1"})
    assert response.headers["X-Request-ID"] == "mine-1"
    response = await client.get("/v2/models/", headers={"X-Request-ID": "a b"})
    assert MADE.fullmatch(response.headers["X-Request-ID"])


async def test_errors_and_refusals_carry_it_too(make_client: MakeClient) -> None:
    client = await make_client([DEMO], auth_tokens="t", cors_origin=("http://a",))
    for response in (
        await client.get("/v2/models/", headers={"X-Request-ID": "r-401"}),
        await client.options(
            "/v2/models/",
            headers={
                "X-Request-ID": "r-401",
                "Origin": "http://a",
                "Access-Control-Request-Method": "GET",
            },
        ),
    ):
        assert response.headers["X-Request-ID"] == "r-401"


async def test_the_call_and_its_log_lines(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client([CHATTY])
    caplog.set_level(logging.INFO, "deepaas")
    caplog.handler.addFilter(tracing.RequestIdFilter())
    response = await client.post(
        "/v2/models/chatty/predict/?word=oops&fail=true",
        headers={"X-Request-ID": "r-chat"},
    )
    assert response.status == 500
    assert response.headers["X-Request-ID"] == "r-chat"

    def lines(logger: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == logger and getattr(r, "request_id", None) == "r-chat"
        ]

    # The worker's lines arrive on their own pipe: wait for the last one
    assert await eventually(
        lambda: any("chatty logs oops" in x for x in lines("deepaas.worker"))
    )
    worker = lines("deepaas.worker")
    for text in ("chatty prints oops", "chatty writes oops", "over two lines"):
        assert any(line.endswith(text) for line in worker), (text, worker)
    assert any("chatty logs oops" in line for line in worker)  # logging, too
    # the traceback is in the record that reports the failure, at its level
    api = lines("deepaas.api.errors")
    assert api and "-> 500: ValueError: chatty fails on oops\n" in api[0]
    assert "\nTraceback (most recent call last):\n" in api[0]
    assert not any("Traceback" in line for line in worker)


async def test_a_lone_surrogate_printed_by_the_plugin_is_written_escaped(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    # JSON lets a client send one ("\\ud800"); DEEPaaS 2.x handed it on, and
    # a print() of it raised UnicodeEncodeError in the worker: a 500.
    client = await make_client([CHATTY])
    caplog.set_level(logging.INFO, "deepaas")
    response = await client.post(
        "/v2/models/chatty/predict/",
        data=b'{"word": "a\\ud800b"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()

    def printed() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "deepaas.worker" and "chatty prints a" in r.getMessage()
        ]

    assert await eventually(lambda: bool(printed()))
    assert printed()[0].endswith("chatty prints a\\ud800b")


async def test_a_training_keeps_the_id_of_the_request_that_started_it(
    make_client: MakeClient,
) -> None:
    client = await make_client([CHATTY])
    response = await client.post(
        "/v2/models/chatty/train/", json={}, headers={"X-Request-ID": "r-train"}
    )
    record = await response.json()
    assert record["request_id"] == "r-train"
    response = await client.get(f"/v2/models/chatty/train/{record['uuid']}")
    assert (await response.json())["request_id"] == "r-train"
    listed = await (await client.get("/v2/models/chatty/train/")).json()
    assert [r["request_id"] for r in listed if r["uuid"] == record["uuid"]] == [
        "r-train"
    ]


async def test_a_plugins_last_resort_record_reaches_the_log_whole() -> None:
    """A record the plugin logs with no handler of its own (Python's last
    resort, :class:`deepaas.log.RecordLines` in a worker) crosses the
    worker's output as one line, tagged while a call runs, and is logged at
    its level with its traceback."""
    out = io.StringIO()
    saved = sys.stderr, logging.lastResort
    logger = logging.getLogger("tests.access.plugin")
    logger.propagate = False  # no handler anywhere: the last resort's
    sys.stderr = tracing.TaggedOutput(out)  # type: ignore[assignment]
    logging.lastResort = log.RecordLines()
    try:
        tracing.TaggedOutput.running = "r-rec"
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            logger.exception("failed %s", "x")
        logger.info("below the last resort's level")
    finally:
        tracing.TaggedOutput.running = None
        sys.stderr, logging.lastResort = saved
        logger.propagate = True
    (line,) = out.getvalue().split("\n")[:-1]  # one line
    request_id, text = tracing.untag(line)
    level, message = log.worker_record(text)
    assert (request_id, level) == ("r-rec", logging.ERROR)
    first, *rest = message.splitlines()
    assert first == "failed x"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-2:] == ["ValueError: bad", "value"]
    assert log.worker_record("plain text") == (logging.INFO, "plain text")
    broken = "\x1a40\x1a{not json"
    assert log.worker_record(broken) == (logging.INFO, broken)
