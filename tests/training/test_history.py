"""The history of reported values: kept, served as curves, bounded, resumed.

The first tests check :mod:`deepaas.training.history` alone (series, gaps,
downsampling, the ETA, the store's rows); the last ones run real trainings
(tests/plugins/trainer, mode ``curve``) and read ``.../train/{uuid}/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from typing import Any

import pytest
import pytest_asyncio

from deepaas.training import history
from deepaas.training.history import Report, Tracker
from deepaas.training.store import TrainingStore
from tests.support import Client, MakeClient, plugin_spec, training_ended

TRAINER = plugin_spec("trainer")
BASE = "/v2/models/trainer/train/"


# -- series, gaps and text ------------------------------------------------------


def test_numbers_are_points_nan_is_a_gap_text_is_text():
    reports = [
        Report(1, 0.5, 1, {"step": 1, "loss": 0.9, "phase": "warmup", "ok": True}),
        Report(2, 1.0, 2, {"step": 2, "loss": math.nan, "best": math.inf}),
        Report(3, 1.5, 2, {"loss": None, "lr": 0.1}),
    ]
    numbers, texts = history.series(reports, "step")
    assert numbers["loss"] == [[1, 0.9], [2, None], [2, None]]
    assert numbers["best"] == [[2, None]]
    assert numbers["lr"] == [[2, 0.1]]  # the step as last reported
    assert texts == {"phase": [[1, "warmup"]], "ok": [[1, True]]}
    numbers, _ = history.series(reports, "time")
    assert [p[0] for p in numbers["loss"]] == [0.5, 1.0, 1.5]


def test_axis_auto_follows_the_first_report():
    assert history.x_axis(Report(1, 0.1, 3, {}), "auto") == "step"
    assert history.x_axis(Report(1, 0.1, None, {}), "auto") == "time"
    assert history.x_axis(None, "auto") == "time"
    assert history.x_axis(Report(1, 0.1, 3, {}), "time") == "time"


# -- downsampling -----------------------------------------------------------------


def test_downsample_is_bounded_keeps_spikes_gaps_and_the_end():
    points: list[list[Any]] = [[i, 1.0] for i in range(10_000)]
    points[4321][1] = 50.0  # a spike
    points[7000][1] = None  # a gap
    kept, k = history.downsample(points, 100)
    assert len(kept) <= 100
    assert k == 200
    assert [4321, 50.0] in kept
    assert [7000, None] in kept
    assert kept[-1] == [9999, 1.0]
    assert [p[0] for p in kept] == sorted(p[0] for p in kept)  # in order


def test_downsample_leaves_short_curves_alone():
    points: list[list[Any]] = [[i, float(i)] for i in range(20)]
    assert history.downsample(points, 20) == (points, 1)


# -- ETA ----------------------------------------------------------------------------


def test_eta_from_the_rate_since_the_first_counted_report():
    tracker = Tracker()
    tracker.add(30.0, {"loss": 1.0}, {"loss": 1.0})  # start-up: no counter yet
    assert tracker.eta_seconds is None
    tracker.add(40.0, {"step": 10}, {"step": 10, "total": 100})
    assert tracker.eta_seconds is None  # one point: no rate yet
    tracker.add(50.0, {"step": 20}, {"step": 20, "total": 100})
    assert tracker.eta_seconds == pytest.approx(80.0)  # 10 steps per 10 s
    tracker.add(60.0, {"step": 100}, {"step": 100, "total": 100})
    assert tracker.eta_seconds == 0.0
    epochs = Tracker()
    epochs.add(0.0, {}, {"epoch": 1, "epochs": 4})
    epochs.add(10.0, {}, {"epoch": 2, "epochs": 4})
    assert epochs.eta_seconds == pytest.approx(20.0)
    assert [r.seq for r in epochs.take()] == [1, 2]
    assert epochs.take() == []


def test_merge_never_skips_a_report():
    stored = [Report(1, 0.0, None, {}), Report(2, 0.1, None, {})]
    unsaved = [Report(4, 0.3, None, {}), Report(3, 0.2, None, {})]
    assert [r.seq for r in history.merge(stored, unsaved, 0)] == [1, 2, 3, 4]
    # 3 is being written (in neither list): 4 waits for the next poll
    assert [r.seq for r in history.merge(stored, unsaved[:1], 0)] == [1, 2]
    assert [r.seq for r in history.merge([], unsaved, 2)] == [3, 4]


# -- the store ----------------------------------------------------------------------


async def test_store_keeps_reports_and_reads_after_a_cursor(tmp_path, monkeypatch):
    store = TrainingStore(str(tmp_path))
    await store.open()
    try:
        tracker = Tracker()
        for i in range(1, 101):
            values = {"step": i, "total": 100, "loss": math.nan if i == 5 else 1 / i}
            tracker.add(i / 10, values, values)
        await history.append(store, "a" * 32, tracker.take())
        await history.append(store, "b" * 32, [Report(1, 0.0, None, {"x": 1})])
        reports, stride, first, last = await history.load(store, "a" * 32, 0)
        assert [r.seq for r in reports] == list(range(1, 101))
        assert stride == 1 and first is not None and first.step == 1
        assert last == 100
        assert math.isnan(reports[4].values["loss"])
        later = await history.load(store, "a" * 32, 95)
        assert [r.seq for r in later.reports] == [96, 97, 98, 99, 100]
        # past the end: nothing, but the last number and the first report
        past = await history.load(store, "a" * 32, 500)
        assert past.reports == [] and past.last == 100 and past.first == first
        assert await history.load(store, "d" * 32, 0) == ([], 1, None, 0)
        # a very long run read from its start: strided, the last kept
        monkeypatch.setattr(history, "READ_LIMIT", 30)
        strided, stride, _, last = await history.load(store, "a" * 32, 0)
        assert stride == 4 and len(strided) == 25
        assert strided[-1].seq == 100 and last == 100
    finally:
        await store.close()


async def test_unwritten_reports_are_kept_in_order_until_the_store_takes_them(
    tmp_path,
):
    store = TrainingStore(str(tmp_path))  # not open yet: every write fails
    book = history.Unwritten()
    tracker = Tracker()
    uuid = "c" * 32
    tracker.add(0.1, {"loss": 1.0}, {})
    book.add(uuid, tracker)
    with pytest.raises(sqlite3.Error):
        await book.write(store)
    tracker.add(0.2, {"loss": 0.5}, {})
    assert [r.seq for r in book.of(uuid)] == [1, 2]  # kept, in order
    await store.open()
    try:
        unwritten = await book.read(store, uuid, 0)
        assert [r.seq for r in unwritten.reports] == [1, 2]
        assert unwritten.last == 2  # counted though not written
        await book.write(store)
        assert book.of(uuid) == []
        reports, _, first, last = await book.read(store, uuid, 0)
        assert [r.values for r in reports] == [{"loss": 1.0}, {"loss": 0.5}]
        assert first is not None and first.seq == 1 and last == 2
    finally:
        await store.close()


async def test_a_poll_past_the_end_is_one_trip_to_the_store(tmp_path, monkeypatch):
    """The last report's number comes with the reports (it was a second
    query, on the store's one thread, for every poll that found nothing)."""
    store = TrainingStore(str(tmp_path))
    await store.open()
    try:
        book = history.Unwritten()
        tracker = Tracker()
        uuid = "e" * 32
        for i in range(1, 4):
            tracker.add(i / 10, {"loss": 1 / i}, {})
        book.add(uuid, tracker)
        await book.write(store)  # 1..3 stored
        tracker.add(0.4, {"loss": 0.25}, {})  # 4 not written yet
        calls: list[Any] = []
        real = store.call

        async def counted(fn: Any) -> Any:
            calls.append(fn)
            return await real(fn)

        monkeypatch.setattr(store, "call", counted)
        read = await book.read(store, uuid, 10**9)
        assert read.reports == [] and read.last == 4
        assert len(calls) == 1
        read = await book.read(store, uuid, 2)
        assert [r.seq for r in read.reports] == [3, 4] and read.last == 4
        assert len(calls) == 2
    finally:
        await store.close()


# -- over HTTP, with real trainings --------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient, tmp_path_factory) -> Client:
    state_dir = str(tmp_path_factory.mktemp("state"))
    return await make_client([TRAINER], state_dir=state_dir, devices="cpu")


async def metrics(client: Client, uuid: str, expect: int = 200, **query: Any) -> Any:
    response = await client.get(BASE + uuid + "/metrics", params=query)
    text = await response.text()
    assert response.status == expect, text
    assert "NaN" not in text and "Infinity" not in text
    return json.loads(text)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(60)
async def test_a_training_of_20_steps_has_20_points(client: Client):
    response = await client.post(BASE, json={"mode": "curve", "steps": 20})
    record = await response.json()
    assert response.status == 200, record
    assert "eta_seconds" in record
    uuid = record["uuid"]
    done = await training_ended(client, BASE + uuid, timeout=20)
    assert done["status"] == "done" and done["eta_seconds"] is None
    assert done["progress"]["loss"] == pytest.approx(1 / 20)

    answer = await metrics(client, uuid)
    assert answer["x"] == "step" and answer["status"] == "done"
    loss = answer["series"]["loss"]
    assert [p[0] for p in loss] == list(range(1, 21))
    assert loss[2] == [3, None]  # NaN: a gap
    assert loss[3] == [4, 0.25]
    assert "phase" not in answer["series"]  # text: not a curve
    assert answer["text"]["phase"][:3] == [[1, "warmup"], [2, "warmup"], [3, "main"]]
    assert answer["cursor"] == 20 and answer["reports"] == 20
    assert answer["downsampled"] == 1

    # resume from a cursor: only what came after
    rest = await metrics(client, uuid, since=15)
    assert [p[0] for p in rest["series"]["loss"]] == [16, 17, 18, 19, 20]
    assert rest["cursor"] == 20
    at_end = await metrics(client, uuid, since=20)
    assert at_end["series"] == {} and at_end["cursor"] == 20
    # A cursor past the last report (made up, or another training's) comes
    # back as the last report's number: the next poll sees what comes.
    past = await metrics(client, uuid, since=10**9)
    assert past["series"] == {} and past["cursor"] == 20

    # bounded: downsampled, the gap and the end kept
    small = await metrics(client, uuid, max_points=6)
    assert len(small["series"]["loss"]) <= 6 and small["downsampled"] > 1
    assert [3, None] in small["series"]["loss"]
    assert small["series"]["loss"][-1] == [20, 0.05]

    timed = await metrics(client, uuid, x="time")
    assert timed["x"] == "time"
    times = [p[0] for p in timed["series"]["loss"]]
    assert times == sorted(times) and all(isinstance(t, float) for t in times)

    log = await (await client.get(BASE + uuid + "/logs")).text()
    assert "deepaas: report phase='warmup'" in log  # text: kept for the log
    assert "deepaas: report phase='main'" in log


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(60)
async def test_polling_with_the_cursor_while_it_runs_sees_each_report_once(
    client: Client,
):
    response = await client.post(
        BASE, json={"mode": "curve", "steps": 20, "seconds": 0.05}
    )
    uuid = (await response.json())["uuid"]
    seen: list[Any] = []
    cursor, polls, status = 0, 0, "running"
    deadline = asyncio.get_running_loop().time() + 60
    while status != "done" or cursor < 20:
        answer = await metrics(client, uuid, since=cursor)
        assert answer["status"] in ("queued", "running", "done"), answer
        status = answer["status"]
        seen.extend(p[0] for p in answer["series"].get("loss", []))
        assert answer["cursor"] >= cursor
        cursor, polls = answer["cursor"], polls + 1
        if status == "running" and 0 < cursor < 20:
            assert answer["eta_seconds"] is not None or cursor < 2
        assert asyncio.get_running_loop().time() < deadline, (polls, answer)
        await asyncio.sleep(0.01)  # a page polls; this one, often
    assert seen == list(range(1, 21))


@pytest.mark.asyncio(loop_scope="module")
async def test_unknown_training_and_bad_queries(client: Client):
    unknown = await metrics(client, "0" * 32, expect=404)
    assert "no such training" in unknown["message"]
    assert "0" * 32 in unknown["message"]
    response = await client.post(BASE, json={"mode": "sleep"})
    uuid = (await response.json())["uuid"]
    for query, word in (
        ({"since": "-1"}, "since"),
        ({"since": "soon"}, "since"),
        ({"max_points": "1"}, "max_points"),
        ({"max_points": "10001"}, "max_points"),
        ({"x": "epochs"}, "x must be one of"),
    ):
        answer = await metrics(client, uuid, expect=422, **query)
        assert word in answer["message"], answer
    # the real bounds, also past 2**62 (it said "an integer >= 0")
    huge = await metrics(client, uuid, expect=422, since=str(2**62 + 1))
    assert huge["message"] == (
        "since must be an integer from 0 to 4611686018427387904, "
        "got '4611686018427387905'"
    )
    assert (await metrics(client, uuid, since=str(2**62)))["cursor"] == 0
    few = await metrics(client, uuid, expect=422, max_points="1")
    assert few["message"] == "max_points must be an integer from 2 to 10000, got '1'"
    twice = await client.get(BASE + uuid + "/metrics?since=1&since=5")
    assert twice.status == 422
    assert (await twice.json())["message"] == "since was given 2 times: give it once"
    other = "/v2/models/trainer/train/" + uuid + "/metrics"
    assert (await client.get(other)).status == 200
    await training_ended(client, BASE + uuid, timeout=20)
    empty = await metrics(client, uuid)
    assert empty["series"] == {} and empty["cursor"] == 0 and empty["x"] == "time"
