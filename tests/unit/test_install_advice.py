"""What the docs, READMEs and examples tell a newcomer to install.

A bare ``pip install torch`` pulls gigabytes of CUDA libraries: every
command we give installs the pinned CPU build. And a plugin that requires
``deepaas``, installed before this deepaas, brings DEEPaaS 2.6.0 from PyPI:
the install pages say to install deepaas first.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_TORCH = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TEXT = (".md", ".py", ".toml", ".txt", ".cfg", ".ini", ".rst", ".sh", ".yaml", ".yml")
# "pip install" up to the end of the command as written (a line, a backtick,
# a quote), when it installs torch.
COMMAND = re.compile(r"pip install[^\n`\"']*?\btorch\b[^\n`\"']*")
# CI installs from this workplace's own wheel mirror, not from advice.
NOT_ADVICE = {".ci/run", "tests/unit/test_install_advice.py"}


def _files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [
        ROOT / name
        for name in listed
        if name not in NOT_ADVICE
        and (name.endswith(TEXT) or Path(name).name.startswith("Dockerfile"))
        and (ROOT / name).is_file()
    ]


def test_every_torch_install_command_is_the_pinned_cpu_build():
    bad = []
    for path in _files():
        text = path.read_text(errors="replace")
        for match in COMMAND.finditer(text):
            before = text[max(0, match.start() - 8) : match.start()]
            if "bare" in before:  # "a bare `pip install torch` pulls CUDA"
                continue
            if CPU_TORCH not in match.group(0):
                line = text.count("\n", 0, match.start()) + 1
                bad.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)}")
    assert not bad, "\n".join(bad)


def test_the_check_finds_a_bare_torch_install():
    found = [m.group(0) for m in COMMAND.finditer("run `pip install torch` first")]
    assert found == ["pip install torch"]
    assert [m.group(0) for m in COMMAND.finditer(f"`{CPU_TORCH}`")] == [CPU_TORCH]


@pytest.mark.parametrize("page", ["docs/quickstart.md", "docs/plugins.md", "README.md"])
def test_install_pages_say_to_install_deepaas_before_the_plugin(page):
    text = " ".join((ROOT / page).read_text().split())
    assert "DEEPaaS 2.6.0" in text
    assert "deepaas-run --version" in text
    assert re.search(r"[Ii]nstall (this )?deepaas\b.{0,100}?(first|before)", text)
