"""The OIP REST routes over DEEPaaS plugins, called by tritonclient.http
against a real server (real workers), and by hand for malformed requests.

tritonclient is synchronous: its calls run in a thread, so the server on
this test's event loop can answer them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pytest
import pytest_asyncio
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException
from yarl import URL

from deepaas.oip import HEADER_LENGTH
from tests.oip.support import request_body
from tests.support import (
    DEMO,
    Client,
    MakeClient,
    listdir,
    plugin_spec,
    predict,
    server_tmp_dir,
    wait_for,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

KINDS = plugin_spec("oip_kinds")
T = TypeVar("T")


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    started = await make_client([DEMO, KINDS])

    async def ready() -> bool:
        return (await started.get("/v2/health/ready")).status == 200

    assert await wait_for(ready, 30)
    return started


async def call(client: Client, fn: Callable[[triton.InferenceServerClient], T]) -> T:
    """``fn(a tritonclient)`` in a thread, against ``client``'s server."""

    def run() -> T:
        url = f"{client.host}:{client.port}"
        with triton.InferenceServerClient(url, network_timeout=30) as oip:
            return fn(oip)

    return await asyncio.to_thread(run)


def tensor(name: str, array: np.ndarray, binary: bool) -> triton.InferInput:
    datatype = {"i": "INT64", "f": "FP64", "b": "BOOL", "O": "BYTES"}[array.dtype.kind]
    if array.dtype == np.float32:
        datatype = "FP32"
    if array.dtype == np.int32:
        datatype = "INT32"
    inp = triton.InferInput(name, list(array.shape), datatype)
    inp.set_data_from_numpy(array, binary_data=binary)
    return inp


def text(*values: str | bytes) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode() if isinstance(v, str) else v for v in values]
    return array


async def post_infer(
    client: Client, body: bytes, model: str = "oip_kinds", **headers: str
) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        f"/v2/models/{model}/infer", data=body, headers=headers
    )
    return response.status, await response.json()


# -- server and model metadata -------------------------------------------------


async def test_server_live_ready_and_metadata(client: Client) -> None:
    live = await call(client, lambda c: c.is_server_live())
    ready = await call(client, lambda c: c.is_server_ready())
    metadata = await call(client, lambda c: c.get_server_metadata())
    assert live and ready
    assert metadata["name"] == "deepaas"
    assert metadata["version"]
    assert isinstance(metadata["extensions"], list)


async def test_health_bodies_say_live_and_ready_as_kserve_reads_them(
    client: Client,
) -> None:
    """KServe's InferenceRESTClient reads ``live`` and ``ready`` from the
    bodies (``None`` when missing, which it takes as not live)."""
    live = await client.get("/v2/health/live")
    assert live.status == 200 and (await live.json())["live"] is True

    async def ready() -> bool:
        answer = await client.get("/v2/health/ready")
        body = await answer.json()
        assert body["ready"] is (answer.status == 200)
        return bool(body["ready"])

    assert await wait_for(ready, 30)


async def test_model_ready(client: Client) -> None:
    assert await call(client, lambda c: c.is_model_ready("demo"))
    assert await call(client, lambda c: c.is_model_ready("demo", "1"))
    assert not await call(client, lambda c: c.is_model_ready("nope"))


async def test_model_metadata_has_oip_and_deepaas_keys(client: Client) -> None:
    metadata = await call(client, lambda c: c.get_model_metadata("oip_kinds"))
    assert metadata["name"] == "oip_kinds"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "deepaas"
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in metadata["inputs"]}
    assert inputs == {
        "i": ("INT64", [1]),
        "f": ("FP64", [1]),
        "b": ("BOOL", [1]),
        "s": ("BYTES", [1]),
        "fl": ("FP64", [-1]),
        "il": ("INT64", [-1]),
        "d": ("BYTES", [1]),
        "up": ("BYTES", [1]),
    }
    # A DEEPaaS client following the model's self link finds its keys there.
    deepaas_doc = await (await client.get("/v2/models/demo/")).json()
    oip_doc = await call(client, lambda c: c.get_model_metadata("demo"))
    for key, value in deepaas_doc.items():
        assert oip_doc[key] == value
    assert {"versions", "platform", "inputs", "outputs"} <= set(oip_doc)
    outputs = {o["name"]: o["datatype"] for o in oip_doc["outputs"]}
    assert outputs == {
        "model": "BYTES",
        "warmed": "BOOL",
        "score": "FP64",
        "received": "BYTES",
        "args": "BYTES",
    }
    versioned = await call(client, lambda c: c.get_model_metadata("demo", "1"))
    assert versioned["inputs"] == oip_doc["inputs"]
    assert "links" not in versioned


async def test_deepaas_documents_keep_their_paths(client: Client) -> None:
    """With a slash, the DEEPaaS documents; /v2/models without one is still
    a redirect to the listing."""
    version = await (await client.get("/v2/")).json()
    assert version["id"] == "v2"
    model = await (await client.get("/v2/models/demo/")).json()
    assert "inputs" not in model and model["id"] == "demo"
    listing = await client.get("/v2/models", allow_redirects=False)
    assert listing.status == 308
    assert listing.headers["Location"] == "/v2/models/"


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/nope/versions/1",
        "/v2/models/demo/versions/2",
        "/v2/models/demo/versions/2/ready",
    ],
)
async def test_unknown_model_or_version_is_404_error(client: Client, path: str) -> None:
    response = await client.get(path, allow_redirects=False)
    assert response.status == 404
    assert set(await response.json()) == {"error"}


# -- infer -----------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
async def test_infer_every_kind(client: Client, binary: bool) -> None:
    inputs = [
        tensor("i", np.array([3], dtype=np.int64), binary),
        tensor("f", np.array([2.0]), binary),
        tensor("b", np.array([True]), binary),
        tensor("s", text("y"), binary),
        tensor("fl", np.array([0.5, 1.5]), binary),
        tensor("il", np.array([1, 2], dtype=np.int32), binary),
        tensor("d", text(json.dumps({"k": [1, 2]})), binary),
    ]
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("total", "flag", "got")
    ]
    result = await call(client, lambda c: c.infer("oip_kinds", inputs, outputs=outputs))
    assert result.as_numpy("total").tolist() == [3 * 2.0 + 2.0 + 3]
    assert result.as_numpy("flag").tolist() == [True]
    got = json.loads(result.as_numpy("got")[0])
    assert got == {
        "i": ["int", 3],
        "f": ["float", 2.0],
        "b": ["bool", True],
        "s": ["str", "y"],
        "fl": ["list", [0.5, 1.5]],
        "il": ["list", [1, 2]],
        "d": ["dict", {"k": [1, 2]}],
    }
    # The same arguments through the DEEPaaS route: the same answer.
    deepaas = await predict(
        client,
        "oip_kinds",
        json={
            "i": 3,
            "f": 2.0,
            "b": True,
            "s": "y",
            "fl": [0.5, 1.5],
            "il": [1, 2],
            "d": {"k": [1, 2]},
        },
    )
    assert deepaas["predictions"]["got"] == got
    assert deepaas["predictions"]["total"] == result.as_numpy("total")[0]


async def test_infer_file_input_reaches_predict_and_is_removed(client: Client) -> None:
    data = b"\x00\xffbinary file\n"
    inputs = [
        tensor("i", np.array([1], dtype=np.int64), True),
        tensor("up", text(data), True),
    ]
    result = await call(client, lambda c: c.infer("oip_kinds", inputs))
    got = json.loads(result.as_numpy("got")[0])
    assert got["up"] == ["str", data.decode("latin-1")]
    assert listdir(server_tmp_dir(client)) == []


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_file_elements_past_max_form_parts_are_a_413_before_any_is_written(
    make_client: MakeClient, binary: bool
) -> None:
    """Each element of a list-of-files input is written to a temporary file,
    as each multipart part is: no more than --max-form-parts of them, as a
    form (20,000 empty elements, 80 KB of binary data, wrote 20,000 files;
    16 MiB would write 4 million)."""
    files = await make_client([plugin_spec("file_list")], max_form_parts=3)
    path = "/v2/models/file_list/infer"

    def body(count: int) -> tuple[bytes, dict[str, str]]:
        tensor: dict[str, Any] = {"name": "files", "datatype": "BYTES"}
        tensor["shape"] = [count]
        if not binary:
            tensor["data"] = ["x"] * count
            return json.dumps({"inputs": [tensor]}).encode(), {}
        tensor["parameters"] = {"binary_data_size": 5 * count}
        head = json.dumps({"inputs": [tensor]}).encode()
        data = b"\x01\x00\x00\x00x" * count
        return head + data, {HEADER_LENGTH: str(len(head))}

    data, headers = body(4)
    response = await files.post(path, data=data, headers=headers)
    assert response.status == 413
    error = (await response.json())["error"]
    assert "--max-form-parts" in error and "4" in error, error
    assert listdir(server_tmp_dir(files)) == []
    data, headers = body(3)
    response = await files.post(path, data=data, headers=headers)
    assert response.status == 200, await response.text()
    assert listdir(server_tmp_dir(files)) == []


async def test_a_binary_body_declared_past_memory_with_no_limit_is_a_413(
    make_client: MakeClient,
) -> None:
    """With no limit on bodies held in memory (--client-max-decoded-size 0),
    a binary infer body that says it is 1 PB long: the buffer it is read
    into cannot be made, a 413 (it was a 500, MemoryError), and the
    connection is closed (the body is not read)."""
    unlimited = await make_client([DEMO], client_max_decoded_size=0)
    reader, writer = await asyncio.open_connection(unlimited.host, unlimited.port)
    try:
        writer.write(
            b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\n"
            + HEADER_LENGTH.encode()
            + b": 2\r\nContent-Length: 1000000000000000\r\n\r\n{}"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 413 "), head
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        error = json.loads(await reader.readexactly(length))["error"]
        assert "Content-Length" in error and "--client-max-decoded-size" in error
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed
    finally:
        writer.close()


async def test_demo_same_answer_both_ways(client: Client) -> None:
    inputs = [
        tensor("number", np.array([40], dtype=np.int64), True),
        tensor("ratio", np.array([0.25]), False),
        tensor("text", text("héllo"), True),
        tensor("numbers", np.array([5, 6, 7], dtype=np.int64), False),
        tensor("class", text("dog"), False),
    ]
    result = await call(client, lambda c: c.infer("demo", inputs, model_version="1"))
    deepaas = await predict(
        client,
        json={
            "number": 40,
            "ratio": 0.25,
            "text": "héllo",
            "numbers": [5, 6, 7],
            "class": "dog",
        },
    )
    assert result.as_numpy("score").tolist() == [deepaas["score"]]
    assert json.loads(result.as_numpy("args")[0]) == deepaas["args"]
    assert [v.decode() for v in result.as_numpy("received")] == deepaas["received"]
    assert result.get_response()["model_version"] == "1"


async def test_demo_bytes_result_is_a_bytes_output(client: Client) -> None:
    inputs = [tensor("accept", text("image/png"), False)]
    outputs = [triton.InferRequestedOutput("output", binary_data=True)]
    result = await call(client, lambda c: c.infer("demo", inputs, outputs=outputs))
    png = result.as_numpy("output")
    assert png.shape == (1,)
    assert png[0].startswith(b"\x89PNG")


async def test_infer_metrics_endpoint_label(client: Client) -> None:
    inputs = [tensor("i", np.array([1], dtype=np.int64), False)]
    await call(client, lambda c: c.infer("oip_kinds", inputs))
    text_metrics = await (await client.get("/metrics")).text()
    assert 'model="oip_kinds"' in text_metrics
    assert 'endpoint="infer"' in text_metrics


# -- errors ----------------------------------------------------------------------


def body_of(
    inputs: dict[str, Any], binary: bool = False
) -> tuple[bytes, dict[str, str]]:
    arrays = {name: value for name, value in inputs.items()}
    body, length = request_body(arrays, binary)
    return body, ({} if length is None else {HEADER_LENGTH: str(length)})


async def test_unknown_model_infer_is_404(client: Client) -> None:
    inputs = [tensor("i", np.array([1], dtype=np.int64), False)]
    with pytest.raises(InferenceServerException) as info:
        await call(client, lambda c: c.infer("nope", inputs))
    assert info.value.status() == "404"
    status, answer = await post_infer(client, b"{}", model="nope")
    assert status == 404 and "nope" in answer["error"]


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ({"i": np.array([1, 2], dtype=np.int64)}, "takes one value"),
        ({"i": np.array([[1]], dtype=np.int64)}, "takes one value"),
        (
            {"i": np.array([1], dtype=np.int64), "il": np.ones((2, 2), np.int64)},
            "is a list (shape [-1])",
        ),
        ({"i": np.array([1.0], dtype=np.float32)}, "is INT64 [1], not FP32"),
        ({"i": np.array([1], dtype=np.int64), "zz": np.array([1])}, "no input 'zz'"),
        ({"f": np.array([1.0])}, "needs input(s) 'i'"),
        ({"i": np.array([1], dtype=np.int64), "d": text("{not json")}, "JSON text"),
        (  # deeper than a JSON body may be: never a RecursionError (500)
            {"i": np.array([1], dtype=np.int64), "d": text("[" * 5000 + "]" * 5000)},
            "nested deeper than 100 levels",
        ),
        (
            {"i": np.array([1], dtype=np.int64), "d": text('{"a": NaN}')},
            "JSON text",
        ),
        ({"i": np.array([1], dtype=np.int64), "s": text(b"\xff")}, "UTF-8"),
    ],
)
@pytest.mark.parametrize("binary", [False, True])
async def test_bad_inputs_are_400(
    client: Client, inputs: dict[str, Any], says: str, binary: bool
) -> None:
    if says == "UTF-8" and not binary:
        pytest.skip("JSON carries text only")
    body, headers = body_of(inputs, binary)
    status, answer = await post_infer(client, body, **headers)
    assert status == 400, answer
    assert set(answer) == {"error"}
    assert says in answer["error"]


async def test_validation_error_has_the_deepaas_message(client: Client) -> None:
    body, headers = body_of({"i": np.array([-1], dtype=np.int64), "s": text("w")})
    status, answer = await post_infer(client, body, **headers)
    deepaas = await predict(client, "oip_kinds", expect=422, json={"i": -1, "s": "w"})
    assert status == 400
    assert json.loads(answer["error"]) == deepaas


@pytest.mark.parametrize(
    ("body", "headers", "says"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b'{"inputs": 3}', {}, "'inputs'"),
        (b'{"inputs": []}', {HEADER_LENGTH: "999"}, "past the end"),
        (b'{"inputs": []}', {HEADER_LENGTH: "x"}, HEADER_LENGTH),
        (
            b'{"inputs":[{"name":"i","datatype":"INT64","shape":[2],"data":[1]}]}',
            {},
            "shape",
        ),
        (
            b'{"inputs":[{"name":"i","datatype":"int64","shape":[1],"data":[1]}]}',
            {},
            "datatype",
        ),
    ],
)
async def test_malformed_requests_are_400(
    client: Client, body: bytes, headers: dict[str, str], says: str
) -> None:
    status, answer = await post_infer(client, body, **headers)
    assert status == 400, answer
    assert says in answer["error"]


async def test_unknown_output_is_400(client: Client) -> None:
    inputs = [tensor("i", np.array([1], dtype=np.int64), False)]
    outputs = [triton.InferRequestedOutput("nope")]
    with pytest.raises(InferenceServerException) as info:
        await call(client, lambda c: c.infer("oip_kinds", inputs, outputs=outputs))
    assert info.value.status() == "400"
    assert "no output 'nope'" in info.value.message()


async def test_wrong_method_on_infer_is_405_error(client: Client) -> None:
    response = await client.get("/v2/models/demo/infer")
    assert response.status == 405
    assert set(await response.json()) == {"error"}


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/demo/config",
        "/v2/models/demo/stats",
        "/v2/models/demo/versions/1/stats",
        "/v2/repository/index",
        "/v2/models/demo/trace/setting",
        "/v2/models/demo/versions/1/trace/setting",
    ],
)
async def test_extensions_not_served_are_oip_404s(client: Client, path: str) -> None:
    """What tritonclient asks of Triton's extensions (model config,
    statistics, repository): a 404 it can read, ``{"error": ...}``."""
    response = await client.get(path)
    assert response.status in (404, 405)
    assert set(await response.json()) == {"error"}


@pytest.mark.parametrize(
    "method",
    [
        "get_system_shared_memory_status",
        "get_cuda_shared_memory_status",
        "get_trace_settings",
        "get_log_settings",
    ],
)
async def test_triton_extensions_not_served_say_so_to_tritonclient(
    client: Client, method: str
) -> None:
    """tritonclient reads ``{"error": ...}``: a ``{"message": ...}`` 404 made
    it fail on decoding ("an exception occurred in the client while decoding
    the response: 'error'") instead of showing why."""
    with pytest.raises(InferenceServerException) as raised:
        await call(client, lambda oip: getattr(oip, method)())
    assert raised.value.status() == "404"
    assert "this server does not implement the" in raised.value.message()
    assert "extension of the Open Inference Protocol" in raised.value.message()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/models//infer"),
        ("GET", "/v2/models//nope"),
        ("GET", "/v2/models/demo//ready"),
        ("POST", "/v2//models/demo/infer"),
    ],
)
async def test_an_empty_path_segment_on_an_oip_path_is_no_redirect(
    client: Client, method: str, path: str
) -> None:
    """Merging the slashes of /v2/models//infer named another resource (the
    metadata of a model called "infer", a 308 there): an OIP 404 instead."""
    response = await client.request(method, path, json={}, allow_redirects=False)
    assert response.status == 404
    error = (await response.json())["error"]
    assert f"no route {method} {path}: an empty path segment" in error


@pytest.mark.parametrize(
    ("method", "path", "status", "said"),
    [
        ("GET", "/v2/models/demo/versions/%2F", 404, "has no version '/'"),
        ("GET", "/v2/models/demo/versions/1%2F2/ready", 404, "has no version '1/2'"),
        ("POST", "/v2/models/demo/versions/%2F/infer", 404, "has no version '/'"),
        ("GET", "/v2/models/demo/versions/%2F/infer", 405, "it takes POST"),
    ],
)
async def test_an_encoded_slash_in_an_oip_path_segment_is_an_oip_error(
    client: Client, method: str, path: str, status: int, said: str
) -> None:
    """A ``%2F`` is routed as part of its segment (a version named "/"), so
    the answer is that route's, as OIP shapes errors: ``{"error": ...}``,
    not ``{"message": ...}`` (the path was matched decoded, where the
    segment reads as two, or as an empty one: "an empty path segment")."""
    url = URL(path, encoded=True)
    response = await client.request(method, url, json={}, allow_redirects=False)
    assert response.status == status
    body = await response.json()
    assert set(body) == {"error"}, body
    assert said in body["error"]


async def test_a_deepaas_path_with_doubled_slashes_is_still_redirected(
    client: Client,
) -> None:
    """As DEEPaaS 2.x answered (aiohttp's normalize_path_middleware); a
    served model's document (its ``self`` link, an OIP path too) as well."""
    for target, location in [
        ("/v2//models/", "/v2/models/"),
        ("/v2//models/demo", "/v2/models/demo"),
        ("/v2//", "/v2/"),
    ]:
        response = await client.get(target, allow_redirects=False)
        assert response.status == 308, target
        assert response.headers["Location"] == location


async def test_a_refused_preflight_on_an_oip_path_is_an_oip_error(
    make_client: MakeClient,
) -> None:
    """The front door answers a preflight before any route: its refusal was
    ``{"message": ...}`` on OIP paths too."""
    cors = await make_client([DEMO], cors_origin=("https://app.example",))
    headers = {
        "Origin": "https://elsewhere.example",
        "Access-Control-Request-Method": "POST",
    }
    oip = await cors.options("/v2/models/demo/infer", headers=headers)
    assert oip.status == 403
    assert "may not call this API" in (await oip.json())["error"]
    deepaas = await cors.options("/v2/models/demo/predict/", headers=headers)
    assert deepaas.status == 403
    assert set(await deepaas.json()) == {"message"}


async def test_a_body_declared_over_the_limit_is_an_oip_413(client: Client) -> None:
    """Refused before it is read (the connection is closed after), as
    ``{"error": ...}``."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 413 ")
        body = await asyncio.wait_for(reader.read(), 10)  # then closed
        assert set(json.loads(body)) == {"error"}
    finally:
        writer.close()


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/demo/train/nosuch",  # an id of letters: no OIP action
        "/v2/models/demo/train/nosuch/logs",
        "/v2/models/demo/train/nosuch/metrics",
        "/v2/models/demo/train/0123456789abcdef0123456789abcdef",
    ],
)
async def test_a_deepaas_training_path_answers_deepaas_errors(
    client: Client, path: str
) -> None:
    """``.../train/<uuid>`` has no final ``/``: an id of letters once
    matched the OIP action paths, and its 404 was ``{"error": ...}``."""
    for method in ("GET", "DELETE") if path.count("/") == 5 else ("GET",):
        response = await client.request(method, path)
        assert response.status == 404, (method, path)
        assert set(await response.json()) == {"message"}, (method, path)


async def test_a_misspelt_oip_action_is_still_an_oip_error(client: Client) -> None:
    response = await client.post("/v2/models/demo/infr", json={})
    assert response.status in (404, 405)
    assert set(await response.json()) == {"error"}
