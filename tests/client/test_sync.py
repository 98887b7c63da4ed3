"""deepaas.client.Client (blocking) against a real deepaas-run."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import pytest

from deepaas.client import (
    APIError,
    Client,
    ClientError,
    ConnectionFailed,
    InvalidArguments,
    NotFound,
    RawResult,
    Timeout,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture
def client(url: str):
    with Client(url, timeout=30) as c:
        yield c


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_models_and_metadata(client):
    names = [m["name"] for m in client.models()]
    assert names == ["demo", "trainer", "binary", "outcomes", "file_list"]
    meta = client.metadata("demo")
    assert meta["id"] == "demo"
    assert meta["author"] == "deepaas developers"
    assert meta["tags"] == ["example", "demo"]


def test_predict_form_arguments_files_and_headers(client, readme: Path):
    kept = io.BytesIO(b"xx-from a file object")
    kept.seek(3)  # read from its position
    answer = client.predict(
        "demo",
        {
            "number": 7,
            "flag": True,
            "numbers": [3, 4, 5],
            "ratio": 0.25,
            "class": "dog",  # data_key; a Python keyword
            "demo-str": "dashed",
            "secret": None,  # left out
        },
        files={"image": readme, "file": ("notes.txt", kept)},
        headers={"x-demo-header": "from a header"},
    )
    args = answer["args"]
    assert answer["score"] == 7 * 0.25
    assert (args["number"], args["flag"], args["numbers"]) == (7, True, [3, 4, 5])
    assert (args["class_"], args["demo-str"]) == ("dog", "dashed")
    assert args["x-demo-header"] == "from a header"
    assert "secret" not in answer["received"]
    assert args["image"]["original_filename"] == "README.md"
    assert args["image"]["sha256"] == sha256(readme.read_bytes())
    assert args["image"]["content_type"] == "text/markdown"
    assert args["file"] == {
        "original_filename": "notes.txt",
        "content_type": "text/plain",
        "size": len(b"from a file object"),
        "sha256": sha256(b"from a file object"),
    }
    assert not kept.closed  # the caller's file is left open


def test_predict_file_from_open_file_and_bytes(client, readme: Path):
    with readme.open("rb") as fh:
        answer = client.predict(
            "demo", files={"image": fh, "file": ("b.bin", b"\x00\x01", "x/y")}
        )
        assert not fh.closed
    args = answer["args"]
    assert args["image"]["original_filename"] == "README.md"
    assert args["image"]["size"] == readme.stat().st_size
    assert args["file"]["content_type"] == "x/y"
    assert args["file"]["size"] == 2


def test_predict_query_and_json_body(client):
    answer = client.predict(
        "demo", json={"options": {"k": [1, 2]}, "number": 3}, query={"text": "q"}
    )
    assert answer["args"]["options"] == {"k": [1, 2]}
    assert answer["args"]["number"] == 3
    assert answer["args"]["text"] == "q"


def test_several_files_in_one_argument(client):
    answer = client.predict(
        "file_list", files={"files": [("a.txt", b"one"), io.BytesIO(b"two")]}
    )
    assert answer == {"status": "OK", "predictions": {"contents": ["one", "two"]}}


def test_accept_returns_raw_results(client):
    png = client.predict("demo", {"number": 100}, accept="image/png")
    assert isinstance(png, RawResult)
    assert png.content_type == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")

    text = client.predict("demo", {"number": 9}, accept="text/plain")
    assert text.content_type == "text/plain"
    assert "number=9\n" in text.text

    # binary's accept field has no location: the accept query argument
    # reaches it (the Accept header alone would not).
    pdf = client.predict("binary", {"kind": "returned_file"}, accept="application/pdf")
    assert pdf.content_type == "application/pdf"
    assert pdf.filename == "report.pdf"
    assert pdf.content.startswith(b'"""Binary outputs')


def test_raw_result_save(client, tmp_path: Path):
    blob = client.predict(
        "binary", {"kind": "bytesio"}, accept="application/octet-stream"
    )
    blob.save(str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == b"from bytesio"


def test_unknown_model_is_not_found(client):
    with pytest.raises(NotFound) as info:
        client.metadata("nope")
    assert info.value.status == 404
    assert "'nope'" in info.value.message
    assert info.value.url.endswith("/v2/models/nope/")
    with pytest.raises(NotFound):
        client.predict("nope")


def test_invalid_arguments(client):
    with pytest.raises(InvalidArguments) as info:
        client.predict("demo", {"number": 1000, "choice": "z"})
    err = info.value
    assert err.status == 422
    assert set(err.errors) == {"number", "choice"}
    assert err.errors["number"] == [
        "Must be greater than or equal to 0 and less than or equal to 100."
    ]
    assert "number: Must be greater" in err.message
    assert isinstance(err, APIError) and isinstance(err, ClientError)


def test_model_error_message(client):
    with pytest.raises(APIError) as info:
        client.predict("outcomes", {"mode": "boom"})
    assert info.value.status == 500
    assert info.value.message == "ValueError: boom"
    assert info.value.body == {"message": "ValueError: boom"}


def test_arguments_that_cannot_be_sent(client):
    with pytest.raises(TypeError, match="json="):
        client.predict("demo", {"options": {"a": 1}})
    with pytest.raises(ValueError, match="one body"):
        client.predict("demo", {"number": 1}, json={"options": {}})
    with pytest.raises(ValueError):  # NaN is not JSON
        client.predict("demo", json={"ratio": float("nan")})
    with pytest.raises(FileNotFoundError):
        client.predict("demo", files={"image": "/nonexistent/cat.png"})


def test_training_follow_wait_logs(client):
    job = client.train("trainer", {"mode": "print", "lines": 3})
    assert len(job["uuid"]) == 32
    assert job["status"] in ("queued", "running")
    uuid = job["uuid"]

    streamed = "".join(client.follow_logs("trainer", uuid))
    assert streamed == "line 0\nline 1\nline 2\nto stderr\n"  # ends with the job

    record = client.wait("trainer", uuid, interval=0.05, timeout=30)
    assert record["status"] == "done"
    assert record["result"]["output"] == {"lines": 3}
    assert client.training("trainer", uuid)["status"] == "done"
    assert uuid in [r["uuid"] for r in client.trainings("trainer")]

    whole = client.logs("trainer", uuid)
    assert whole.text == streamed
    assert whole.offset == len(streamed.encode())
    rest = client.logs("trainer", uuid, offset=7)
    assert rest.text == streamed[7:]
    assert client.logs("trainer", uuid, whole.offset).text == ""

    # Leaving a stream early closes it; resuming from an offset works.
    for piece in client.follow_logs("trainer", uuid, offset=14):
        assert piece.startswith("line 2\n")
        break


def test_training_cancel(client):
    job = client.train("trainer", {"mode": "sleep", "seconds": 120})
    record = client.cancel("trainer", job["uuid"])
    assert record["status"] == "cancelled"
    assert client.cancel("trainer", job["uuid"])["status"] == "cancelled"


def test_training_with_file_and_errors(client):
    job = client.train("trainer", {"mode": "file"}, files={"data": ("d.csv", b"a,b")})
    record = client.wait("trainer", job["uuid"], interval=0.05, timeout=30)
    assert record["result"]["output"]["content"] == "a,b"
    assert record["args"]["data"]["original_filename"] == "d.csv"

    failed = client.train("trainer", {"mode": "fail"})
    record = client.wait("trainer", failed["uuid"], interval=0.05, timeout=30)
    assert record["status"] == "error"
    assert "the training failed on purpose" in record["message"]

    with pytest.raises(NotFound):
        client.training("trainer", "0" * 32)
    with pytest.raises(NotFound):
        client.logs("trainer", "0" * 32)
    with pytest.raises(NotFound):
        next(client.follow_logs("trainer", "0" * 32))
    with pytest.raises(InvalidArguments):
        client.train("trainer", {"steps": "many"})
    with pytest.raises(APIError) as info:  # more GPUs than the server has
        client.train("demo", gpus=64)
    assert info.value.status == 422


def test_wait_timeout(client):
    job = client.train("trainer", {"mode": "sleep", "seconds": 120})
    try:
        with pytest.raises(Timeout, match="still"):
            client.wait("trainer", job["uuid"], interval=0.05, timeout=0.2)
    finally:
        client.cancel("trainer", job["uuid"])


def test_server_down(nobody_url: str):
    with Client(nobody_url) as c, pytest.raises(ConnectionFailed) as info:
        c.models()
    assert "cannot connect" in str(info.value)
    assert isinstance(info.value, ConnectionError)


def test_no_answer_times_out(silent_url: str):
    with Client(silent_url, timeout=0.3) as c, pytest.raises(Timeout) as info:
        c.models()
    assert "0.3 s" in str(info.value)
    assert isinstance(info.value, TimeoutError)


def test_per_call_timeout(silent_url: str):
    with Client(silent_url, timeout=None) as c, pytest.raises(Timeout):
        c.predict("demo", timeout=0.2)


def test_connection_dropped(hangup_url: str):
    with Client(hangup_url) as c, pytest.raises(ConnectionFailed, match="broke"):
        c.models()


def test_not_a_deepaas_server(url: str):
    with Client(url + "/api") as c, pytest.raises(NotFound):
        c.models()
    with Client(url) as c, pytest.raises(ClientError, match="not JSON"):
        c._thread.run(c._async._json("GET", "/api"))


def test_closed_client(url: str):
    c = Client(url)
    c.close()
    c.close()  # twice is fine
    with pytest.raises(ClientError, match="closed"):
        c.models()
    assert not c._thread.thread.is_alive()


def test_shared_by_threads(client):
    results: list[int] = []

    def call(n: int) -> None:
        results.append(client.predict("demo", {"number": n})["args"]["number"])

    threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(8))


def test_bad_url():
    with pytest.raises(ValueError, match="http"):
        Client("127.0.0.1:5000")


def test_training_metrics(client):
    job = client.train("trainer", {"mode": "curve", "steps": 5})
    uuid = job["uuid"]
    record = client.wait("trainer", uuid, interval=0.05, timeout=30)
    assert record["status"] == "done"
    curves = client.training_metrics("trainer", uuid)
    assert curves["reports"] == 5
    loss = curves["series"]["loss"]
    assert [point[0] for point in loss] == [1, 2, 3, 4, 5]
    assert loss[2][1] is None  # the NaN at step 3: a gap
    assert loss[3][1] == 0.25
    # Resuming from the cursor: nothing new.
    again = client.training_metrics("trainer", uuid, since=curves["cursor"])
    assert again["reports"] == 0
    # From the third report on, on the time axis.
    rest = client.training_metrics("trainer", uuid, since=2, x="time")
    assert rest["reports"] == 3
    assert rest["x"] == "time"
    with pytest.raises(APIError) as info:
        client.training_metrics("trainer", uuid, max_points=1)
    assert info.value.status == 422
    with pytest.raises(NotFound):
        client.training_metrics("trainer", "0" * 32)
