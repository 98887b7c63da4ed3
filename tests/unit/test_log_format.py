"""No log record can pass for another (deepaas.log.LineSafeFormatter)."""

from __future__ import annotations

import logging
import re

import pytest

from deepaas.log import FORMAT, formatter

RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def formatted(message: str, *args: object, exc: BaseException | None = None) -> str:
    record = logging.LogRecord(
        "deepaas.api.errors",
        logging.WARNING,
        __file__,
        1,
        message,
        args,
        (type(exc), exc, exc.__traceback__) if exc is not None else None,
    )
    return formatter().format(record)


FORGED = "x\n2026-12-01 16:40:00,000 CRITICAL deepaas.auth: admin token accepted"


@pytest.mark.parametrize("where", ["message", "traceback"])
def test_a_client_newline_starts_no_record(where: str) -> None:
    try:
        raise ValueError(f"unknown label {FORGED}")
    except ValueError as caught:
        exc = caught
    if where == "message":
        text = formatted("POST /p -> 500: %s", exc)
    else:
        text = formatted("POST /p -> 500", exc=exc)
    lines = text.split("\n")
    assert len(lines) > 1
    assert RECORD_START.match(lines[0])
    assert not any(RECORD_START.match(line) for line in lines[1:]), text
    assert all(line.startswith("  ") for line in lines[1:])
    assert "  2026-12-01 16:40:00,000 CRITICAL" in text  # kept, indented


def test_control_characters_are_escaped() -> None:
    text = formatted("label %s", "\x1b[31mred\r\x00\u2028end\tok")
    assert "\x1b" not in text and "\r" not in text and "\x00" not in text
    assert "\u2028" not in text
    assert "\\x1b[31mred\\r\\x00\\u2028end\tok" in text


def test_lone_surrogates_are_escaped() -> None:
    """A client's text may hold lone surrogates (a JSON ``"\\ud800"``, a
    header's byte that is no UTF-8): no UTF-8 stream, file or the debug
    capture can write them as they are."""
    text = formatted("label %s", "a\ud800b\udcff")
    text.encode("utf-8")  # raised UnicodeEncodeError
    assert "a\\ud800b\\udcff" in text


def test_a_plain_record_is_unchanged() -> None:
    plain = logging.Formatter(FORMAT, defaults={"request": ""})
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "ready: %d é", (3,), None
    )
    assert formatter().format(record) == plain.format(record)
