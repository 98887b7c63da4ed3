"""The docs tests' own parts, without processes: the block extractor and
the comparison of outputs (:mod:`tests.docs.blocks`,
:mod:`tests.docs.compare`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.docs import blocks
from tests.docs.compare import matches

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


def test_directives_and_indented_blocks_are_blocks_too() -> None:
    page = (
        "```{code-block} console\n:caption: x\n$ deepaas-cli get_metadata\n```\n\n"
        "Text:\n\n    $ curl -s localhost:5000/v2/\n"
    )
    directive, indented = blocks.parse_page(page, "docs/x.md")
    assert directive.lang == "console" and directive.action == "run"
    assert directive.commands()[0].text == "deepaas-cli get_metadata"
    assert indented.action == "run" and indented.commands()[0].line == 8


@pytest.mark.parametrize(
    "path",
    blocks.doc_pages(),
    ids=lambda path: path.relative_to(blocks.REPO_ROOT).as_posix(),
)
def test_every_fence_closes_where_it_is_written(path: Path) -> None:
    """A closing fence with text after it (```` ``` More text````) is not a
    closing fence in CommonMark: the block runs on, swallowing the prose
    below it until the next bare fence. Such a line inside a block's text
    is that mistake (a page that shows a fence in a block uses a longer
    one around it, ```` ```` ````, and indents nothing)."""
    for token in MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8")):
        if token.type != "fence" or token.map is None:
            continue
        fence = token.markup
        for offset, line in enumerate(token.content.split("\n"), start=1):
            assert not line.startswith(fence), (
                f"{path.name}:{token.map[0] + offset + 1}: a fence with text after "
                f"it does not close the block opened on line {token.map[0] + 1}: "
                "put the text on a line of its own, after a blank line"
            )
