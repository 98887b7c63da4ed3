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

import pytest

from tests.docs import blocks
from tests.docs.session import PageSession, sessions_by_page

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


# -- the extractor and the comparison, on their own ----------------------------

SAMPLE = """\
# A page

<!-- docs-test: skip reason="needs a GPU" -->

```console
$ deepaas-run --devices 0
```

```console
$ curl -s -X POST localhost:5000/v2/models/demo/predict/ \\
    -d '{"a":
         1}'
{"ok": true}
$ echo done
done
```

```python
from deepaas.client import Client
print(1)
```

```text
1
```

```console
$ pip install something
```
"""


def test_blocks_are_read_with_markers_commands_and_outputs() -> None:
    gpu, curl, python, text, pip = blocks.parse_page(SAMPLE, "docs/x.md")
    assert (gpu.action, gpu.attrs["reason"]) == ("skip", "needs a GPU")
    assert [c.text.split()[0] for c in curl.commands()] == ["curl", "echo"]
    first = curl.commands()[0]
    assert first.text.endswith("1}'") and first.expected == '{"ok": true}'
    assert first.line == 10
    assert python.output is text and python.commands()[0].expected == "1\n"
    assert (curl.action, python.action, text.action, pip.action) == (
        "run",
        "run",
        "none",
        "none",
    )


@pytest.mark.parametrize(
    "page",
    [
        "<!-- docs-test: skip -->\n\n```console\n$ deepaas-run\n```\n",
        '<!-- docs-test: colour="red" -->\n\n```console\n$ deepaas-run\n```\n',
        '<!-- docs-test: compare="contains" -->\n\nText.\n\n```console\n```\n',
        "Text <!-- docs-test: skip reason='x' --> inline.\n",
    ],
    ids=["skip-without-reason", "unknown-attribute", "not-before-a-fence", "inline"],
)
def test_bad_markers_are_refused_with_their_line(page: str) -> None:
    with pytest.raises(blocks.MarkerError, match=r"docs/x\.md:1"):
        blocks.parse_page(page, "docs/x.md")


def test_json_is_compared_as_data_with_volatile_fields_masked() -> None:
    from tests.docs.compare import matches

    shown = (
        '{"uuid": "3f1c0e9a52a44d7e8a3b1c8d1d2e4f60", "date": "2024-01-01 12:00:00",'
        '\n "score": 0.25}'
    )
    printed = (
        '{"uuid": "0123456789abcdef0123456789abcdef", '
        '"date": "2026-12-01 13:51:27.1", "score": 0.2500001}'
    )
    assert matches(shown, printed)
    assert not matches(shown, printed.replace("0.25", "0.5"))
    assert matches('{"a": 1, ...}', '{"a": 1, "b": 2}')  # not JSON: text, "..."
    assert matches("x\n...\nz", "x\ny1\ny2\nz")
    assert matches("b\na", "a\nb\nc", "contains")
    assert not matches("d", "a\nb", "contains")
