"""Every module of deepaas imports on its own, first, in a fresh
interpreter: no import cycle hides behind the order the server happens to
import them in (``deepaas.oip.mapping`` once failed when imported first)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

EACH_FIRST = """
import importlib, pkgutil, sys
import deepaas
names = sorted(m.name for m in pkgutil.walk_packages(deepaas.__path__, "deepaas."))
failed = []
for name in names:
    for key in [k for k in sys.modules if k == "deepaas" or k.startswith("deepaas.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {exc!r}")
print(len(names))
print("\\n".join(failed))
"""


@pytest.mark.timeout(120)
def test_every_module_imports_first() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", EACH_FIRST],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr
    count, _, failed = proc.stdout.partition("\n")
    assert int(count) > 100  # the walk found the package's modules
    assert failed.strip() == ""
