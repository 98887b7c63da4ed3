"""Every deepaas command of the docs, run against real servers.

One test per block (``docs/quickstart.md:112``), in page order: a block
runs after the earlier blocks of its page, in the same shell (see
:mod:`tests.docs.session`), and what each command prints is compared with
what the page shows (:mod:`tests.docs.compare`). A block marked
``<!-- docs-test: skip reason="..." -->`` is reported as skipped with its
reason. ``docs/README.md`` says how to write and mark blocks.

Run one page with ``-k quickstart``, or one block (its page's earlier
blocks run first, unseen) with ``-k 'quickstart.md:112'``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.docs import blocks
from tests.docs.session import BlockFailed, DocsEnv, PageSession, sessions_by_page

BLOCKS = blocks.tested_blocks()
PAGES = sessions_by_page(BLOCKS)
#: The last block of each page that runs: its test closes the page's session.
LAST = {
    page: [b for b in page_blocks if b.action != "skip"][-1]
    for page, page_blocks in PAGES.items()
    if any(b.action != "skip" for b in page_blocks)
}

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block(
    block: blocks.Block,
    page_session: Callable[[str, list[blocks.Block]], PageSession],
) -> None:
    if block.action == "skip":
        pytest.skip(block.attrs["reason"])
    why = PageSession._available(block)
    if why:
        pytest.skip(why)
    session = page_session(block.page, PAGES[block.page])
    try:
        session.run_through(block)
    finally:
        if LAST.get(block.page) is block:
            session.close()


def test_every_deepaas_block_runs_or_says_why() -> None:
    """The "100 %": each block that calls deepaas is a test above that
    runs it, or is marked skipped with a reason; and a marker's runtime
    attributes are on blocks that run (elsewhere they would do nothing)."""
    every = list(blocks.all_blocks())
    tested = {b.id for b in BLOCKS}
    for block in every:
        if block.calls_deepaas:
            assert block.id in tested, block.id
            assert block.action in ("run", "skip", "file"), block.id
        if block.action == "skip":
            assert block.attrs.get("reason"), block.id
        runtime = {"compare", "server", "retry", "setup"} & block.attrs.keys()
        assert not runtime or block.action == "run", (
            f"{block.id}: {', '.join(sorted(runtime))} on a block that does not run"
        )
    print(blocks.summary(every))


EDITABLE_PAGE = """\
```console
$ mkdir -p tiny/tiny_pkg
$ printf 'def get_metadata():\\n    return {"name": "tiny"}\\n' > tiny/tiny_pkg/api.py
$ printf '[project]\\nname = "tiny"\\nversion = "0.1.0"\\n' > tiny/pyproject.toml
$ printf '[project.entry-points."deepaas.v2.model"]\\n' >> tiny/pyproject.toml
$ printf 'tiny = "tiny_pkg.api"\\n' >> tiny/pyproject.toml
$ pip install -e tiny
Successfully installed tiny-0.1.0
$ pip install -q -e tiny
$ deepaas-cli --model-name tiny get_metadata
{"id": "tiny", "name": "tiny", ...}
$ pip install requests
```
"""


def test_pip_install_e_of_a_local_project_is_done_and_no_other_pip(
    docs_env: DocsEnv, tmp_path: Path
) -> None:
    """A page that scaffolds a plugin installs it with ``pip install -e``:
    done as pip would (metadata and path), for this page only, and with
    ``-q`` it prints nothing, as pip does; any other pip command is
    refused, never run."""
    (block,) = blocks.parse_page(EDITABLE_PAGE, "docs/x.md")
    *fine, refused = block.commands()
    session = PageSession("docs/x.md", [block], docs_env, tmp_path)
    try:
        for command in fine:
            session._run_command(block, command)
        with pytest.raises(BlockFailed, match="pip is not run"):
            session._run_command(block, refused)
    finally:
        session.close()
