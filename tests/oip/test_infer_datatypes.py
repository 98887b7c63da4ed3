"""Every OIP datatype through tritonclient.http's ``infer`` to a DEEPaaS
plugin, in JSON and as binary data, against a real server (real workers).

A plugin's inputs are its marshmallow fields (docs/oip.md): a ``List(Int)``
takes any INT/UINT datatype, a ``List(Float)`` any FP one, a ``Bool``
BOOL, a file BYTES. Each datatype goes to the input that takes it, edge
values included, and reaches ``predict()`` as the DEEPaaS route gives the
same values; sent to an input that does not take it, it is a 400 saying
what the input is. Values out of the datatype's range are 400s naming the
range (never Python's own words).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.oip.support import ALL_TYPES, FP_TYPES, INT_TYPES, sample
from tests.support import Client, MakeClient, plugin_spec, predict, wait_for

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

OIP_KINDS = plugin_spec("oip_kinds")
T = TypeVar("T")

#: The oip_kinds input each datatype goes to.
TAKES = {
    **{datatype: "il" for datatype in INT_TYPES},  # List(Int)
    **{datatype: "fl" for datatype in FP_TYPES},  # List(Float)
    "BOOL": "b",  # Bool
    "BYTES": "up",  # a file
}

#: An input that does not take each datatype, and what it is.
REFUSES = {
    **{datatype: ("b", "BOOL [1]") for datatype in ALL_TYPES if datatype != "BOOL"},
    "BOOL": ("i", "INT64 [1]"),
}


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    started = await make_client([OIP_KINDS])

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
    name: str, datatype: str, array: np.ndarray, binary: bool
) -> triton.InferInput:
    inp = triton.InferInput(name, list(array.shape), datatype)
    inp.set_data_from_numpy(array, binary_data=binary)
    return inp


def one_int(value: int = 0) -> triton.InferInput:
    """The required input ``i``."""
    return tensor("i", "INT64", np.array([value], dtype=np.int64), False)


def values_for(datatype: str, binary: bool) -> np.ndarray:
    """What to send to the input that takes ``datatype``: the datatype's
    edge values for a list; one value for BOOL; for a file, any bytes in
    binary, UTF-8 text in JSON (which carries text only)."""
    if datatype == "BOOL":
        return np.array([True])
    if datatype == "BYTES":
        data = np.empty(1, dtype=object)
        data[0] = b"\x00\xff\xfe raw" if binary else "héllo 日本\x00".encode()
        return data
    return sample(datatype, (6,))


async def got_of(
    client: Client, inputs: list[triton.InferInput], binary: bool
) -> dict[str, Any]:
    """What predict received (the plugin's ``got`` output)."""
    outputs = [triton.InferRequestedOutput("got", binary_data=binary)]
    result = await call(client, lambda c: c.infer("oip_kinds", inputs, outputs=outputs))
    got = json.loads(result.as_numpy("got")[0])
    assert isinstance(got, dict)
    return got


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", ALL_TYPES)
async def test_each_datatype_reaches_predict(
    client: Client, datatype: str, binary: bool
) -> None:
    name = TAKES[datatype]
    array = values_for(datatype, binary)
    got = await got_of(
        client, [one_int(), tensor(name, datatype, array, binary)], binary
    )
    if datatype == "BYTES":
        assert got[name] == ["str", array[0].decode("latin-1")]  # the file's bytes
        form = aiohttp.FormData()
        form.add_field("i", "0")
        form.add_field("up", array[0], filename="up")
        deepaas = await predict(client, "oip_kinds", data=form)
    else:
        expected = array.astype(float if datatype in FP_TYPES else object).tolist()
        value = expected if name != "b" else expected[0]
        assert got[name] == [type(value).__name__, value]
        deepaas = await predict(client, "oip_kinds", json={"i": 0, name: value})
    # The same values through the DEEPaaS route: the same arguments.
    assert deepaas["predictions"]["got"][name] == got[name]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", ALL_TYPES)
async def test_each_datatype_refused_where_the_field_does_not_take_it(
    client: Client, datatype: str, binary: bool
) -> None:
    name, is_ = REFUSES[datatype]
    array = values_for(datatype, binary)[:1]
    inputs = [tensor(name, datatype, array, binary)]
    if name != "i":
        inputs.insert(0, one_int())
    with pytest.raises(InferenceServerException) as caught:
        await call(client, lambda c: c.infer("oip_kinds", inputs))
    assert caught.value.status() == "400"
    assert caught.value.message().startswith(f"input '{name}' is {is_}, not {datatype}")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_fp_and_bytes_refused_by_an_int_list(
    client: Client, binary: bool
) -> None:
    for datatype in (*FP_TYPES, "BYTES"):
        inputs = [
            one_int(),
            tensor("il", datatype, values_for(datatype, binary), binary),
        ]
        with pytest.raises(InferenceServerException) as caught:
            await call(client, lambda c, inputs=inputs: c.infer("oip_kinds", inputs))
        assert caught.value.status() == "400"
        assert caught.value.message().startswith(
            f"input 'il' is INT64 [-1], not {datatype} (also accepted: INT16, "
        )


# -- values out of range, in JSON ----------------------------------------------------


async def post_infer(client: Client, body: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post("/v2/models/oip_kinds/infer", data=body)
    return response.status, await response.json()


def body_with(name: str, datatype: str, literal: str) -> bytes:
    """An infer request for oip_kinds: ``i`` = 0 (unless ``name`` is ``i``)
    and input ``name`` of one JSON value, written as ``literal``."""
    inputs = (
        []
        if name == "i"
        else ['{"name": "i", "datatype": "INT64", "shape": [1], "data": [0]}']
    )
    inputs.append(
        f'{{"name": "{name}", "datatype": "{datatype}", "shape": [1], '
        f'"data": [{literal}]}}'
    )
    return ('{"inputs": [' + ", ".join(inputs) + "]}").encode()


@pytest.mark.parametrize(
    ("name", "datatype", "literal", "says"),
    [
        (
            "i",
            "INT64",
            "9" * 5000,
            (
                "input 'i': element 0 is an integer of 5000 digits, outside INT64's "
                "range -9223372036854775808..9223372036854775807"
            ),
        ),
        (
            "il",
            "UINT64",
            "-" + "9" * 5000,
            "input 'il': element 0 is an integer of 5000 digits, outside UINT64's",
        ),
        (
            "fl",
            "FP64",
            "9" * 5000,
            "input 'fl': element 0 is an integer of 5000 digits, outside FP64's range",
        ),
        ("il", "UINT8", "300", "input 'il': element 0 is 300, outside UINT8's range"),
        ("il", "INT8", "-129", "input 'il': element 0 is -129, outside INT8's range"),
        (
            "fl",
            "FP16",
            "1e6",
            "input 'fl': element 0 is 1000000.0, outside FP16's range (largest 65504",
        ),
        ("fl", "FP64", "1e400", "input 'fl': element 0 is a number, outside FP64's"),
        ("il", "INT32", "NaN", "input 'il': element 0 is nan, but INT32 needs an"),
        ("b", "BOOL", "Infinity", "input 'b': element 0 is inf, but BOOL needs true"),
    ],
)
async def test_out_of_range_values_are_400_naming_the_range(
    client: Client, name: str, datatype: str, literal: str, says: str
) -> None:
    status, answer = await post_infer(client, body_with(name, datatype, literal))
    assert status == 400, answer
    assert set(answer) == {"error"}
    assert answer["error"] == says or answer["error"].startswith(says)
    assert "sys.set_int_max_str_digits" not in answer["error"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_reach_the_plugins_float_field(
    client: Client, literal: str
) -> None:
    """In every FP range (as Triton writes them), so the tensor is read;
    the plugin's Float field then refuses them as it refuses them on the
    DEEPaaS route (marshmallow's allow_nan=False): a 400 with its message."""
    status, answer = await post_infer(client, body_with("fl", "FP64", literal))
    assert status == 400, answer
    assert json.loads(answer["error"]) == {
        "fl": {"0": ["Special numeric values (nan or infinity) are not permitted."]}
    }
