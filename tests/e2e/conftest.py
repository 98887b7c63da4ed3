"""Fixtures of the end-to-end tests: ``deepaas-run`` as a real process."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deepaas_run import DeepaasRun, closed_at_end


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., DeepaasRun]]:
    """``server(*args)`` starts ``deepaas-run *args`` in ``tmp_path``; every
    server started is stopped (and checked for orphans) when the test ends."""
    with closed_at_end(functools.partial(DeepaasRun, tmp_path)) as start:
        yield start
