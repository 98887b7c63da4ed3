"""Bodies tritonclient builds decode to the arrays it was given; bodies we
encode read back in tritonclient as the arrays we were given."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as triton

from deepaas.oip import (
    DATATYPES,
    HEADER_LENGTH,
    datatype_of,
    decode_request,
    encode_error,
    encode_response,
    parse_header_length,
)
from tests.oip.support import ALL_TYPES, parse, request_body, same, sample


def test_table_maps_every_datatype_both_ways() -> None:
    assert list(DATATYPES) == ALL_TYPES
    for name, dtype in DATATYPES.items():
        assert datatype_of(dtype) == name
        assert datatype_of(dtype.newbyteorder(">")) == name
    assert datatype_of(np.dtype("S3")) == datatype_of(np.dtype("U3")) == "BYTES"
    for other in ("complex64", "datetime64[s]", "longdouble", "V4"):
        assert datatype_of(np.dtype(other)) is None


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", ALL_TYPES)
def test_tritonclient_request_decodes(datatype: str, binary: bool) -> None:
    array = sample(datatype)
    body, header_length = request_body({"x": array}, binary)
    request = decode_request(body, header_length)
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, (2, 3))
    assert tensor.data.dtype == DATATYPES[datatype]
    assert same(array, tensor.data)
    if datatype == "BYTES":
        assert all(type(v) is bytes for v in tensor.data.ravel())


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", ALL_TYPES)
def test_response_reads_in_tritonclient(datatype: str, binary: bool) -> None:
    array = sample(datatype)
    body, headers = encode_response(
        "m", "1", "r7", {"y": array}, {"y"} if binary else ()
    )
    result = parse(body, headers)
    assert same(array, result.as_numpy("y"))
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "m",
        "1",
        "r7",
    )
    assert response["outputs"][0]["datatype"] == datatype
    assert response["outputs"][0]["shape"] == [2, 3]
    if binary:
        assert headers == {
            "Content-Type": "application/octet-stream",
            HEADER_LENGTH: headers[HEADER_LENGTH],
        }
        assert json.loads(body[: int(headers[HEADER_LENGTH])])
    else:
        assert headers == {"Content-Type": "application/json"}
        assert json.loads(body)["outputs"][0]["data"] == response["outputs"][0]["data"]


def test_every_datatype_in_one_binary_request() -> None:
    arrays = {t.lower(): sample(t, (3,)) for t in ALL_TYPES}
    body, header_length = request_body(arrays, binary=True)
    request = decode_request(body, header_length)
    assert [t.name for t in request.inputs] == list(arrays)
    for tensor, array in zip(request.inputs, arrays.values(), strict=True):
        assert same(array, tensor.data)


def test_binary_and_json_inputs_in_one_request() -> None:
    x, y = sample("FP32", (2, 2)), sample("INT64", (3,))
    tx = triton.InferInput("x", [2, 2], "FP32")
    tx.set_data_from_numpy(x, binary_data=True)
    ty = triton.InferInput("y", [3], "INT64")
    ty.set_data_from_numpy(y, binary_data=False)
    tz = triton.InferInput("z", [1], "BYTES")
    tz.set_data_from_numpy(np.array([b"\xff\x00"], dtype=object), binary_data=True)
    body, length = triton.InferenceServerClient.generate_request_body([tx, ty, tz])
    request = decode_request(memoryview(body), length)
    assert same(x, request.inputs[0].data)
    assert same(y, request.inputs[1].data)
    assert request.inputs[2].data.tolist() == [b"\xff\x00"]


def test_binary_input_is_a_read_only_view_of_the_body() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    body, header_length = request_body({"x": array}, binary=True)
    data = decode_request(body, header_length).inputs[0].data
    assert np.shares_memory(data, np.frombuffer(body, dtype=np.uint8))
    assert not data.flags.writeable
    assert np.require(data, requirements=["A", "W"]).flags.writeable


def test_nested_json_data_is_row_major() -> None:
    body = {
        "inputs": [
            {
                "name": "a",
                "shape": [2, 3],
                "datatype": "INT32",
                "data": [[1, 2, 3], [4, 5, 6]],
            },
            {
                "name": "b",
                "shape": [2, 1, 2],
                "datatype": "FP32",
                "data": [[[1, 2]], [[3, 4.5]]],
            },
            {"name": "c", "shape": [2, 0], "datatype": "BOOL", "data": [[], []]},
            {"name": "d", "shape": [0, 3], "datatype": "BYTES", "data": []},
            {"name": "e", "shape": [], "datatype": "FP64", "data": [2.5]},
        ]
    }
    a, b, c, d, e = decode_request(json.dumps(body).encode(), None).inputs
    assert a.data.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert b.data.tolist() == [[[1.0, 2.0]], [[3.0, 4.5]]]
    assert c.data.shape == (2, 0) and c.data.dtype == bool
    assert d.data.shape == (0, 3) and d.data.dtype == object
    assert e.data.shape == () and e.data.item() == 2.5


def test_json_nan_and_infinity_literals_are_read_for_floats() -> None:
    array = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)
    body, length = request_body({"x": array}, binary=False)  # rapidjson writes NaN
    assert b"NaN" in body and b"-Infinity" in body
    assert same(array, decode_request(body, length).inputs[0].data)


def test_json_strings_are_utf8_bytes() -> None:
    body = (
        b'{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES",'
        b'"data":["h\\u00e9","\xe6\x97\xa5"]}]}'
    )
    assert decode_request(body, None).inputs[0].data.tolist() == [
        "hé".encode(),
        "日".encode(),
    ]


def test_request_fields_are_kept() -> None:
    outputs = [
        triton.InferRequestedOutput("p", binary_data=True),
        triton.InferRequestedOutput("q", binary_data=False),
    ]
    body, length = request_body(
        {"x": sample("INT8")},
        binary=False,
        outputs=outputs,
        request_id="abc",
        parameters={"custom": 3},
    )
    request = decode_request(body, length)
    assert request.id == "abc"
    assert request.parameters == {"custom": 3}
    assert [(o.name, o.binary_data) for o in request.outputs] == [
        ("p", True),
        ("q", False),
    ]
    assert request.wants_binary("p") and not request.wants_binary("q")
    assert not request.wants_binary("other")


def test_no_outputs_named_means_all_binary_for_tritonclient() -> None:
    body, length = request_body({"x": sample("INT8")}, binary=False)
    request = decode_request(body, length)
    assert request.outputs == [] and request.binary_data_output
    assert request.wants_binary("anything")
    request = decode_request(
        b'{"inputs":[],"parameters":{"binary_data_output":true},'
        b'"outputs":[{"name":"o","parameters":{"binary_data":false}}]}',
        None,
    )
    assert not request.wants_binary("o") and request.wants_binary("p")


def test_mixed_response_with_wants_binary() -> None:
    outputs = [
        triton.InferRequestedOutput("a", binary_data=False),
        triton.InferRequestedOutput("b", binary_data=True),
    ]  # "c" not named: JSON, as binary_data_output is not set
    body, length = request_body({"x": sample("INT8")}, binary=True, outputs=outputs)
    request = decode_request(body, length)
    values = {"a": sample("FP16"), "b": sample("BYTES"), "c": sample("BOOL")}
    body, headers = encode_response("m", None, request.id, values, request.wants_binary)
    result = parse(body, headers)
    kinds = {o["name"]: "data" in o for o in result.get_response()["outputs"]}
    assert kinds == {"a": True, "b": False, "c": True}
    for name, array in values.items():
        assert same(array, result.as_numpy(name))
    assert "model_version" not in result.get_response()
    assert "id" not in result.get_response()


def test_python_values_become_tensors() -> None:
    values = {
        "int": 3,
        "float": 2.5,
        "bool": True,
        "text": "hé",
        "raw": b"\x00\xff",
        "list": [[1.5, 2.0], [3.0, 4.0]],
        "texts": ["a", "bc"],
        "raws": [b"a\x00", b"b"],
        "scalar": np.float16(1.5),
        "empty": np.zeros((0, 2), dtype=np.int16),
    }
    body, headers = encode_response("m", "1", None, values, {"raw", "raws"})
    result = parse(body, headers)
    outputs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert {n: (o["datatype"], o["shape"]) for n, o in outputs.items()} == {
        "int": ("INT64", []),
        "float": ("FP64", []),
        "bool": ("BOOL", []),
        "text": ("BYTES", []),
        "raw": ("BYTES", []),
        "list": ("FP64", [2, 2]),
        "texts": ("BYTES", [2]),
        "raws": ("BYTES", [2]),
        "scalar": ("FP16", []),
        "empty": ("INT16", [0, 2]),
    }
    assert outputs["list"]["data"] == [1.5, 2.0, 3.0, 4.0]  # flat row-major
    assert result.as_numpy("raws").tolist() == [b"a\x00", b"b"]  # NULs kept
    assert result.as_numpy("raw").item() == b"\x00\xff"
    assert outputs["text"]["data"] == ["hé"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_nan_and_infinity_outputs(binary: bool) -> None:
    array = np.array([np.nan, np.inf, -np.inf, 0.5], dtype=np.float32)
    body, headers = encode_response(
        "m", None, None, {"y": array}, {"y"} if binary else ()
    )
    got = parse(body, headers).as_numpy("y")
    if binary:  # exact: NaN, inf and -inf told apart
        assert same(array, got)
    else:  # strict JSON: null, which numpy reads as NaN in a float array
        assert b"[null,null,null,0.5]" in body
        json.loads(body, parse_constant=lambda token: pytest.fail(token))
        assert np.isnan(got[:3]).all() and got[3] == 0.5


def test_big_endian_and_strided_outputs_are_little_endian_row_major() -> None:
    array = np.arange(6, dtype=">i4").reshape(2, 3).T  # not contiguous either
    body, headers = encode_response("m", None, None, {"y": array}, {"y"})
    got = parse(body, headers).as_numpy("y")
    assert got.tolist() == array.tolist()


def test_encode_error() -> None:
    assert json.loads(encode_error("model 'x' is not known")) == {
        "error": "model 'x' is not known"
    }


def test_parse_header_length() -> None:
    assert parse_header_length(None) is None
    assert parse_header_length(" 12 ") == 12
    assert parse_header_length("0") == 0
