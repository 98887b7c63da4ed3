"""This process's local time zone, changed for a test."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator


@contextlib.contextmanager
def time_zone(tz: str) -> Iterator[None]:
    """This process's local time zone is ``tz`` (a POSIX TZ such as
    ``"JST-9"``, UTC+9: no tzdata needed) until the block ends."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = tz
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
