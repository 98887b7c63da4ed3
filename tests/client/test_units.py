"""The client's pure parts: argument encoding, log decoding, error messages."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from deepaas.client import APIError, InvalidArguments, NotFound
from deepaas.client._body import FilePart, json_body, pairs
from deepaas.client._wire import log_chunk
from deepaas.client.errors import api_error


def test_pairs():
    assert pairs(
        {
            "b": True,
            "f": False,
            "n": 3,
            "x": 0.5,
            "s": "t",
            "l": [1, "two", None],
            "none": None,
            "arr": np.array([1, 2]),
            "np_scalar": np.float32(1.5),
        }
    ) == [
        ("b", "true"),
        ("f", "false"),
        ("n", "3"),
        ("x", "0.5"),
        ("s", "t"),
        ("l", "1"),
        ("l", "two"),
        ("arr", "1"),
        ("arr", "2"),
        ("np_scalar", "1.5"),
    ]
    assert pairs(None) == []
    with pytest.raises(TypeError, match=r"'d'.*json="):
        pairs({"d": {"a": 1}})
    with pytest.raises(TypeError, match="files="):
        pairs({"raw": b"bytes"})


def test_json_body():
    assert json.loads(json_body({"a": np.arange(3), "s": np.int64(7)})) == {
        "a": [0, 1, 2],
        "s": 7,
    }
    with pytest.raises(ValueError):
        json_body({"x": float("inf")})
    with pytest.raises(TypeError, match="mapping"):
        json_body([1, 2])  # type: ignore[arg-type]


def test_file_part_size_from_position():
    data = io.BytesIO(b"0123456789")
    data.seek(4)
    assert FilePart(data, content_type="x/y", filename="f").size == 6
    assert data.tell() == 4


@pytest.mark.parametrize("cut", [1, 2])  # of the 3 bytes of €
def test_log_chunk_keeps_a_cut_character_for_later(cut: int):
    text = "loss € 1\n"
    data = text.encode()
    euro = data.index("€".encode())
    first = log_chunk(data[: euro + cut], euro + cut)
    assert first.text == "loss "
    assert first.offset == euro  # the next read starts at the character
    second = log_chunk(data[first.offset :], len(data))
    assert first.text + second.text == text
    assert second.offset == len(data)


def test_error_messages():
    err = api_error(404, "Not Found", {"message": "no such model"}, "GET", "u")
    assert isinstance(err, NotFound)
    assert err.message == "no such model"
    assert str(err) == "404 from GET u: no such model"

    invalid = api_error(
        422,
        "Unprocessable Entity",
        {"a": ["Bad."], "b": {"0": ["Not an int."]}},
        "POST",
        "u",
    )
    assert isinstance(invalid, InvalidArguments)
    assert invalid.message == "invalid arguments: a: Bad.; b: [0] Not an int."
    assert invalid.errors == {"a": ["Bad."], "b": {"0": ["Not an int."]}}

    plain = api_error(422, "", {"message": "offset must be..."}, "GET", "u")
    assert isinstance(plain, InvalidArguments)
    assert (plain.message, plain.errors) == ("offset must be...", {})

    html = api_error(
        502, "Bad Gateway", "<html>\n  upstream   down </html>", "GET", "u"
    )
    assert type(html) is APIError
    assert html.message == "<html> upstream down </html>"
    assert api_error(503, "Service Unavailable", "", "GET", "u").message == (
        "Service Unavailable"
    )
    assert len(api_error(500, "", "x" * 1000, "GET", "u").message) == 303
