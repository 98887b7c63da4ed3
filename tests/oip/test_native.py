"""Tensor-native plugins (``get_infer_signature()`` and ``infer(**arrays)``)
over OIP, against a real server (real workers), called by tritonclient.http
and by hand for the requests it would not send.

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

from deepaas.oip import HEADER_LENGTH
from tests.oip.support import request_body
from tests.support import (
    Client,
    MakeClient,
    listdir,
    plugin_spec,
    predict,
    server_tmp_dir,
    wait_for,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

KINDS = plugin_spec("tensor_kinds")
BATCHER = plugin_spec("tensor_batcher")
T = TypeVar("T")
TEXT = "h\u00e9"  # not ASCII


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    started = await make_client([KINDS, BATCHER])

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


def tensor(
    name: str, array: np.ndarray, datatype: str, binary: bool
) -> triton.InferInput:
    inp = triton.InferInput(name, list(array.shape), datatype)
    inp.set_data_from_numpy(array, binary_data=binary)
    return inp


def kinds_inputs(binary: bool, width: int = 3) -> list[triton.InferInput]:
    return [
        tensor(
            "a", np.arange(2 * width, dtype=np.float32).reshape(2, -1), "FP32", binary
        ),
        tensor("i", np.array([-5, 2**40], dtype=np.int64), "INT64", binary),
        tensor("s", np.array([b"ab", TEXT.encode()], dtype=object), "BYTES", binary),
        tensor("h", np.array([0.5, -2.0, 65504.0], dtype=np.float16), "FP16", binary),
        tensor("b", np.array([True, False]), "BOOL", binary),
    ]


async def post_infer(
    client: Client, document: dict[str, Any], model: str = "tensor_kinds"
) -> tuple[int, dict[str, Any]]:
    response = await client.post(f"/v2/models/{model}/infer", json=document)
    return response.status, await response.json()


# -- metadata --------------------------------------------------------------------


async def test_metadata_comes_from_the_signature(client: Client) -> None:
    metadata = await call(client, lambda c: c.get_model_metadata("tensor_kinds"))
    assert metadata["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [2, -1]},
        {"name": "i", "datatype": "INT64", "shape": [-1]},
        {"name": "s", "datatype": "BYTES", "shape": [-1]},
        {"name": "h", "datatype": "FP16", "shape": [-1]},
        {"name": "b", "datatype": "BOOL", "shape": [-1]},
    ]
    assert [o["name"] for o in metadata["outputs"]] == [
        "a2",
        "i1",
        "upper",
        "h",
        "nb",
        "writable",
    ]
    # With a batch axis, it is shown first, as -1 (Triton's metadata does so).
    batcher = await call(client, lambda c: c.get_model_metadata("tensor_batcher", "1"))
    assert batcher["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
    assert batcher["outputs"][1] == {
        "name": "rows",
        "datatype": "INT64",
        "shape": [-1, 1],
    }


async def test_openapi_describes_the_signature(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    operation = document["paths"]["/v2/models/tensor_batcher/infer"]["post"]
    assert "infer()" in operation["description"]
    assert "| `x` | FP32 | [-1, -1] |" in operation["description"]
    example = operation["requestBody"]["content"]["application/json"]["example"]
    assert example["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [0]}
    ]


# -- infer -----------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
async def test_infer_gets_and_returns_arrays_of_each_datatype(
    client: Client, binary: bool
) -> None:
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("a2", "i1", "upper", "h", "nb", "writable")
    ]
    result = await call(
        client, lambda c: c.infer("tensor_kinds", kinds_inputs(binary), outputs=outputs)
    )
    a2 = result.as_numpy("a2")
    assert a2.dtype == np.float32 and a2.tolist() == [[0, 2, 4], [6, 8, 10]]
    i1 = result.as_numpy("i1")
    assert i1.dtype == np.int64 and i1.tolist() == [-4, 2**40 + 1]
    upper = [v.encode() if isinstance(v, str) else v for v in result.as_numpy("upper")]
    assert upper == [b"AB", TEXT.encode().upper()]  # bytes.upper: ASCII only
    h = result.as_numpy("h")
    assert h.dtype == np.float16 and h.tolist() == [0.5, -2.0, 65504.0]
    assert result.as_numpy("nb").tolist() == [False, True]
    # The plugin may change its arrays in place: it got writable ones.
    assert result.as_numpy("writable").tolist() == [True]
    for name in ("a2", "i1", "upper", "h", "nb"):
        output = result.get_output(name)
        assert ("data" not in output) is binary


async def test_a_big_binary_tensor_reaches_infer_intact(client: Client) -> None:
    big = np.random.default_rng(1).random((2, 300_000), dtype=np.float32)
    inputs = kinds_inputs(True)
    inputs[0] = tensor("a", big, "FP32", True)
    outputs = [triton.InferRequestedOutput("a2", binary_data=True)]
    result = await call(
        client, lambda c: c.infer("tensor_kinds", inputs, outputs=outputs)
    )
    assert np.array_equal(result.as_numpy("a2"), big * 2)


async def test_no_temporary_file_is_written(client: Client) -> None:
    before = listdir(server_tmp_dir(client))
    big = np.ones((2, 100_000), dtype=np.float32)
    inputs = kinds_inputs(True)
    inputs[0] = tensor("a", big, "FP32", True)
    await call(client, lambda c: c.infer("tensor_kinds", inputs))
    assert listdir(server_tmp_dir(client)) == before == []


async def test_the_predict_route_stays_the_plugins_predict(client: Client) -> None:
    body = await predict(client, "tensor_kinds", params={"x": 7})
    assert body == {"status": "OK", "predictions": {"predicted": 7}}


async def test_a_request_with_a_batch_dimension_is_one_call(client: Client) -> None:
    x = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32)
    result = await call(
        client, lambda c: c.infer("tensor_batcher", [tensor("x", x, "FP32", True)])
    )
    assert result.as_numpy("y").tolist() == (x * 10).tolist()
    assert result.as_numpy("rows").tolist() == [[3], [3], [3]]  # one call of 3


async def test_infer_metrics_have_the_infer_endpoint(client: Client) -> None:
    x = np.ones((1, 2), dtype=np.float32)
    inputs = [tensor("x", x, "FP32", False)]
    await call(client, lambda c: c.infer("tensor_batcher", inputs))
    metrics = await (await client.get("/metrics")).text()
    assert 'model="tensor_batcher"' in metrics
    lines = [line for line in metrics.splitlines() if 'model="tensor_batcher"' in line]
    assert any('endpoint="infer"' in line for line in lines)


# -- errors ----------------------------------------------------------------------


def x_input(shape: list[int], datatype: str = "FP32", name: str = "x") -> dict:
    count = int(np.prod(shape))
    data: list[Any] = [1] * count if datatype != "BOOL" else [True] * count
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            [x_input([1, 2]), x_input([1], "INT64", "k")],
            "model 'tensor_batcher' has no input 'k'; its inputs: 'x' (FP32 [-1, -1])",
        ),
        ([], "model 'tensor_batcher' needs input(s) 'x' (FP32 [-1, -1])"),
        ([x_input([1, 2], "FP64")], "input 'x' is FP32, not FP64; send it as FP32"),
        (
            [x_input([2])],
            "input 'x' must have shape [-1, -1] (-1: any size), got [2] (axis 0 is "
            "the batch)",
        ),
        (
            [x_input([5, 2])],
            "input 'x' has 5 rows (axis 0), more than the max_batch_size of model "
            "'tensor_batcher' (4); send at most 4 rows per request",
        ),
    ],
)
async def test_a_request_off_the_signature_is_a_400(
    client: Client, inputs: list[dict], message: str
) -> None:
    status, body = await post_infer(client, {"inputs": inputs}, "tensor_batcher")
    assert (status, body) == (400, {"error": message})


async def test_an_output_the_model_does_not_have_is_a_400_before_it_runs(
    client: Client,
) -> None:
    status, body = await post_infer(
        client,
        {"inputs": [x_input([1, 2])], "outputs": [{"name": "z"}]},
        "tensor_batcher",
    )
    assert status == 400
    assert body["error"].startswith("model 'tensor_batcher' has no output 'z'")


async def test_tritonclient_sees_the_400_message(client: Client) -> None:
    x = np.ones((1, 2), dtype=np.float64)
    with pytest.raises(InferenceServerException) as exc:
        await call(
            client, lambda c: c.infer("tensor_batcher", [tensor("x", x, "FP64", True)])
        )
    assert "input 'x' is FP32, not FP64" in str(exc.value)


async def test_wrong_rows_returned_are_a_500_naming_the_model(client: Client) -> None:
    status, body = await post_infer(
        client, {"inputs": [x_input([3, 2]) | {"data": [-9] * 6}]}, "tensor_batcher"
    )
    assert status == 500
    assert body == {
        "error": "model 'tensor_batcher': infer() returned 2 rows in output 'y' for "
        "3 input rows; return one row per input row, in their order"
    }


async def test_infer_raising_is_a_500_and_the_worker_serves_on(client: Client) -> None:
    status, body = await post_infer(
        client, {"inputs": [x_input([1, 2]) | {"data": [-8, 0]}]}, "tensor_batcher"
    )
    assert (status, body) == (500, {"error": "ValueError: the model refused -8"})
    document = {"inputs": [x_input([1, 2])]}
    assert (await post_infer(client, document, "tensor_batcher"))[0] == 200


async def test_a_binary_body_off_the_signature_is_a_400(client: Client) -> None:
    body, length = request_body({"x": np.ones((1, 2, 2), np.float32)}, True)
    response = await client.post(
        "/v2/models/tensor_batcher/infer",
        data=body,
        headers={HEADER_LENGTH: str(length)},
    )
    assert response.status == 400
    assert "must have shape [-1, -1]" in json.loads(await response.read())["error"]
