"""Fixtures of the access tests: a real headless Chromium."""

from tests.browser import browser  # noqa: F401  (the fixture, shared)
