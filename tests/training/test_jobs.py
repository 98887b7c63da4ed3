"""Training jobs over HTTP, with real training processes (tests/plugins/trainer).

Most tests share one app (CPU, one training at a time) on a module state
directory; the tests of leases, restarts and disabled routes build their own.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import time
import warnings
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from deepaas.training import report
from deepaas.training.store import (
    DATE_FORMAT,
    STOPPED_WHILE_QUEUED,
    STOPPED_WHILE_RUNNING,
)
from tests.support import (
    Client,
    MakeClient,
    eventually,
    plugin_spec,
    start_client,
    training_ended,
    wait_for,
)
from tests.training.zones import time_zone

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

TRAINER = plugin_spec("trainer")
BASE = "/v2/models/trainer/train/"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("state"))


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient, state_dir: str) -> Client:
    return await make_client([TRAINER], state_dir=state_dir, devices="cpu")


async def submit(client: Client, expect: int = 200, **kwargs: Any) -> dict[str, Any]:
    response = await client.post(BASE, json=kwargs)
    body = await response.json()
    assert response.status == expect, body
    return body


async def get(client: Client, uuid: str) -> dict[str, Any]:
    response = await client.get(BASE + uuid)
    assert response.status == 200, await response.text()
    return await response.json()


async def wait_status(client: Client, uuid: str) -> dict[str, Any]:
    """The record of training ``uuid`` once it ended."""
    return await training_ended(client, BASE + uuid, timeout=20.0)


async def cancel(client: Client, uuid: str) -> dict[str, Any]:
    response = await client.delete(BASE + uuid)
    assert response.status == 200, await response.text()
    return await response.json()


# -- states -----------------------------------------------------------------


async def test_queued_running_done(client: Client):
    record = await submit(client, mode="sleep", seconds=0.3)
    assert re.fullmatch(r"[0-9a-f]{32}", record["uuid"])
    assert record["status"] == "running"  # nothing else runs: it starts at once
    time.strptime(record["date"].split(".")[0], DATE_FORMAT.split(".")[0])
    assert record["args"] == {
        "mode": "sleep",
        "seconds": 0.3,
        "steps": 3,
        "lines": 3,
        "data": None,
    }
    assert "result" not in record
    done = await wait_status(client, record["uuid"])
    assert done["status"] == "done"
    assert "message" not in done
    result = done["result"]
    assert result["output"] == {"slept": 0.3}
    assert re.fullmatch(r"\d+:\d\d:\d\d\.\d{6}", result["duration"])
    assert result["finish_date"] >= done["date"]
    assert done["devices"] == ["cpu"] and done["gpus"] == 0


async def test_running_to_error_with_message(client: Client):
    record = await submit(client, mode="fail")
    done = await wait_status(client, record["uuid"])
    assert done["status"] == "error"
    assert done["message"] == "ValueError: the training failed on purpose"
    assert done["result"]["output"] is None
    log = await (await client.get(BASE + record["uuid"] + "/logs")).text()
    assert "Traceback" in log and "failed on purpose" in log


async def test_process_death_is_an_error(client: Client):
    record = await submit(client, mode="exit")
    done = await wait_status(client, record["uuid"])
    assert done["status"] == "error"
    assert "exited with code 7" in done["message"]


async def test_result_that_is_not_json(client: Client):
    record = await submit(client, mode="badresult")
    done = await wait_status(client, record["uuid"])
    assert done["status"] == "error"
    assert "not JSON-able" in done["message"]


async def test_result_nested_too_deep_for_json(client: Client):
    """Encoding it raised RecursionError, which the runner did not catch:
    the training failed with no word of why ("exited with code ...")."""
    record = await submit(client, mode="deepresult")
    done = await wait_status(client, record["uuid"])
    assert done["status"] == "error"
    assert "not JSON-able" in done["message"], done["message"]


async def test_queued_while_another_runs_then_runs(client: Client):
    first = await submit(client, mode="sleep", seconds=0.8)
    second = await submit(client, mode="sleep", seconds=0.0)
    assert first["status"] == "running"
    assert second["status"] == "queued"  # --max-trainings 1
    assert (await get(client, second["uuid"]))["status"] == "queued"
    assert (await wait_status(client, first["uuid"]))["status"] == "done"
    assert (await wait_status(client, second["uuid"]))["status"] == "done"


async def test_list_and_unknown(client: Client):
    record = await submit(client, mode="sleep")
    await wait_status(client, record["uuid"])
    response = await client.get(BASE)
    assert response.status == 200
    listed = await response.json()
    assert isinstance(listed, list)
    assert record["uuid"] in [r["uuid"] for r in listed]
    unknown = "0" * 32
    for method, path in (
        ("GET", BASE + unknown),
        ("DELETE", BASE + unknown),
        ("GET", BASE + unknown + "/logs"),
    ):
        response = await client.request(method, path)
        assert response.status == 404, (method, path)
        assert "message" in await response.json()


async def test_bad_arguments(client: Client):
    body = await submit(client, expect=422, deepaas_gpus=-1)
    assert "deepaas_gpus" in body
    body = await submit(client, expect=422, deepaas_gpus=1)  # CPU only
    assert "GPU" in body["message"]


@pytest.mark.parametrize("value", [0.5, 1.5, 1e300, True])
async def test_a_gpu_count_that_is_no_int_is_refused(client: Client, value: Any):
    """``deepaas_gpus: 1.5`` was taken as 1 GPU (0.5 as none): now 422
    naming it. A whole 1.0 is 1: refused here only for want of a GPU."""
    body = await submit(client, expect=422, deepaas_gpus=value)
    assert body == {"deepaas_gpus": ["Not a valid integer."]}
    body = await submit(client, expect=422, deepaas_gpus=1.0)
    assert "GPU" in body["message"]


async def test_context(client: Client):
    record = await submit(client, mode="context")
    done = await wait_status(client, record["uuid"])
    output = done["result"]["output"]
    assert output["uuid"] == record["uuid"]
    assert output["model"] == "trainer"
    assert output["devices"] == ["cpu"]
    assert output["job_dir"].endswith(record["uuid"])
    assert not os.path.exists(output["job_dir"])  # removed when the job ended
    log = await (await client.get(BASE + record["uuid"] + "/logs")).text()
    assert "hello from the context logger" in log


# -- cancel -----------------------------------------------------------------


async def test_cancel_running(client: Client):
    record = await submit(client, mode="sleep", seconds=30)
    assert record["status"] == "running"
    started = time.monotonic()
    cancelled = await cancel(client, record["uuid"])
    assert time.monotonic() - started < 2.0
    assert cancelled["status"] == "cancelled"
    assert cancelled["result"]["output"] is None
    assert (await get(client, record["uuid"]))["status"] == "cancelled"


async def test_cancel_kills_a_training_that_ignores_sigterm(tmp_path):
    client = await start_client(
        [TRAINER],
        {"state_dir": str(tmp_path), "devices": "cpu", "train_cancel_grace": 0.5},
    )
    try:
        record = await submit(client, mode="stubborn", seconds=30)
        url = BASE + record["uuid"] + "/logs"

        async def ignoring() -> bool:
            return "ignoring" in await (await client.get(url)).text()

        assert await wait_for(ignoring)
        started = time.monotonic()
        cancelled = await cancel(client, record["uuid"])
        assert cancelled["status"] == "cancelled"
        assert 0.5 <= time.monotonic() - started < 0.5 + 2.0
    finally:
        await client.close()


async def test_cancel_queued(client: Client):
    running = await submit(client, mode="sleep", seconds=30)
    queued = await submit(client, mode="sleep")
    assert queued["status"] == "queued"
    cancelled = await cancel(client, queued["uuid"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["start_date"] is None
    assert (await get(client, running["uuid"]))["status"] == "running"
    assert (await cancel(client, running["uuid"]))["status"] == "cancelled"


async def test_cancel_finished_answers_record_unchanged(client: Client):
    record = await submit(client, mode="sleep")
    done = await wait_status(client, record["uuid"])
    assert done["status"] == "done"
    assert await cancel(client, record["uuid"]) == done


# -- logs -------------------------------------------------------------------


async def test_logs_with_offset(client: Client):
    record = await submit(client, mode="print", lines=3)
    await wait_status(client, record["uuid"])
    url = BASE + record["uuid"] + "/logs"
    response = await client.get(url)
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    assert "line 0\nline 1\nline 2\n" in text and "to stderr" in text
    end = int(response.headers["X-Log-Offset"])
    assert end == len(text.encode())
    response = await client.get(url, params={"offset": str(end)})
    assert await response.text() == ""
    assert response.headers["X-Log-Offset"] == str(end)
    middle = text.index("line 1")
    response = await client.get(url, params={"offset": str(middle)})
    assert (await response.text()).startswith("line 1\n")
    response = await client.get(url, params={"offset": str(2**62)})
    assert response.status == 200 and await response.text() == ""
    bad_offsets = ["-1", "x", "", str(10**30), "1_0", " 10", "+10", "\u0661\u0660"]
    for bad in [{"offset": b} for b in bad_offsets] + [{"follow": "maybe"}]:
        response = await client.get(url, params=bad)
        assert response.status == 422, bad
    response = await client.get(url + "?offset=1&offset=2")
    assert response.status == 422
    assert "offset was given 2 times" in (await response.json())["message"]


async def test_logs_of_a_log_that_is_a_folder_end_at_once(
    client: Client, state_dir: str
):
    """A log replaced by a folder (a clean-up gone wrong): an empty answer,
    not a promise of the folder's 4096 bytes that never came (the client
    waited for ever)."""
    record = await submit(client, mode="print", lines=1)
    await wait_status(client, record["uuid"])
    log = os.path.join(state_dir, "logs", record["uuid"] + ".log")
    os.unlink(log)
    os.mkdir(log)
    try:
        response = await client.get(BASE + record["uuid"] + "/logs")
        assert response.status == 200
        assert await asyncio.wait_for(response.read(), 10) == b""
        assert response.headers["X-Log-Offset"] == "0"
    finally:
        os.rmdir(log)


async def test_a_log_truncated_while_sent_closes_the_answer(
    client: Client, state_dir: str
):
    """logrotate's copytruncate while a client reads a big log: the answer
    ends short and the connection is closed (it hung, waiting for the
    promised length)."""
    record = await submit(client, mode="print", lines=1)
    await wait_status(client, record["uuid"])
    log = os.path.join(state_dir, "logs", record["uuid"] + ".log")
    size = 32 << 20  # more than the socket buffers hold
    with open(log, "wb") as out:
        out.write(b"x" * size)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            f"GET {BASE}{record['uuid']}/logs HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert f"Content-Length: {size}".encode() in head
        first = await asyncio.wait_for(reader.readexactly(1 << 16), 10)
        os.truncate(log, 0)  # while the rest is still to be read
        rest = await asyncio.wait_for(reader.read(), 30)  # to the close
    finally:
        writer.close()
    assert len(first) + len(rest) < size
    response = await client.get(BASE + record["uuid"] + "/logs")
    assert response.status == 200 and await response.read() == b""


async def test_logs_follow_streams_until_the_end(client: Client):
    record = await submit(client, mode="print", lines=5, seconds=0.15)
    url = BASE + record["uuid"] + "/logs"
    response = await client.get(url, params={"follow": "true"})
    assert response.status == 200
    first = await response.content.readline()
    assert first == b"line 0\n"
    assert (await get(client, record["uuid"]))["status"] == "running"
    rest = (await response.content.read()).decode()
    assert "line 4\n" in rest and "to stderr" in rest
    assert (await get(client, record["uuid"]))["status"] == "done"


# -- progress ---------------------------------------------------------------


async def test_progress_in_record_and_metrics(client: Client):
    record = await submit(client, mode="report", steps=3, seconds=30)

    async def progressed() -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while True:
            current = await get(client, record["uuid"])
            if current["progress"].get("step") == 2:
                return current
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.05)

    current = await progressed()
    assert current["progress"] == {"step": 2, "loss": pytest.approx(1 / 3)}
    metrics = await (await client.get("/metrics")).text()
    assert (
        f'deepaas_training_progress{{key="loss",model="trainer",uuid="{record["uuid"]}"}}'
        in metrics
    )
    assert 'deepaas_trainings{model="trainer",status="running"} 1.0' in metrics
    cancelled = await cancel(client, record["uuid"])
    assert cancelled["progress"]["step"] == 2  # kept after the end
    metrics = await (await client.get("/metrics")).text()
    assert record["uuid"] not in metrics


@pytest.mark.asyncio(loop_scope="module")
async def test_report_outside_a_training_warns(monkeypatch):
    import deepaas.training

    monkeypatch.setattr(deepaas.training, "_warned_outside", False)  # once a process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report(loss=1.0)
    assert any("outside a training" in str(w.message) for w in caught)


# -- files ------------------------------------------------------------------


async def test_file_argument_reaches_train_and_is_deleted_after(client: Client):
    form = aiohttp.FormData()
    form.add_field("mode", "file")
    form.add_field(
        "data", b"hello training", filename="data.txt", content_type="text/plain"
    )
    response = await client.post(BASE, data=form)
    record = await response.json()
    assert response.status == 200, record
    assert record["args"]["data"] == {
        "name": "data",
        "content_type": "text/plain",
        "original_filename": "data.txt",
    }
    done = await wait_status(client, record["uuid"])
    output = done["result"]["output"]
    assert output["content"] == "hello training"
    assert output["exists"] is True
    assert output["original_filename"] == "data.txt"
    assert not os.path.exists(output["path"])


# -- isolation --------------------------------------------------------------


async def test_predictions_are_served_while_training(client: Client):
    record = await submit(client, mode="sleep", seconds=30)
    try:
        # (How fast they are served is measured by
        # benchmarks/training_isolation.py, not here.)
        for _ in range(5):
            response = await client.post("/v2/models/trainer/predict/", json={"x": 2})
            assert response.status == 200
            assert (await response.json())["predictions"]["x"] == 2
        assert (await get(client, record["uuid"]))["status"] == "running"
    finally:
        await cancel(client, record["uuid"])


async def test_model_without_train_answers_501(make_client: MakeClient, state_dir):
    client = await make_client([plugin_spec("echo")], state_dir=state_dir)
    response = await client.post("/v2/models/echo/train/", json={})
    assert response.status == 501
    assert "train" in (await response.json())["message"]


async def test_spec_documents_the_routes(client: Client):
    swagger = await (await client.get("/swagger.json")).json()
    paths = swagger["paths"]
    post = paths[BASE]["post"]
    assert post["tags"] == ["models"]
    names = {p["name"] for p in post["parameters"]}
    assert {"mode", "deepaas_gpus", "data"} <= names
    assert "get" in paths[BASE]
    assert set(paths[BASE + "{uuid}"]) == {"get", "delete"}
    assert "get" in paths[BASE + "{uuid}/logs"]


async def test_disabled_train_endpoint(make_client: MakeClient, state_dir):
    client = await make_client([TRAINER], state_dir=state_dir, train_endpoint=False)
    for method, path in (
        ("POST", BASE),
        ("GET", BASE),
        ("GET", BASE + "0" * 32),
        ("DELETE", BASE + "0" * 32),
    ):
        response = await client.request(method, path)
        assert response.status == 402, (method, path)
    swagger = await (await client.get("/swagger.json")).json()
    assert not [p for p in swagger["paths"] if "/train/" in p]


# -- leases -----------------------------------------------------------------


async def test_gpu_leases_are_exclusive_and_fifo(tmp_path):
    client = await start_client(
        [TRAINER], {"state_dir": str(tmp_path), "devices": "0,1"}
    )
    try:
        default = await submit(client, mode="env")
        assert default["gpus"] == 1  # --train-gpus: 1 when GPUs are selected
        await wait_status(client, default["uuid"])
        await submit(client, expect=422, mode="env", deepaas_gpus=3)
        first = await submit(client, mode="env", seconds=0.8, deepaas_gpus=2)
        second = await submit(client, mode="env", deepaas_gpus=2)
        assert first["status"] == "running"
        assert first["devices"] == ["cuda:0", "cuda:1"]
        assert second["status"] == "queued"
        done = await wait_status(client, first["uuid"])
        assert done["result"]["output"] == {
            "cuda_visible_devices": "0,1",
            "deepaas_devices": "cuda:0,cuda:1",
        }
        done = await wait_status(client, second["uuid"])
        assert done["status"] == "done"
        assert done["start_date"] >= first["date"]
    finally:
        await client.close()


async def test_max_trainings_with_gpus(tmp_path):
    client = await start_client(
        [TRAINER],
        {"state_dir": str(tmp_path), "devices": "0,1", "max_trainings": 2},
    )
    try:
        one = await submit(client, mode="env", seconds=30, deepaas_gpus=1)
        two = await submit(client, mode="env", seconds=30, deepaas_gpus=1)
        three = await submit(client, mode="env", deepaas_gpus=0)
        assert [one["status"], two["status"]] == ["running", "running"]
        assert {one["devices"][0], two["devices"][0]} == {"cuda:0", "cuda:1"}
        assert three["status"] == "queued"  # at most two at once
        await cancel(client, one["uuid"])
        done = await wait_status(client, three["uuid"])
        assert done["result"]["output"]["deepaas_devices"] == "cpu"
        assert done["result"]["output"]["cuda_visible_devices"] == ""
    finally:
        await client.close()


# -- persistence --------------------------------------------------------------


async def test_records_survive_a_restart(tmp_path):
    settings = {"state_dir": str(tmp_path), "devices": "cpu"}
    client = await start_client([TRAINER], settings)
    try:
        done = await submit(client, mode="sleep")
        done = await wait_status(client, done["uuid"])
        running = await submit(client, mode="sleep", seconds=30)
        queued = await submit(client, mode="sleep")
        assert queued["status"] == "queued"
    finally:
        await client.close()
    client = await start_client([TRAINER], settings)
    try:
        assert await get(client, done["uuid"]) == done
        was_running = await get(client, running["uuid"])
        assert was_running["status"] == "error"
        assert was_running["message"] == STOPPED_WHILE_RUNNING
        was_queued = await get(client, queued["uuid"])
        assert was_queued["status"] == "error"
        assert was_queued["message"] == STOPPED_WHILE_QUEUED
        listed = await (await client.get(BASE)).json()
        assert [r["uuid"] for r in listed] == [
            done["uuid"],
            running["uuid"],
            queued["uuid"],
        ]
        # Left-over job dirs are removed by a background pass at start-up.
        assert await eventually(lambda: not os.listdir(tmp_path / "jobs")), os.listdir(
            tmp_path / "jobs"
        )
    finally:
        await client.close()


async def test_start_time_survives_a_restart_in_another_time_zone(tmp_path):
    """start_time is the instant recorded at the start: a server restarted
    in another zone (or sharing the state directory from one) serves the
    same instant, not start_date read as its own local time."""
    settings = {"state_dir": str(tmp_path), "devices": "cpu"}
    with time_zone("JST-9"):  # UTC+9
        client = await start_client([TRAINER], settings)
        try:
            done = await submit(client, mode="sleep")
            done = await wait_status(client, done["uuid"])
        finally:
            await client.close()
    local = datetime.datetime.strptime(done["start_date"], DATE_FORMAT)
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    started = local.replace(tzinfo=tokyo)
    served = datetime.datetime.fromisoformat(done["start_time"].replace("Z", "+00:00"))
    assert abs(served - started) < datetime.timedelta(milliseconds=1)
    with time_zone("EST+5"):  # UTC-5
        client = await start_client([TRAINER], settings)
        try:
            again = await get(client, done["uuid"])
        finally:
            await client.close()
    assert again["start_time"] == done["start_time"]
    assert again["start_date"] == done["start_date"]  # the contract's, as stored
    assert again == done


async def test_an_unknown_deepaas_argument_is_422_not_ignored(client: Client):
    """deepaas_ keys are deepaas's own: a typo (deepaas_gpu) trained on the
    default devices without a word. Other unknown keys are still ignored,
    as in DEEPaaS 2.x (the contract)."""
    before = await (await client.get(BASE)).json()
    for send in (
        {"params": {"deepaas_gpu": "2"}},
        {"json": {"deepaas_gpu": 2}},
        {"data": {"deepaas_gpu": "2"}},  # a urlencoded form
    ):
        response = await client.post(BASE, **send)
        assert response.status == 422, send
        errors = await response.json()  # marshmallow's messages, by key
        assert "did you mean 'deepaas_gpus'?" in errors["deepaas_gpu"][0], errors
    assert await (await client.get(BASE)).json() == before  # none started
    record = await submit(client, mode="print", lines=1, nosuch=1)
    await wait_status(client, record["uuid"])
