"""What a page shows against what a command printed.

The one place where volatile values are masked: :data:`MASKS` (text) and
:data:`VOLATILE_KEYS` (JSON). Ports and the home folder are not masked but
mapped back (the test server's port to the one the page shows, the page's
home to ``/home/you``) before this module sees the output, so they are
still checked.

- JSON (both sides parse) is compared as data: masked strings, volatile
  keys, floats within a relative 1e-5 (ONNX and torch results may differ in
  the last digits from one CPU to another).
- Anything else is compared as text, line by line, after masking; ``...``
  in what the page shows stands for anything (part of a line, or whole
  lines when it is alone on its line).
- ``compare="contains"``: each line the page shows must be among the lines
  printed, in any order (logs of processes that start concurrently).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: (pattern, replacement): applied to both sides, in this order.
MASKS: list[tuple[re.Pattern[str], str]] = [
    # log times, record dates: 2026-12-01 13:51:27,446, 2024-05-01T12:00:00.123+00:00
    (
        re.compile(
            r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:[+-]\d{2}:?\d{2}|Z)?"
        ),
        "<time>",
    ),
    # HTTP Date headers
    (re.compile(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT"), "<http-date>"),
    # uuids (training ids, request ids), with or without dashes
    (
        re.compile(
            r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b"
        ),
        "<uuid>",
    ),
    # durations: 0:00:05.287501 (a training's), 0.7s, 12.30ms
    (re.compile(r"\b\d+:\d{2}:\d{2}\.\d+\b"), "<duration>"),
    (re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:ms|s)\b"), "<duration>"),
    # process ids
    (re.compile(r"\bpid \d+"), "pid <pid>"),
    # versions of deepaas, Python and aiohttp, and where deepaas is installed
    (
        re.compile(r"\b(deepaas(?:-run|-cli)?:? |Python[ /]|aiohttp/)\d+\.\d+[\w.+-]*"),
        r"\1<version>",
    ),
    (re.compile(r"from /\S+ \(Python"), "from <path> (Python"),
    # the GPU discovery line depends on the machine (the tests run with
    # --devices cpu, which makes none)
    (re.compile(r"^.*NVML unavailable.*\n?", re.MULTILINE), ""),
]

#: JSON keys whose values change from run to run, whatever their type.
VOLATILE_KEYS = frozenset({"pid", "started", "heartbeat", "uuid", "request_id"})

ELLIPSIS = "..."
FLOAT_REL = 1e-5


def mask(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def _normalise(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def _json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def mask_data(value: Any, key: str | None = None) -> Any:
    """A JSON document with its volatile parts masked."""
    if key in VOLATILE_KEYS:
        return "<volatile>"
    if isinstance(value, dict):
        return {k: mask_data(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_data(v) for v in value]
    if isinstance(value, str):
        return mask(value)
    return value


def same_data(expected: Any, actual: Any) -> bool:
    """Equal as JSON data, floats within :data:`FLOAT_REL`."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            same_data(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(
            same_data(e, a) for e, a in zip(expected, actual, strict=True)
        )
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(expected, bool) or isinstance(actual, bool):
            return expected == actual
        if isinstance(expected, int | float) and isinstance(actual, int | float):
            return math.isclose(expected, actual, rel_tol=FLOAT_REL, abs_tol=1e-9)
    return type(expected) is type(actual) and expected == actual


def _line_pattern(line: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in line.split(ELLIPSIS)]
    return re.compile(".*".join(parts))


def _text_pattern(expected: str) -> re.Pattern[str]:
    """The page's text as a pattern: ``...`` alone on a line matches any
    lines (or none); inside a line, any characters."""
    pieces: list[str] = []
    for line in expected.split("\n"):
        if line.strip() == ELLIPSIS:
            pieces.append(r"(?:[^\n]*\n)*?[^\n]*")
        else:
            pieces.append(_line_pattern(line).pattern)
    return re.compile(r"\n".join(pieces), re.DOTALL)


def matches(expected: str, actual: str, mode: str = "") -> bool:
    """Does ``actual`` (a command's output, ports and home mapped back)
    show what the page shows?"""
    expected, actual = _normalise(expected), _normalise(actual)
    if mode == "contains":
        lines = mask(actual).split("\n")
        return all(
            any(_line_pattern(want).fullmatch(line) for line in lines)
            for want in mask(expected).split("\n")
            if want.strip()
        )
    exp_ok, exp_data = _json(expected)
    act_ok, act_data = _json(actual)
    if exp_ok and act_ok:
        return same_data(mask_data(exp_data), mask_data(act_data))
    return _text_pattern(mask(expected)).fullmatch(mask(actual)) is not None


_UUID = MASKS[2][0]


def learned_ids(expected: str, actual: str) -> dict[str, str]:
    """The ids a page shows in an output that matched, paired with those
    printed in their place (the n-th shown with the n-th printed; an
    output the page elides with ``...`` may print more): later commands
    of the page that use a shown id get the real one."""
    shown = _UUID.findall(expected)
    printed = _UUID.findall(actual)
    return {s: p for s, p in zip(shown, printed, strict=False) if s != p}
