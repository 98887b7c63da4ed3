"""Fixtures of the docs tests: the docs' virtualenv and one session per page.

A page's blocks share a :class:`~tests.docs.session.PageSession` (its
shell, home and servers), made when its first block runs and closed after
its last, so that at most one page's servers run at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.docs import blocks
from tests.docs.session import DocsEnv, PageSession, build_env

_COLLECTED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def docs_env(tmp_path_factory: pytest.TempPathFactory) -> DocsEnv:
    return build_env(tmp_path_factory.mktemp("docs-venv"))


@pytest.fixture(scope="session")
def page_session(
    docs_env: DocsEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str, list[blocks.Block]], PageSession]]:
    """``page_session(page, its_blocks)``: the page's session, made on
    first use; :func:`close_page` ends it."""
    sessions: dict[str, PageSession] = {}

    def get(page: str, page_blocks: list[blocks.Block]) -> PageSession:
        if page not in sessions:
            tmp: Path = tmp_path_factory.mktemp(Path(page).stem)
            sessions[page] = PageSession(page, page_blocks, docs_env, tmp)
        return sessions[page]

    get.sessions = sessions  # type: ignore[attr-defined]
    yield get
    for session in sessions.values():
        session.close()


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    config.stash[_COLLECTED] = any("tests/docs/" in item.nodeid for item in items)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The count the "every deepaas command is run or says why" number
    rests on, after every run of the docs tests."""
    if config.stash.get(_COLLECTED, False):
        terminalreporter.write_sep("-", "docs blocks")
        terminalreporter.write_line(blocks.summary(list(blocks.all_blocks())))
