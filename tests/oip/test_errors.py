"""Every malformed request is a TensorError (400) saying what to change."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from deepaas.exceptions import DeepaasError, TensorError
from deepaas.oip import decode_request, encode_response, parse_header_length
from tests.oip.support import FP_TYPES, request_body, sample


def refused(body: bytes, header_length: int | None = None) -> str:
    with pytest.raises(TensorError) as caught:
        decode_request(body, header_length)
    assert caught.value.status == 400
    assert isinstance(caught.value, DeepaasError)
    return caught.value.message


def one(**fields: Any) -> bytes:
    """A request of one input: name x, shape [2], FP32 data, overridden."""
    tensor = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}
    tensor.update(fields)
    return json.dumps(
        {"inputs": [{k: v for k, v in tensor.items() if v != ...}]}
    ).encode()


# -- the document ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "the request is not valid JSON (Expecting property name"),
        (b"", "the request is not valid JSON"),
        (b'{"inputs": [\xff]}', "the request is not valid JSON"),
        (b'{"inputs": [] } trailing', "not valid JSON (Extra data"),
        (b"[1, 2]", "the request must be a JSON object with 'inputs', not a list"),
        (b'"text"', "must be a JSON object with 'inputs', not a str"),
        (b"{}", "the request needs 'inputs', a JSON array of tensors"),
        (b'{"inputs": {}}', "the request needs 'inputs', a JSON array"),
        (b'{"inputs": [], "id": 5}', "'id' must be a string, not 5"),
        (  # echoed in the response, which no strict JSON parser would read
            b'{"inputs": [], "id": "a\\ud800"}',
            "'id' must be valid Unicode text, not 'a\\ud800' (a lone surrogate)",
        ),
        (
            b'{"inputs": [], "parameters": []}',
            "the request: 'parameters' must be a JSON object",
        ),
        (
            b'{"inputs": [], "parameters": {"binary_data_output": 1}}',
            "the request: parameter 'binary_data_output' must be true or false",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "the request's JSON is nested too deeply"),
        (
            b'{"inputs": [], "id": 1' + b"0" * 5000 + b"}",
            "'id' must be a string, not an integer of 5001 digits",
        ),
        (  # longer than int() reads, where no tensor data is
            b'{"inputs": [], "parameters": {"n": -' + b"9" * 5000 + b"}}",
            "the request holds an integer of 5000 digits, in a field no integer",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [1'
            + b"0" * 5000
            + b'], "data": []}]}',
            "input 'x': shape holds an integer of 5001 digits, too large for any",
        ),
    ],
)
def test_bad_document(body: bytes, expected: str) -> None:
    assert expected in refused(body)


# -- one input's fields -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"inputs": [1]}',
            "inputs[0] must be a JSON object with name, shape, datatype",
        ),
        (one(name=...), "inputs[0] needs a 'name', a non-empty string"),
        (one(name=""), "inputs[0] needs a 'name', a non-empty string"),
        (one(name=3), "inputs[0] needs a 'name'"),
        (one(datatype=...), "input 'x' needs a 'datatype' (e.g. \"FP32\")"),
        (
            one(datatype="FLOAT32"),
            "input 'x': unknown datatype 'FLOAT32'; use one of BOOL, UINT8",
        ),
        (
            one(datatype="fp32"),
            "input 'x': unknown datatype 'fp32' (datatypes are upper case: 'FP32')",
        ),
        (one(datatype="BF16"), "input 'x': unknown datatype 'BF16'"),
        (one(datatype=None), "input 'x': unknown datatype null"),
        (one(shape=...), "input 'x' needs a 'shape', a list of integers like [1, 3]"),
        (one(shape=2), "input 'x' needs a 'shape'"),
        (one(shape=[2.0]), "input 'x': shape [2.0] must hold integers only"),
        (one(shape=[True, 2]), "input 'x': shape [true, 2] must hold integers only"),
        (
            one(shape=[-1]),
            (
                "input 'x': shape [-1] has -1; a request gives each dimension's "
                "actual size (-1 marks a variable size in model metadata only)"
            ),
        ),
        (one(shape=[2, -3]), "input 'x': shape [2, -3] has -3; a request gives"),
        (
            one(shape=[1] * 33, data=[[1]]),
            "input 'x': shape has 33 dimensions; at most 32",
        ),
        (
            one(shape=[0, 10**30], data=[]),
            (
                "input 'x': shape [0, 1000000000000000000000000000000] is too large "
                "for any tensor"
            ),
        ),
        (
            one(shape=[0, 2**40, 2**40], data=[]),
            "input 'x': shape [0, 1099511627776, 1099511627776] is too large",
        ),
        (one(parameters=[1]), "input 'x': 'parameters' must be a JSON object"),
        (
            one(data=...),
            (
                "input 'x' has no 'data'; give its values in 'data', or as binary "
                "data with parameters.binary_data_size"
            ),
        ),
        (
            one(parameters={"binary_data_size": 8}),
            "input 'x' has both 'data' and binary_data_size; send one of them",
        ),
        (
            one(data=..., parameters={"binary_data_size": "8"}),
            "input 'x': binary_data_size must be an integer",
        ),
        (
            one(data=..., parameters={"binary_data_size": True}),
            "input 'x': binary_data_size must be an integer",
        ),
        (
            one(data=..., parameters={"binary_data_size": -8}),
            "input 'x': binary_data_size cannot be negative",
        ),
        (
            one(parameters={"shared_memory_region": "r"}),
            (
                "input 'x': parameter 'shared_memory_region': the shared-memory "
                "extensions are not implemented"
            ),
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]},'
            b' {"name": "x", "shape": [1], "datatype": "INT8", "data": [2]}]}',
            "input 'x' is given twice; send each input once",
        ),
    ],
)
def test_bad_input(body: bytes, expected: str) -> None:
    assert refused(body).startswith(expected)


# -- JSON data against shape and datatype ----------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"shape": [2, 3], "data": [1, 2, 3, 4, 5]},
            "input 'x': shape [2, 3] needs 6 values, got 5",
        ),
        (
            {"shape": [2, 3], "data": [1] * 7},
            "input 'x': shape [2, 3] needs 6 values, got 7",
        ),
        ({"shape": [0], "data": [1]}, "input 'x': shape [0] needs 0 values, got 1"),
        ({"shape": [], "data": []}, "input 'x': shape [] needs 1 values, got 0"),
        ({"shape": [2], "data": 5}, "input 'x': 'data' must be a JSON array, not 5"),
        (
            {"shape": [2], "data": {"a": 1}},
            "input 'x': 'data' must be a JSON array, not an object",
        ),
        (
            {"shape": [2, 2], "data": [[1, 2], [3]]},
            "input 'x': data[1] has 1 values, but dimension 1 of shape [2, 2] is 2",
        ),
        (
            {"shape": [2, 2], "data": [[1, 2], [3, 4], [5, 6]]},
            "input 'x': data has 3 values, but dimension 0 of shape [2, 2] is 2",
        ),
        (
            {"shape": [2, 2], "data": [[1, 2], 3]},
            "input 'x': data[1] is 3, but shape [2, 2] nests 2 levels deep",
        ),
        (
            {"shape": [2, 2], "data": [[1, [2]], [3, 4]]},
            "input 'x': element 1 is an array, but FP32 needs a number",
        ),
        (
            {"shape": [4], "data": [[1, 2], [3, 4]]},
            (
                "input 'x': 'data' is nested but shape [4] has 1 dimension(s); give "
                "the values flat"
            ),
        ),
        (
            {"shape": [2, 1, 2], "data": [[1, 2], [3, 4]]},
            "input 'x': data[0] has 2 values, but dimension 1 of shape [2, 1, 2] is 1",
        ),
        (
            {"shape": [4], "data": [1, [2], 3, 4]},
            "input 'x': element 1 is an array, but FP32 needs a number",
        ),
    ],
)
def test_shape_and_data_disagree(fields: dict[str, Any], expected: str) -> None:
    assert refused(one(**fields)).startswith(expected)


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        (
            "UINT8",
            [1, 256],
            "input 'x': element 1 is 256, outside UINT8's range 0..255",
        ),
        ("UINT8", [-1, 0], "input 'x': element 0 is -1, outside UINT8's range 0..255"),
        (
            "INT8",
            [-129, 0],
            "input 'x': element 0 is -129, outside INT8's range -128..127",
        ),
        ("UINT16", [65536, 0], "outside UINT16's range 0..65535"),
        ("INT16", [0, 32768], "outside INT16's range -32768..32767"),
        ("UINT32", [2**32, 0], "outside UINT32's range 0..4294967295"),
        ("INT32", [0, -(2**31) - 1], "outside INT32's range"),
        (
            "UINT64",
            [-1, 0],
            (
                "input 'x': element 0 is -1, outside UINT64's range "
                "0..18446744073709551615"
            ),
        ),
        ("UINT64", [2**64, 0], "outside UINT64's range"),
        (
            "INT64",
            [2**63, 0],
            "input 'x': element 0 is 9223372036854775808, outside INT64's range",
        ),
        ("INT32", [1, 1.5], "input 'x': element 1 is 1.5, but INT32 needs an integer"),
        ("INT32", [1.0, 1], "input 'x': element 0 is 1.0, but INT32 needs an integer"),
        (
            "INT64",
            [True, 1],
            "input 'x': element 0 is true, but INT64 needs an integer",
        ),
        ("UINT8", ["1", 1], "input 'x': element 0 is '1', but UINT8 needs an integer"),
        ("INT8", [None, 1], "input 'x': element 0 is null, but INT8 needs an integer"),
        (
            "INT8",
            [float("nan"), 1],
            "input 'x': element 0 is nan, but INT8 needs an integer",
        ),
        ("BOOL", [1, True], "input 'x': element 0 is 1, but BOOL needs true or false"),
        (
            "BOOL",
            [True, "false"],
            "input 'x': element 1 is 'false', but BOOL needs true or false",
        ),
        ("FP32", [1, "2.5"], "input 'x': element 1 is '2.5', but FP32 needs a number"),
        ("FP64", [False, 1], "input 'x': element 0 is false, but FP64 needs a number"),
        ("FP16", [1, None], "input 'x': element 1 is null, but FP16 needs a number"),
        (
            "FP16",
            [1, 70000],
            "input 'x': element 1 is 70000, outside FP16's range (largest 65504.0)",
        ),
        ("FP32", [1e39, 1], "input 'x': element 0 is 1e+39, outside FP32's range"),
        (
            "FP64",
            [10**400, 1],
            (
                "input 'x': element 0 is an integer of 401 digits, outside FP64's "
                "range (largest 1.7976931348623157e+308)"
            ),
        ),
        ("BYTES", ["a", 5], "input 'x': element 1 is 5, but BYTES needs a string"),
        (
            "BYTES",
            [None, "a"],
            "input 'x': element 0 is null, but BYTES needs a string",
        ),
        (
            "BYTES",
            ["a", ["a"]],
            "input 'x': element 1 is an array, but BYTES needs a string",
        ),
        (
            "BYTES",
            ["\ud800", "a"],
            "input 'x': element 0 is not valid Unicode (a lone surrogate?)",
        ),
    ],
)
def test_value_does_not_suit_datatype(
    datatype: str, data: list[Any], expected: str
) -> None:
    assert expected in refused(one(datatype=datatype, data=data))


def literal(datatype: str, *values: str) -> bytes:
    """A request of one input ``x`` whose data are JSON literals as written."""
    data = ", ".join(values)
    return (
        f'{{"inputs": [{{"name": "x", "datatype": "{datatype}", '
        f'"shape": [{len(values)}], "data": [{data}]}}]}}'
    ).encode()


LONG = "9" * 5000  # past the 4300 digits Python's int() reads


@pytest.mark.parametrize(
    ("datatype", "values", "expected"),
    [
        (
            "INT64",
            [LONG],
            (
                "input 'x': element 0 is an integer of 5000 digits, outside INT64's "
                "range -9223372036854775808..9223372036854775807"
            ),
        ),
        (
            "UINT8",
            ["1", "-" + LONG],
            "input 'x': element 1 is an integer of 5000 digits, outside UINT8's range",
        ),
        (  # under int()'s limit: read, but not written out whole
            "INT32",
            ["9" * 4000],
            "input 'x': element 0 is an integer of 4000 digits, outside INT32's range",
        ),
        (
            "FP64",
            ["1", LONG],
            (
                "input 'x': element 1 is an integer of 5000 digits, outside FP64's "
                "range (largest 1.7976931348623157e+308)"
            ),
        ),
        ("FP16", [LONG], "element 0 is an integer of 5000 digits, outside FP16's"),
        ("BOOL", [LONG], "element 0 is an integer of 5000 digits, but BOOL needs true"),
        ("BYTES", [LONG], "element 0 is an integer of 5000 digits, but BYTES needs"),
        (  # float() makes inf of it: refused, not taken for Infinity
            "FP64",
            ["0", "1e400"],
            (
                "input 'x': element 1 is a number, outside FP64's range (largest "
                "1.7976931348623157e+308)"
            ),
        ),
        ("FP32", ["-1e400"], "element 0 is a number, outside FP32's range"),
        ("FP64", ["1" + "0" * 400 + ".5"], "element 0 is a number, outside FP64's"),
        ("UINT8", ["300"], "input 'x': element 0 is 300, outside UINT8's range 0..255"),
        ("INT8", ["-129"], "input 'x': element 0 is -129, outside INT8's range"),
        (
            "FP16",
            ["1e6"],
            "input 'x': element 0 is 1000000.0, outside FP16's range (largest 65504.0)",
        ),
        ("INT32", ["Infinity"], "input 'x': element 0 is inf, but INT32 needs an"),
        ("UINT64", ["NaN"], "input 'x': element 0 is nan, but UINT64 needs an integer"),
        ("BOOL", ["-Infinity"], "input 'x': element 0 is -inf, but BOOL needs true"),
    ],
)
def test_out_of_range_literals(datatype: str, values: list[str], expected: str) -> None:
    """Refused naming the datatype's range, never with a message of Python's
    own (int()'s digit limit, an OverflowError)."""
    message = refused(literal(datatype, *values))
    assert expected in message
    assert "sys.set_int_max_str_digits" not in message


@pytest.mark.parametrize("datatype", FP_TYPES)
def test_nan_and_infinity_literals_are_in_every_fp_range(datatype: str) -> None:
    request = decode_request(literal(datatype, "NaN", "Infinity", "-Infinity"), None)
    values = request.inputs[0].data.tolist()
    assert values[1:] == [float("inf"), float("-inf")] and values[0] != values[0]


# -- the binary part -----------------------------------------------------------------


def binary_body() -> tuple[bytes, int]:
    body, length = request_body(
        {"x": sample("FP32", (2, 2)), "y": sample("INT16", (3,))}, binary=True
    )
    assert length is not None
    return body, length


@pytest.mark.parametrize("datatype", ["FP64", "INT64", "UINT64", "BYTES"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("shape", [[0, 2**60], [0, 2**59, 2], [2**30, 0, 2**30]])
def test_empty_shape_past_numpys_size_for_8_byte_items(
    datatype: str, binary: bool, shape: list[int]
) -> None:
    """Sizes multiplying (zeros aside) to 2**60: no values, yet 2**63 bytes
    for an 8-byte item, past what numpy can index (its ValueError was a
    500)."""
    tensor: dict[str, Any] = {"name": "x", "datatype": datatype, "shape": shape}
    if binary:
        tensor["parameters"] = {"binary_data_size": 0}
    else:
        tensor["data"] = []
    body = json.dumps({"inputs": [tensor]}).encode()
    message = refused(body, len(body) if binary else None)
    assert message.endswith("is too large for any tensor"), message


@pytest.mark.parametrize("datatype", ["FP64", "BYTES"])
def test_empty_shape_just_within_numpys_size_is_decoded(datatype: str) -> None:
    shape = [0, 2**60 - 1]
    tensor = {"name": "x", "datatype": datatype, "shape": shape, "data": []}
    (decoded,) = decode_request(json.dumps({"inputs": [tensor]}).encode(), None).inputs
    assert decoded.data.shape == (0, 2**60 - 1)


def test_header_length_past_the_body() -> None:
    body, _ = binary_body()
    assert refused(body, len(body) + 1) == (
        f"Inference-Header-Content-Length is {len(body) + 1}, past the end of the "
        f"{len(body)}-byte body; it must be the JSON header's length in bytes"
    )


def test_header_length_negative() -> None:
    body, _ = binary_body()
    assert (
        refused(body, -5)
        == "Inference-Header-Content-Length is -5; it cannot be negative"
    )


def test_header_length_inside_the_json() -> None:
    body, length = binary_body()
    assert refused(body, length - 1).startswith("the request is not valid JSON")


def test_header_length_past_the_json() -> None:
    body, length = binary_body()
    assert refused(body, length + 1).startswith("the request is not valid JSON")


def test_header_length_not_a_number() -> None:
    for value in ("abc", "-1", "1.5", "", "١٢"):
        with pytest.raises(TensorError) as caught:
            parse_header_length(value)
        assert caught.value.status == 400
        assert (
            "Inference-Header-Content-Length must be the JSON header's length in "
            "bytes, a non-negative integer"
        ) in caught.value.message
    not_an_int: Any = True
    assert refused(b"{}", not_an_int).startswith(
        "Inference-Header-Content-Length must be an integer"
    )


def test_binary_data_missing_bytes() -> None:
    body, length = binary_body()
    assert refused(body[:-1], length) == (
        f"the inputs' binary_data_size add up to 22 bytes, but 21 bytes follow the "
        f"{length}-byte JSON header (Inference-Header-Content-Length); each binary "
        f"input needs its exact size"
    )


def test_binary_data_extra_bytes() -> None:
    body, length = binary_body()
    assert "add up to 22 bytes, but 23 bytes follow" in refused(body + b"\0", length)


def test_bytes_after_a_json_only_request() -> None:
    body, length = request_body({"x": sample("FP32")}, binary=False)
    assert length is None
    assert refused(body + b"\0\0", len(body)).startswith(
        "the inputs' binary_data_size add up to 0 bytes, but 2 bytes follow"
    )


def test_binary_data_size_without_header_length() -> None:
    body, length = binary_body()
    assert refused(body[:length], None) == (
        "input 'x' has a binary_data_size, but the request has no "
        "Inference-Header-Content-Length header; send it with the JSON header's length"
    )


def test_binary_data_size_against_shape() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 4},
                },
            ]
        }
    ).encode()
    assert refused(header + b"\0" * 4, len(header)) == (
        "input 'x': shape [2] of FP32 is 8 bytes, but binary_data_size is 4"
    )


def bytes_request(payload: bytes, count: int) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "shape": [count],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(payload)},
                }
            ]
        }
    ).encode()
    return header + payload, len(header)


def test_bytes_element_length_past_its_data() -> None:
    payload = struct.pack("<I", 1) + b"a" + struct.pack("<I", 10) + b"abc"
    assert refused(*bytes_request(payload, 2)) == (
        "input 's': element 1 says it is 10 bytes long, but only 3 bytes of its "
        "binary_data_size are left"
    )


def test_bytes_data_ends_inside_a_length_prefix() -> None:
    payload = struct.pack("<I", 6) + b"abcdef" + b"\0\0"
    assert refused(*bytes_request(payload, 2)) == (
        "input 's': binary data ends inside element 1's 4-byte length"
    )


def test_bytes_left_over() -> None:
    payload = struct.pack("<I", 1) + b"a" + b"zz"
    assert refused(*bytes_request(payload, 1)) == (
        "input 's': 2 bytes are left after its 1 BYTES elements; binary_data_size "
        "should be 5"
    )


def test_bytes_more_elements_than_data_can_hold() -> None:
    assert refused(*bytes_request(b"\0" * 8, 10**12)) == (
        "input 's': 1000000000000 BYTES elements need at least 4000000000000 bytes "
        "(a 4-byte length each), but binary_data_size is 8"
    )


def test_bool_binary_is_zero_or_one() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "b",
                    "shape": [3],
                    "datatype": "BOOL",
                    "parameters": {"binary_data_size": 3},
                },
            ]
        }
    ).encode()
    assert refused(header + b"\1\0\2", len(header)) == (
        "input 'b': element 2 is byte 2, but BOOL binary data is one byte per "
        "element, 0 or 1"
    )


# -- requested outputs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ({}, "the request needs 'outputs', a JSON array of tensors"),
        ([3], "outputs[0] must be a JSON object with a 'name'"),
        ([{}], "outputs[0] needs a 'name', a non-empty string"),
        (
            [{"name": "y", "parameters": {"binary_data": "yes"}}],
            "output 'y': parameter 'binary_data' must be true or false",
        ),
        (
            [{"name": "y", "parameters": 1}],
            "output 'y': 'parameters' must be a JSON object",
        ),
        (
            [{"name": "y"}, {"name": "y"}],
            "output 'y' is requested twice; name each output once",
        ),
        (
            [{"name": "y", "parameters": {"classification": 3}}],
            (
                "output 'y': parameter 'classification': the classification extension "
                "is not implemented"
            ),
        ),
        (
            [{"name": "y", "parameters": {"shared_memory_region": "r"}}],
            "output 'y': parameter 'shared_memory_region'",
        ),
    ],
)
def test_bad_output(outputs: Any, expected: str) -> None:
    body = json.dumps({"inputs": [], "outputs": outputs}).encode()
    assert refused(body).startswith(expected)


def test_tritonclient_request_with_a_wrong_header_length_is_refused() -> None:
    tensor = triton.InferInput("x", [2], "FP16")
    tensor.set_data_from_numpy(np.array([1, 2], dtype=np.float16))
    body, length = triton.InferenceServerClient.generate_request_body([tensor])
    assert length is not None
    for wrong in (0, 1, length - 2, length + 2, len(body)):
        refused(body, wrong)


# -- encoding what a model returned -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            np.array([1 + 2j]),
            (
                "output 'y': numpy dtype complex128 has no OIP datatype; return bool, "
                "(u)int8-64, float16/32/64, str or bytes values"
            ),
        ),
        (
            np.array(["2020-01-01"], dtype="datetime64[D]"),
            "output 'y': numpy dtype datetime64[D] has no OIP datatype",
        ),
        (
            None,
            (
                "output 'y': element 0 is NoneType None; a BYTES tensor holds str "
                "(valid Unicode) or bytes"
            ),
        ),
        ({"a": 1}, "output 'y': element 0 is dict {'a': 1}; a BYTES tensor holds"),
        ([1, "a"], "output 'y': element 0 is int 1; a BYTES tensor holds"),
        (
            [[1, 2], [3]],
            (
                "output 'y': cannot make a tensor of list [[1, 2], [3]]: setting an "
                "array element with a sequence"
            ),
        ),
        (2**70, "output 'y': element 0 is int 1180591620717411303424"),
        (
            "\ud800",
            (
                "output 'y': element 0 is str '\\ud800'; a BYTES tensor holds str "
                "(valid Unicode) or bytes"
            ),
        ),
    ],
)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_unencodable_output_is_a_500(
    value: object, expected: str, binary: bool
) -> None:
    with pytest.raises(TensorError) as caught:
        encode_response("m", None, None, {"y": value}, {"y"} if binary else ())
    assert caught.value.status == 500
    assert caught.value.message.startswith(expected)


def test_non_utf8_bytes_asked_as_json_say_to_ask_binary() -> None:
    value = np.array([b"ok", b"\xff\xfe"], dtype=object)
    with pytest.raises(TensorError) as caught:
        encode_response("m", None, None, {"img": value})
    assert caught.value.status == 400
    assert caught.value.message == (
        "output 'img': element 1 is not UTF-8 text, which JSON cannot carry; request "
        'this output as binary data (parameters {"binary_data": true})'
    )
    body, _ = encode_response("m", None, None, {"img": value}, {"img"})
    assert body.endswith(b"\xff\xfe")


def test_a_caller_limit_is_a_413() -> None:
    assert (
        TensorError("input 'x' is 80 MB; the limit is 64 MB", status=413).status == 413
    )
