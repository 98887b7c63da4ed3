"""A 64 MB binary tensor is decoded without a Python list or a copy, and
encoded with one copy (into the response body)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from deepaas.oip import HEADER_LENGTH, decode_request, encode_response
from tests.oip.support import parse, request_body

SIZE = 64 * 2**20


def peak_bytes(call: Callable[[], Any]) -> tuple[Any, int]:
    """``call()`` and the most memory it held at once (numpy's allocations
    are traced too)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return result, peak


def test_decoding_64_mb_makes_no_copy() -> None:
    array = np.arange(SIZE // 4, dtype=np.float32).reshape(1, 16, 1024, 1024)
    body, header_length = request_body({"x": array}, binary=True)
    request, peak = peak_bytes(lambda: decode_request(body, header_length))
    data = request.inputs[0].data
    assert peak < SIZE // 100  # a list of 16 M floats would be ~500 MB
    assert np.shares_memory(data, np.frombuffer(body, dtype=np.uint8))
    assert np.array_equal(data, array)


def test_encoding_64_mb_copies_once() -> None:
    array = np.ones((4, 4096, 1024), dtype=np.float32)
    (body, headers), peak = peak_bytes(
        lambda: encode_response("m", None, None, {"y": array}, {"y"})
    )
    assert int(headers[HEADER_LENGTH]) < 200
    assert SIZE <= peak < SIZE * 1.05  # the body itself, nothing more
    assert np.array_equal(parse(body, headers).as_numpy("y"), array)


def test_decoding_64_mb_of_bool_checks_without_a_temporary() -> None:
    array = np.zeros(SIZE, dtype=bool)
    array[::7] = True
    body, header_length = request_body({"b": array}, binary=True)
    request, peak = peak_bytes(lambda: decode_request(body, header_length))
    assert peak < SIZE // 100
    assert np.array_equal(request.inputs[0].data, array)
