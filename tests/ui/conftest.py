"""Fixtures of the dashboard tests: a real headless Chromium (shared with
tests/access), and where the screenshot for the docs goes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser import browser  # noqa: F401  (the fixture, shared)

#: Set to a folder (``docs/_static``) to write the docs' screenshot there.
SCREENSHOTS_ENV = "DEEPAAS_DOCS_SCREENSHOTS"


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """Where a test writes its screenshots: ``$DEEPAAS_DOCS_SCREENSHOTS``
    (``DEEPAAS_DOCS_SCREENSHOTS=docs/_static`` refreshes the docs' one),
    else the test's own temporary folder."""
    given = os.environ.get(SCREENSHOTS_ENV)
    if not given:
        return tmp_path
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    return path
