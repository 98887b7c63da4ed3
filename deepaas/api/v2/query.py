"""Query parameters of the training routes (``.../logs``, ``.../metrics``)
read one way: each given at most once, an integer as plain ASCII digits.

Python's ``int()`` also reads ``1_0``, `` 10`` and the digits of other
scripts (Arabic-Indic ones, say); a parameter documented as an integer
takes ``[0-9]+`` only.
"""

from __future__ import annotations

import re
from typing import Any

from deepaas.exceptions import DeepaasError, echoed

_DIGITS = re.compile(r"[0-9]{1,30}")


def query_one(query: Any, name: str) -> str | None:
    """The value of ``name`` in ``query`` (a MultiDict), None when absent;
    a 422 when it is given more than once."""
    given = query.getall(name, [])
    if not given:
        return None
    if len(given) > 1:
        raise DeepaasError(422, f"{name} was given {len(given)} times: give it once")
    return str(given[0])


def query_int(query: Any, name: str, default: int, low: int, high: int) -> int:
    """The integer ``name`` of ``query`` from ``low`` to ``high`` (>= 0),
    ``default`` when absent; a 422 naming the bounds otherwise."""
    text = query_one(query, name)
    if text is None:
        return default
    value = int(text) if _DIGITS.fullmatch(text) else low - 1
    if not low <= value <= high:
        # the real bounds, however big: "an integer >= 0" for a since over
        # 2**62 told a client its valid value was wrong
        raise DeepaasError(
            422, f"{name} must be an integer from {low} to {high}, got {echoed(text)}"
        )
    return value
