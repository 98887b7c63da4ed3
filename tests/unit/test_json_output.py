"""``deepaas.model.v2.results.dumps``: strict JSON, cheap when finite."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deepaas.model.v2 import results


def strict(body: bytes):
    def refuse(token: str):
        raise AssertionError(f"not JSON: {token}")

    return json.loads(body, parse_constant=refuse)


FINITE = {
    "a": [1, 2.5, "x", None, True],
    "b": {"c": (1, 2), 3: 4.0, 2.5: "k"},
    "n": np.arange(3),
    "f": np.float32(0.25),
}


def test_finite_values_encode_as_before_in_one_pass(monkeypatch):
    """The same bytes json.dumps gave, and the value is never walked."""

    def walked(*args):
        raise AssertionError("a finite value was walked")

    monkeypatch.setattr(results, "_finite", walked)
    expected = json.dumps(FINITE, default=results._json_default).encode()
    assert results.dumps(FINITE) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (math.nan, None),
        ([math.inf, -math.inf, 0.0], [None, None, 0.0]),
        ({"x": (np.float64("nan"), 1)}, {"x": [None, 1]}),
        (np.array([[np.inf, 1.0]], dtype=np.float32), [[None, 1.0]]),
        ({np.float16("nan"), 2.0}, [None, 2.0]),
        (
            {"k": {math.inf: 1, -math.inf: 2, math.nan: 3}},
            {"k": {"Infinity": 1, "-Infinity": 2, "NaN": 3}},
        ),
    ],
)
def test_non_finite_numbers_are_null(value, expected):
    decoded = strict(results.dumps(value))
    if isinstance(expected, list) and isinstance(value, set):
        assert sorted(decoded, key=str) == sorted(expected, key=str)
    else:
        assert decoded == expected


def test_the_value_is_not_changed():
    value = {"x": [math.nan]}
    results.dumps(value)
    assert math.isnan(value["x"][0])


def test_a_circular_value_is_still_an_error():
    loop: list = [math.nan]
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        results.dumps(loop)


def test_shared_containers_are_not_cycles():
    shared = [math.nan]
    assert strict(results.dumps({"a": shared, "b": shared})) == {
        "a": [None],
        "b": [None],
    }


def test_what_json_cannot_encode_is_still_a_type_error():
    with pytest.raises(TypeError):
        results.dumps({"x": math.nan, "y": object()})
