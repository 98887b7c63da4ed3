"""The fenced blocks of the docs, and which of them call deepaas.

This module only reads Markdown (with markdown-it-py, the parser MyST is
built on, so a block is exactly what Sphinx renders as one); it runs
nothing. :mod:`tests.docs.session` runs what it finds.

A block is a **deepaas block** when it calls deepaas: a shell block (a
``console``/``bash`` fence, or any fence whose first line is a ``$ ``
prompt) with a ``deepaas-run``, ``deepaas-cli``, ``curl`` or ``make run``
command, or a Python block that imports deepaas or a client of its API
(``tritonclient``, ``kserve``) or names a server address
(``127.0.0.1:5000``). Every deepaas block is run by ``tests/docs``
unless a marker before it says why not::

    <!-- docs-test: skip reason="needs two GPUs" -->

A marker is an HTML comment (invisible in the rendered page) with only
blank lines between it and its fence. Its attributes (``key="value"``,
or ``'value'``) are listed in :data:`ATTRIBUTES`; ``docs/README.md`` is
the guide for writers.

``python -m tests.docs.blocks`` prints the inventory: every fence, what
the runner does with it, and the counts.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from markdown_it import MarkdownIt

REPO_ROOT = Path(__file__).resolve().parents[2]

#: What a marker may say, and what it means (docs/README.md says it longer).
ATTRIBUTES = {
    "skip": "do not run this block (needs reason)",
    "reason": "why it is skipped: shown by pytest",
    "compare": "'contains': each line shown must be among the lines printed",
    "server": "run while `deepaas-run ARGS` serves on the page's port",
    "file": "write this block's text to PATH (relative to the page's home)",
    "setup": "a shell command run first, unseen (must succeed)",
    "retry": "run again until the output matches, for up to N seconds",
    "needs": "Python modules without which the block is skipped (a,b)",
}

SHELL_LANGS = frozenset({"console", "bash", "sh", "shell", "shell-session", "zsh"})
PYTHON_LANGS = frozenset({"python", "py"})
#: A shell command that calls deepaas.
SHELL_CALL = re.compile(r"(?<![\w-])(deepaas-run|deepaas-cli|curl)\b|\bmake run\b")
#: A Python block that calls deepaas: its modules, its clients, its address.
PYTHON_CALL = re.compile(
    r"^\s*(?:from|import)\s+(?:deepaas|tritonclient|kserve)\b"
    r"|(?:localhost|127\.0\.0\.1):\d+",
    re.MULTILINE,
)
_MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<attrs>.*?)-->\s*$", re.DOTALL)
#: A page's defaults, anywhere on the page: ``<!-- docs-test-page: server="..." -->``.
_PAGE_MARKER = re.compile(r"^\s*<!--\s*docs-test-page:(?P<attrs>.*?)-->\s*$", re.DOTALL)
PAGE_ATTRIBUTES = {"server": "the server of blocks that name none (default: none)"}
_ATTR = re.compile(r"""\s*([\w-]+)(?:=(?:"([^"]*)"|'([^']*)'))?""")


class MarkerError(ValueError):
    """A marker the runner cannot read: the message names page and line."""


def parse_attrs(text: str, where: str) -> dict[str, str]:
    """``skip reason="x" compare='contains'`` -> ``{"skip": "", ...}``."""
    attrs: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _ATTR.match(text, pos)
        if not match or match.end() == pos:
            raise MarkerError(f"{where}: cannot read the marker at {text[pos:]!r}")
        key = match.group(1)
        if key not in ATTRIBUTES:
            raise MarkerError(
                f"{where}: unknown marker attribute {key!r}; known: "
                + ", ".join(ATTRIBUTES)
            )
        value = match.group(2) if match.group(2) is not None else match.group(3)
        attrs[key] = value or ""
        pos = match.end()
    if "skip" in attrs and not attrs.get("reason"):
        raise MarkerError(f'{where}: a skipped block says why: skip reason="..."')
    return attrs


@dataclasses.dataclass(frozen=True)
class Command:
    """One shell command of a block and the output the page shows for it
    (empty when none is shown)."""

    text: str
    expected: str
    line: int


@dataclasses.dataclass
class Block:
    """One fenced block of a page."""

    page: str  # relative to the repository: "docs/quickstart.md"
    line: int  # of the opening fence, 1-based
    end: int  # the line after the closing fence, 1-based
    lang: str
    content: str
    attrs: dict[str, str]
    body: int = 0  # the line of the content's first line (1-based)
    #: The page's defaults (its ``docs-test-page`` marker).
    defaults: dict[str, str] = dataclasses.field(default_factory=dict)
    #: A ``text`` block right after a Python block (only blank lines
    #: between): what the Python block prints.
    output: Block | None = None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_shell(self) -> bool:
        if self.lang in SHELL_LANGS:
            return True
        first = self.content.lstrip("\n").split("\n", 1)[0]
        return not self.lang.startswith("{") and first.startswith("$ ")

    @property
    def is_python(self) -> bool:
        return self.lang in PYTHON_LANGS

    @property
    def calls_deepaas(self) -> bool:
        if self.is_shell:
            return any(SHELL_CALL.search(c.text) for c in self.commands())
        return self.is_python and bool(PYTHON_CALL.search(self.content))

    @property
    def action(self) -> str:
        """What the runner does: ``run``, ``skip``, ``file`` (written for
        later blocks) or ``none`` (not a deepaas block, no marker)."""
        if "skip" in self.attrs:
            return "skip"
        if "file" in self.attrs:
            return "file"
        if (self.is_shell or self.is_python) and (self.calls_deepaas or self.attrs):
            return "run"
        return "none"

    def commands(self) -> list[Command]:
        """The commands of a shell block (prompted ``$ `` lines, with their
        continuation lines, and the output after each), or a Python block
        as one command; no output is shown in a prompt-less script."""
        if self.is_python:
            expected = self.output.content if self.output else ""
            return [Command(self.content, expected, self.body)]
        lines = self.content.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        prompted = any(line.startswith("$ ") for line in lines)
        commands: list[Command] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            start = self.body + i
            if prompted and not line.startswith("$ "):
                i += 1  # output before the first prompt: not a command
                continue
            text = line[2:] if prompted else line
            while _continues(text) and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            i += 1
            output: list[str] = []
            while prompted and i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i])
                i += 1
            if text.strip() and not text.lstrip().startswith("#"):
                commands.append(Command(text, "\n".join(output).strip("\n"), start))
        return commands


def _continues(text: str) -> bool:
    """Is this command not complete yet (a trailing backslash, an open quote)?"""
    if text.endswith("\\"):
        return True
    try:
        shlex.split(text, comments=True)
    except ValueError:  # "No closing quotation"
        return True
    return False


_md = MarkdownIt("commonmark")


def page_blocks(path: Path) -> list[Block]:
    """Every fenced block of one page of the repository."""
    page = path.resolve().relative_to(REPO_ROOT).as_posix()
    return parse_page(path.read_text(encoding="utf-8"), page)


def parse_page(text: str, page: str) -> list[Block]:
    """Every fenced block of a page's Markdown, its marker read and its
    output block attached (Python blocks)."""
    lines = text.split("\n")
    tokens = _md.parse(text)
    blocks: list[Block] = []
    defaults: dict[str, str] = {}
    pending: tuple[dict[str, str], int, int] | None = None  # attrs, line, end
    for token in tokens:
        if token.map is None:
            continue
        start, end = token.map
        if token.type == "html_block":
            page_match = _PAGE_MARKER.match(token.content)
            if page_match:
                where = f"{page}:{start + 1}"
                defaults.update(parse_attrs(page_match.group("attrs"), where))
                if not defaults.keys() <= PAGE_ATTRIBUTES.keys():
                    raise MarkerError(f"{where}: a page marker takes only: server")
                continue
            match = _MARKER.match(token.content)
            if match:
                if pending is not None:
                    where = f"{page}:{pending[1] + 1}"
                    raise MarkerError(f"{where}: a marker with no block")
                where = f"{page}:{start + 1}"
                pending = (parse_attrs(match.group("attrs"), where), start, end)
            continue
        if token.type not in ("fence", "code_block"):
            if pending is not None:
                raise MarkerError(
                    f"{page}:{pending[1] + 1}: a marker must be followed by its "
                    "fence, with only blank lines between"
                )
            continue
        attrs: dict[str, str] = {}
        if pending is not None:
            attrs, mline, mend = pending
            if any(line.strip() for line in lines[mend:start]):
                raise MarkerError(
                    f"{page}:{mline + 1}: a marker must be followed by its fence, "
                    "with only blank lines between"
                )
            pending = None
        lang, content, dropped = _language(token.info, token.content)
        body = start + 1 + dropped + (token.type == "fence")
        block = Block(page, start + 1, end + 1, lang, content, attrs, body, defaults)
        previous = blocks[-1] if blocks else None
        if (
            previous is not None
            and previous.is_python
            and block.lang == "text"
            and not attrs
            and not any(line.strip() for line in lines[previous.end - 1 : start])
        ):
            previous.output = block
        blocks.append(block)
    if pending is not None:
        raise MarkerError(f"{page}:{pending[1] + 1}: a marker with no block")
    _check_stray_markers(page, lines, blocks)
    return blocks


def _language(info: str, content: str) -> tuple[str, str, int]:
    """A fence's language, content and how many lines of options were
    dropped from it: a MyST ``{code-block} console`` directive is a
    ``console`` block without its ``:option:`` lines."""
    words = info.split()
    if words and words[0] in ("{code-block}", "{code}", "{sourcecode}"):
        lines = content.split("\n")
        dropped = 0
        while lines and lines[0].startswith(":"):
            lines.pop(0)
            dropped += 1
        return (words[1] if len(words) > 1 else ""), "\n".join(lines), dropped
    return (words[0] if words else ""), content, 0


def _check_stray_markers(page: str, lines: list[str], blocks: list[Block]) -> None:
    """A ``docs-test:`` comment that markdown-it did not read as a marker
    (inside a paragraph, say) would be ignored silently: refuse it."""
    fenced = {n for b in blocks for n in range(b.line, b.end)}
    for number, line in enumerate(lines, 1):
        line = re.sub(r"`[^`]*`", "", line)  # a marker quoted as code is text
        stray = not (_MARKER.match(line) or _PAGE_MARKER.match(line))
        if "<!-- docs-test" in line and number not in fenced and stray:
            raise MarkerError(
                f"{page}:{number}: write a marker alone on its line(s), "
                "as <!-- docs-test: ... -->, before a fence"
            )


def doc_pages() -> list[Path]:
    """The pages the docs tests read: ``docs/*.md`` and ``README.md``."""
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def all_blocks() -> Iterator[Block]:
    for path in doc_pages():
        yield from page_blocks(path)


def tested_blocks() -> list[Block]:
    """The blocks that get a test item: run, skipped or written as a file."""
    return [b for b in all_blocks() if b.action != "none"]


def summary(blocks: list[Block]) -> str:
    """The counts that the "100 %" rests on: deepaas blocks, run (a file
    that a later block serves counts as run), skipped (by reason)."""
    deepaas = [b for b in blocks if b.calls_deepaas]
    run = [b for b in deepaas if b.action in ("run", "file")]
    files = [b for b in run if b.action == "file"]
    skipped = [b for b in deepaas if b.action == "skip"]
    other = [b for b in blocks if not b.calls_deepaas and b.action in ("run", "file")]
    reasons = Counter(b.attrs["reason"] for b in skipped)
    lines = [
        f"docs: {len(deepaas)} blocks call deepaas: {len(run)} run "
        f"({len(files)} of them written as files that later blocks serve), "
        f"{len(skipped)} skipped with a reason, "
        f"{len(deepaas) - len(run) - len(skipped)} neither; "
        f"{len(other)} other blocks run or written as files",
    ]
    lines += [f"  skipped {n}x: {reason}" for reason, n in reasons.most_common()]
    return "\n".join(lines)


def main() -> int:
    blocks = list(all_blocks())
    for block in blocks:
        mark = "D" if block.calls_deepaas else " "
        why = block.attrs.get("reason") or block.attrs.get("file") or ""
        print(f"{block.id:32} {block.lang or '-':10} {mark} {block.action:5} {why}")
    print(summary(blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
