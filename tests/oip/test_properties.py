"""Properties over generated tensors and bodies (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepaas.exceptions import TensorError
from deepaas.oip import DATATYPES, decode_request, encode_response
from tests.oip.support import ALL_TYPES, parse, request_body, same, sample

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
utf8_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[np.ndarray, bool, bool]:
    """An array of any datatype, and whether it travels as binary data in
    the request and in the response."""
    datatype = draw(st.sampled_from(ALL_TYPES))
    shape = draw(shapes)
    binary_in, binary_out = draw(st.booleans()), draw(st.booleans())
    if datatype != "BYTES":
        dtype = DATATYPES[datatype]
        return draw(hnp.arrays(dtype, shape)), binary_in, binary_out
    # JSON carries text only; binary data carries any bytes
    texts = utf8_text.map(str.encode)
    elements = st.binary(max_size=6) | texts if binary_in and binary_out else texts
    values = draw(
        st.lists(elements, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))
    )
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(shape), binary_in, binary_out


@SETTINGS
@given(tensors())
def test_round_trip_through_tritonclient(case: tuple[np.ndarray, bool, bool]) -> None:
    """tritonclient request -> decode_request -> encode_response -> tritonclient."""
    array, binary_in, binary_out = case
    body, header_length = request_body({"x": array}, binary_in)
    tensor = decode_request(body, header_length).inputs[0]
    assert tensor.shape == array.shape
    assert same(array, tensor.data)
    body, headers = encode_response(
        "m", "1", None, {"y": tensor.data}, {"y"} if binary_out else ()
    )
    expected = array
    if not binary_out and array.dtype.kind == "f":
        # JSON writes NaN, Infinity and -Infinity as null: read back as NaN.
        expected = np.where(np.isfinite(array), array, np.nan).astype(array.dtype)
    assert same(expected, parse(body, headers).as_numpy("y"))


# -- nothing but TensorError, whatever arrives ---------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
plausible_inputs = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["x", "y", ""]) | json_values,
        "shape": st.lists(st.integers(-2, 4), max_size=3) | json_values,
        "datatype": st.sampled_from([*ALL_TYPES, "fp32"]) | json_values,
        "data": st.lists(json_values, max_size=6)
        | st.lists(st.lists(st.integers(-300, 300), max_size=3), max_size=3)
        | json_values,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-2, 12) | json_values}
        )
        | json_values,
    },
)
plausible_requests = st.fixed_dictionaries(
    {"inputs": st.lists(plausible_inputs, max_size=3) | json_values},
    optional={
        "id": json_values,
        "parameters": json_values,
        "outputs": st.lists(
            st.fixed_dictionaries(
                {}, optional={"name": json_values, "parameters": json_values}
            ),
            max_size=2,
        )
        | json_values,
    },
)


def decodes_or_refuses(body: bytes, header_length: int | None) -> None:
    try:
        decode_request(body, header_length)
    except TensorError as exc:
        assert exc.status == 400 and exc.message


@SETTINGS
@given(plausible_requests, st.binary(max_size=16), st.booleans())
def test_any_json_request_decodes_or_is_a_tensor_error(
    document: dict[str, Any], tail: bytes, with_length: bool
) -> None:
    header = json.dumps(document).encode()
    if with_length:
        decodes_or_refuses(header + tail, len(header))
    else:
        decodes_or_refuses(header, None)


@SETTINGS
@given(
    st.sampled_from(ALL_TYPES),
    st.integers(0, 200),
    st.binary(max_size=4),
    st.integers(-3, 3),
    st.integers(-40, 40),
)
def test_damaged_binary_bodies_decode_or_are_a_tensor_error(
    datatype: str, at: int, patch: bytes, resize: int, length_shift: int
) -> None:
    body, header_length = request_body({"x": sample(datatype, (2, 2))}, binary=True)
    assert header_length is not None
    at = min(at, len(body))
    damaged = body[:at] + patch + body[at + len(patch) :]
    damaged = (
        damaged[: len(damaged) + resize] if resize < 0 else damaged + b"\0" * resize
    )
    decodes_or_refuses(damaged, header_length + length_shift)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.none() | st.integers(-2, 70))
def test_any_bytes_decode_or_are_a_tensor_error(
    body: bytes, header_length: int | None
) -> None:
    decodes_or_refuses(body, header_length)
