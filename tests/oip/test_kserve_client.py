"""KServe's own Python client, ``kserve.InferenceRESTClient`` (protocol v2,
async over httpx), against a real ``deepaas-run`` serving the example
plugin ``demo`` and ``tests/plugins/oip_kinds.py``.

The client has calls for health and infer only; the metadata documents
(``GET /v2``, ``/v2/models/<m>``) are fetched with httpx, as its calls do,
and read with KServe's own response models
(``kserve.protocol.rest.v2_datamodels``, what KServe's model server answers
with), so that they are checked against KServe's reading of the protocol.

What this client does differently from tritonclient, all on its side: it
always sends a request ``id`` (a uuid) and a ``model_name`` key; it will not
send FP16 as JSON; it turns binary outputs into JSON-like ``data`` when
reading them, so a BYTES output must be UTF-8 (PNG bytes cannot be read);
and ``InferResponse.from_bytes`` drops ``model_version``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

try:
    import httpx
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import InferResponse, RequestedOutput
    from kserve.protocol.rest import v2_datamodels as kserve_models
except ImportError:
    if sys.version_info < (3, 14):
        raise  # in the tests extra: `make install`
    pytest.skip("no kserve release supports Python 3.14 yet", allow_module_level=True)

from tests.deepaas_run import DeepaasRun, closed_at_end, register_plugins

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeepaasRun]:
    """``deepaas-run`` serving ``demo`` (the installed example) and
    ``oip_kinds``, ready (every model has a warm worker)."""
    tmp_path: Path = tmp_path_factory.mktemp("kserve")
    root = tmp_path / "plugins"
    register_plugins(
        root, "deepaas_test_kserve", {"oip_kinds": "tests.plugins.oip_kinds"}
    )
    with closed_at_end(functools.partial(DeepaasRun, tmp_path, path=[root])) as start:
        started = start(
            "--model-name",
            "demo,oip_kinds",
            "--state-dir",
            str(tmp_path / "state"),
            "--devices",
            "cpu",
        )
        yield started.wait_ready()


@pytest_asyncio.fixture
async def kserve_client() -> AsyncIterator[InferenceRESTClient]:
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as client:
        yield client


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def from_numpy(name: str, array: np.ndarray, binary: bool) -> InferInput:
    """An input as KServe's client builds one from a numpy array."""
    datatype = {
        np.dtype(bool): "BOOL",
        np.dtype(np.int64): "INT64",
        np.dtype(np.int32): "INT32",
        np.dtype(np.float16): "FP16",
        np.dtype(np.float32): "FP32",
        np.dtype(np.float64): "FP64",
        np.dtype(object): "BYTES",
    }[array.dtype]
    tensor = InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def texts(*values: str | bytes) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode() if isinstance(v, str) else v for v in values]
    return array


def outputs_of(response: InferResponse) -> dict[str, np.ndarray]:
    return {output.name: output.as_numpy() for output in response.outputs}


async def infer(
    client: InferenceRESTClient,
    server: DeepaasRun,
    model: str,
    inputs: list[InferInput],
    outputs: list[RequestedOutput] | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> InferResponse:
    request = InferRequest(
        model, inputs, request_id=request_id, request_outputs=outputs
    )
    response = await client.infer(
        server.url, request, model_name=model, response_headers=headers
    )
    assert isinstance(response, InferResponse)
    return response


async def refused(
    client: InferenceRESTClient,
    server: DeepaasRun,
    model: str,
    inputs: list[InferInput],
) -> tuple[int, str]:
    """The status and the text of the error KServe's client raises."""
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await infer(client, server, model, inputs)
    response = caught.value.response
    assert set(response.json()) == {"error"}
    # The client puts our {"error": ...} in its message (it reads it only
    # from a Content-Type of exactly application/json).
    assert response.json()["error"] in str(caught.value)
    return response.status_code, response.json()["error"]


# -- health and metadata -----------------------------------------------------------


async def test_server_live_and_ready(
    kserve_client: InferenceRESTClient, server: DeepaasRun, http: httpx.AsyncClient
) -> None:
    assert await kserve_client.is_server_live(server.url) is True
    assert await kserve_client.is_server_ready(server.url) is True
    live = await http.get(f"{server.url}/v2/health/live")
    assert kserve_models.ServerLiveResponse.model_validate(live.json()).live
    ready = await http.get(f"{server.url}/v2/health/ready")
    assert kserve_models.ServerReadyResponse.model_validate(ready.json()).ready


async def test_server_metadata_reads_as_kserve_server_metadata(
    server: DeepaasRun, http: httpx.AsyncClient
) -> None:
    answer = await http.get(f"{server.url}/v2")
    assert answer.status_code == 200
    metadata = kserve_models.ServerMetadataResponse.model_validate(answer.json())
    assert metadata.name == "deepaas"
    assert metadata.version
    assert "binary_tensor_data" in metadata.extensions


async def test_model_ready(
    kserve_client: InferenceRESTClient, server: DeepaasRun, http: httpx.AsyncClient
) -> None:
    assert await kserve_client.is_model_ready(server.url, "demo") is True
    assert await kserve_client.is_model_ready(server.url, "oip_kinds") is True
    assert await kserve_client.is_model_ready(server.url, "nope") is False
    answer = await http.get(f"{server.url}/v2/models/demo/ready")
    ready = kserve_models.ModelReadyResponse.model_validate(answer.json())
    assert (ready.name, ready.ready) == ("demo", True)


@pytest.mark.parametrize("path", ["/v2/models/demo", "/v2/models/demo/versions/1"])
async def test_model_metadata_reads_as_kserve_model_metadata(
    server: DeepaasRun, http: httpx.AsyncClient, path: str
) -> None:
    answer = await http.get(f"{server.url}{path}")
    assert answer.status_code == 200
    metadata = kserve_models.ModelMetadataResponse.model_validate(answer.json())
    assert metadata.name == "demo"
    assert metadata.versions == ["1"]
    assert metadata.platform
    inputs = {t.name: (t.datatype, t.shape) for t in metadata.inputs}
    assert inputs["number"] == ("INT64", [1])
    assert inputs["ratio"] == ("FP64", [1])
    assert inputs["flag"] == ("BOOL", [1])
    assert inputs["class"] == ("BYTES", [1])
    assert inputs["numbers"] == ("INT64", [-1])
    assert inputs["file"] == ("BYTES", [1])
    outputs = {t.name: t.datatype for t in metadata.outputs}
    assert outputs["score"] == "FP64"


async def test_unknown_model_metadata_is_an_oip_404(
    server: DeepaasRun, http: httpx.AsyncClient
) -> None:
    answer = await http.get(f"{server.url}/v2/models/nope")
    assert answer.status_code == 404
    assert set(answer.json()) == {"error"}


# -- infer ---------------------------------------------------------------------------


async def test_infer_json_tensors_as_lists(
    kserve_client: InferenceRESTClient, server: DeepaasRun
) -> None:
    """Tensors given as Python lists (``InferInput(..., data=[...])``, the
    style of KServe's examples) travel as JSON ``data``."""
    inputs = [
        InferInput("i", [1], "INT64", data=[3]),
        InferInput("f", [1], "FP64", data=[2.0]),
        InferInput("b", [1], "BOOL", data=[True]),
        InferInput("s", [1], "BYTES", data=["y"]),
        InferInput("fl", [2], "FP32", data=[0.5, 1.5]),
        InferInput("il", [3], "INT32", data=[1, 2, 3]),
        InferInput("d", [1], "BYTES", data=[json.dumps({"k": [1, 2]})]),
    ]
    headers: dict[str, str] = {}
    response = await infer(
        kserve_client, server, "oip_kinds", inputs, request_id="r-1", headers=headers
    )
    assert response.id == "r-1"
    assert "inference-header-content-length" not in headers  # JSON only
    got = outputs_of(response)
    assert got["total"].tolist() == [3 * 2.0 + 2.0 + 6]
    assert got["flag"].tolist() == [True]
    assert json.loads(got["got"][0]) == {
        "i": ["int", 3],
        "f": ["float", 2.0],
        "b": ["bool", True],
        "s": ["str", "y"],
        "fl": ["list", [0.5, 1.5]],
        "il": ["list", [1, 2, 3]],
        "d": ["dict", {"k": [1, 2]}],
    }


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_infer_numpy_tensors(
    kserve_client: InferenceRESTClient, server: DeepaasRun, binary: bool
) -> None:
    """Tensors set from numpy, as JSON or as binary data (the binary tensor
    data extension, FP16 and BYTES included; KServe's client sends FP16 in
    binary only), outputs asked the same way."""
    fl = np.array([0.5, -2.25, 65504.0], dtype=np.float16 if binary else np.float32)
    inputs = [
        from_numpy("i", np.array([7], dtype=np.int64), binary),
        from_numpy("f", np.array([0.5]), binary),
        from_numpy("b", np.array([False]), binary),
        from_numpy("s", texts("z"), binary),
        from_numpy("fl", fl, binary),
        from_numpy("il", np.array([-(2**31), 2**31 - 1], dtype=np.int32), binary),
    ]
    wanted = [
        RequestedOutput(name, {"binary_data": binary})
        for name in ("total", "flag", "got")
    ]
    headers: dict[str, str] = {}
    response = await infer(
        kserve_client, server, "oip_kinds", inputs, wanted, headers=headers
    )
    assert ("inference-header-content-length" in headers) is binary
    got = outputs_of(response)
    assert got["total"].dtype == np.float64
    assert got["total"].tolist() == [7 * 0.5 + float(fl.astype(float).sum()) - 1]
    assert got["flag"].tolist() == [False]
    assert json.loads(got["got"][0]) == {
        "i": ["int", 7],
        "f": ["float", 0.5],
        "b": ["bool", False],
        "s": ["str", "z"],
        "fl": ["list", fl.astype(float).tolist()],
        "il": ["list", [-(2**31), 2**31 - 1]],
    }
    assert [o.name for o in response.outputs] == ["total", "flag", "got"]


async def test_binary_data_output_for_every_output(
    kserve_client: InferenceRESTClient, server: DeepaasRun
) -> None:
    """The request parameter ``binary_data_output``: every output (none
    named) comes back as binary data, and KServe's client reads them."""
    request = InferRequest(
        "demo",
        [InferInput("number", [1], "INT64", data=[3])],
        parameters={"binary_data_output": True},
    )
    headers: dict[str, str] = {}
    response = await kserve_client.infer(
        server.url, request, model_name="demo", response_headers=headers
    )
    assert isinstance(response, InferResponse)
    assert "inference-header-content-length" in headers
    got = outputs_of(response)
    assert set(got) == {"model", "warmed", "score", "received", "args"}
    assert got["score"].tolist() == [1.5]
    assert json.loads(got["args"][0])["number"] == 3


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_bytes_inputs_text_json_and_a_file(
    kserve_client: InferenceRESTClient, server: DeepaasRun, binary: bool
) -> None:
    """BYTES inputs: a string, JSON text for a Dict argument, and a file
    (an ``UploadedFile`` in predict; any bytes when binary, UTF-8 text in
    JSON)."""
    upload = b"\x00\xff\x89PNG binary\n" if binary else "héllo, 日本\n".encode()
    inputs = [
        from_numpy("i", np.array([1], dtype=np.int64), binary),
        from_numpy("s", texts("x"), binary),
        from_numpy("d", texts('{"é": [null, true]}'), binary),
        from_numpy("up", texts(upload), binary),
    ]
    response = await infer(kserve_client, server, "oip_kinds", inputs)
    got = json.loads(outputs_of(response)["got"][0])
    assert got["s"] == ["str", "x"]
    assert got["d"] == ["dict", {"é": [None, True]}]
    assert got["up"] == ["str", upload.decode("latin-1")]


async def test_infer_by_version_path(
    kserve_client: InferenceRESTClient, server: DeepaasRun
) -> None:
    """KServe's client puts the model name in the path as it is:
    ``demo/versions/1`` reaches the versioned infer route."""
    inputs = [InferInput("number", [1], "INT64", data=[10])]
    response = await infer(kserve_client, server, "demo/versions/1", inputs)
    assert outputs_of(response)["score"].tolist() == [5.0]


async def test_infer_response_reads_as_kserve_inference_response(
    server: DeepaasRun, http: httpx.AsyncClient
) -> None:
    """The JSON body as KServe's model server's response model reads it
    (its ``id`` is required there: the request's id comes back)."""
    request = InferRequest(
        "demo", [InferInput("number", [1], "INT64", data=[4])], request_id="abc"
    )
    body, length = request.to_rest()
    assert length is None and isinstance(body, dict)
    answer = await http.post(f"{server.url}/v2/models/demo/infer", json=body)
    assert answer.status_code == 200, answer.text
    response = kserve_models.InferenceResponse.model_validate(answer.json())
    assert (response.id, response.model_name) == ("abc", "demo")
    assert response.model_version == "1"


# -- errors ----------------------------------------------------------------------------


async def test_unknown_model_is_404(
    kserve_client: InferenceRESTClient, server: DeepaasRun
) -> None:
    inputs = [InferInput("i", [1], "INT64", data=[1])]
    status, error = await refused(kserve_client, server, "nope", inputs)
    assert status == 404
    assert "'nope'" in error


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_wrong_shape_is_400(
    kserve_client: InferenceRESTClient, server: DeepaasRun, binary: bool
) -> None:
    inputs = [from_numpy("i", np.array([1, 2], dtype=np.int64), binary)]
    status, error = await refused(kserve_client, server, "oip_kinds", inputs)
    assert status == 400
    assert error == "input 'i' takes one value (shape [1]); got shape [2]"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_wrong_datatype_is_400(
    kserve_client: InferenceRESTClient, server: DeepaasRun, binary: bool
) -> None:
    inputs = [from_numpy("i", np.array([1.0], dtype=np.float32), binary)]
    status, error = await refused(kserve_client, server, "oip_kinds", inputs)
    assert status == 400
    assert error.startswith("input 'i' is INT64 [1], not FP32 (also accepted: ")


async def test_unknown_datatype_is_400(
    kserve_client: InferenceRESTClient, server: DeepaasRun
) -> None:
    inputs = [InferInput("i", [1], "FLOAT32", data=[1.0])]
    status, error = await refused(kserve_client, server, "oip_kinds", inputs)
    assert status == 400
    assert error.startswith("input 'i': unknown datatype 'FLOAT32'; use one of BOOL")


# -- the example plugin, both ways ---------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_demo_answers_kserve_as_it_answers_predict(
    kserve_client: InferenceRESTClient,
    server: DeepaasRun,
    http: httpx.AsyncClient,
    binary: bool,
) -> None:
    """The example plugin called through KServe's client and through the
    DEEPaaS predict route with the same arguments: the same answer."""
    arguments: dict[str, Any] = {
        "number": 40,
        "ratio": 0.25,
        "flag": True,
        "text": "héllo",
        "numbers": [5, 6, 7],
        "class": "dog",
        "choice": "b",
    }
    inputs = [
        from_numpy("number", np.array([40], dtype=np.int64), binary),
        from_numpy("ratio", np.array([0.25]), binary),
        from_numpy("flag", np.array([True]), binary),
        from_numpy("text", texts("héllo"), binary),
        from_numpy("numbers", np.array([5, 6, 7], dtype=np.int64), binary),
        from_numpy("class", texts("dog"), binary),
        from_numpy("choice", texts("b"), binary),
    ]
    response = await infer(kserve_client, server, "demo", inputs)
    got = outputs_of(response)
    predicted = await http.post(f"{server.url}/v2/models/demo/predict/", json=arguments)
    assert predicted.status_code == 200, predicted.text
    deepaas = predicted.json()
    assert got["model"].tolist() == [deepaas["model"]]
    assert got["warmed"].tolist() == [deepaas["warmed"]] == [True]
    assert got["score"].tolist() == [deepaas["score"]] == [10.0]
    assert got["received"].tolist() == deepaas["received"]
    assert json.loads(got["args"][0]) == deepaas["args"]


async def test_demo_file_both_ways(
    kserve_client: InferenceRESTClient, server: DeepaasRun, http: httpx.AsyncClient
) -> None:
    """A file: a binary BYTES input through KServe's client, a multipart
    upload through predict; predict sees the same bytes."""
    data = bytes(range(256)) * 3
    inputs = [from_numpy("file", texts(data), True)]
    response = await infer(kserve_client, server, "demo", inputs)
    through_kserve = json.loads(outputs_of(response)["args"][0])["file"]
    predicted = await http.post(
        f"{server.url}/v2/models/demo/predict/", files={"file": ("f.bin", data)}
    )
    assert predicted.status_code == 200, predicted.text
    through_predict = predicted.json()["args"]["file"]
    digest = hashlib.sha256(data).hexdigest()
    assert through_kserve["sha256"] == through_predict["sha256"] == digest
    assert through_kserve["size"] == through_predict["size"] == len(data)
    # What differs is what a multipart part names and OIP does not have.
    assert through_kserve["original_filename"] == "file"
    assert through_kserve["content_type"] == "application/octet-stream"
