"""Small JSON bodies parsed by orjson give what Python's path gives.

:func:`deepaas.api.parsing.parse_json` tries orjson first on a body under
the offload size; every document below is parsed both ways (orjson's path
switched off for the second) and must give the same value, or the same 400
message.
"""

from __future__ import annotations

import math

import pytest

from deepaas.api import parsing
from deepaas.exceptions import DeepaasError

DOCUMENTS = [
    b'{"x": 1}',
    b'{"x": -0, "y": 1E5, "z": 1.5e-400, "w": -12.25}',
    b'{"text": "caf\\u00e9 \\ud83d\\ude00", "raw": "caf\xc3\xa9"}',
    b'{"a": 1, "a": 2}',
    b' \n{"nested": {"list": [[1, 2], [3, {"k": null}]], "t": true}} \t',
    b'{"big": 1234567890123456789, "bigger": 123456789012345678901234}',
    b'{"neg": -99999999999999999999999999}',
    b'{"in_text": "1234567890123456789012"}',
    b'{"float": 1e308, "inf": 1e400}',
    b'{"nan": NaN}',
    b'{"x": Infinity}',
    b'{"lone": "\\ud800"}',
    b'{"bad utf-8": "\xff"}',
    b'\xef\xbb\xbf{"bom": 1}',
    '{"utf16": 1}'.encode("utf-16-le"),
    b'{"ctrl": "a\x01b"}',
    b"[1, 2]",
    b'"text"',
    b"{}",
    b'{"x": 1,}',
    b'{"x": 01}',
    b'{"deep": ' + b"[" * 120 + b"]" * 120 + b"}",
    b'{"ok": ' + b"[" * 98 + b"]" * 98 + b"}",
    b'{"digits": ' + b"9" * 5000 + b"}",
]


def outcome(raw: bytes) -> tuple[str, object]:
    try:
        return "ok", parsing.parse_json(raw)
    except DeepaasError as exc:
        return "error", str(exc)


@pytest.mark.parametrize("raw", DOCUMENTS)
def test_same_as_python_path(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = outcome(raw)
    monkeypatch.setattr(parsing, "_parse_plain", lambda raw: None)
    slow = outcome(raw)
    assert repr(fast) == repr(slow)  # repr: -0.0 and 0.0, int and float differ


def test_long_integers_stay_exact() -> None:
    value = parsing.parse_json(b'{"n": 123456789012345678901234}')
    assert value["n"] == 123456789012345678901234
    assert isinstance(value["n"], int)


def test_orjson_takes_the_usual_body() -> None:
    """The fast path is taken at all (not every body sent to Python)."""
    value = parsing._parse_plain(b'{"x": 1, "f": 0.5, "s": "t", "l": [1]}')
    assert value == {"x": 1, "f": 0.5, "s": "t", "l": [1]}
    assert parsing._parse_plain(b'{"inf": 1e400}') is None
    assert not math.isinf(parsing.parse_json(b'{"f": 1e308}')["f"])


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"  [" + b"1," * 5000 + b"1]", "got an array"),
        (b'\xef\xbb\xbf"' + b"x" * 5000 + b'"', "got a string"),
        (b"\n" + b"7" * 5000, "not a JSON object"),
    ],
)
def test_a_big_non_object_is_refused_before_it_is_decoded(
    raw: bytes, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_decoded(*args: object) -> str:
        raise AssertionError("decoded")

    monkeypatch.setattr(parsing, "_decode", not_decoded)
    for cooperative in (False, True):
        with pytest.raises(DeepaasError) as caught:
            parsing.parse_json(raw, cooperative)
        assert caught.value.status == 400
        assert said in str(caught.value)
