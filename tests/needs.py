"""Optional test dependencies: a test that needs one skips without it, and
its skip reason says what to install (``make test`` lists the skipped tests
with their reasons: ``-rs`` in pyproject.toml's pytest options).

``make install`` installs the ``tests`` extra; the model frameworks are not
in it (gigabytes: torch alone pulls CUDA unless given the CPU index), so
their tests skip on a plain checkout. README.md, "Development", says how to
run them; ``.ci/run`` installs them.
"""

from __future__ import annotations

from typing import Any

import pytest

TESTS_EXTRA = "make install, or pip install -e '.[tests]'"
TORCH = (
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu "
    "(the CPU build; a bare 'pip install torch' pulls gigabytes of CUDA)"
)

#: What to install for each optional module the tests import.
INSTALL = {
    "torch": TORCH,
    "onnxruntime": "pip install -e '.[onnx]'",
    "onnx": "pip install onnx (it builds the test models)",
    "tensorflow": "pip install -e '.[tensorflow]'",
    "keras": "pip install -e '.[tensorflow]'",
    "PIL": "pip install -e '.[image]'",
    "tomli": "pip install tomli (Python 3.10: tomllib is 3.11's)",
    "kserve": TESTS_EXTRA,
    "tritonclient": TESTS_EXTRA,
    "openapi_spec_validator": TESTS_EXTRA,
    "schemathesis": TESTS_EXTRA,
    "hypothesis": TESTS_EXTRA,
    "jsonschema": TESTS_EXTRA,
    "jsonschema_rs": TESTS_EXTRA,
    "backports": TESTS_EXTRA,  # backports.zstd (Python 3.14 has compression.zstd)
}


def needs(module: str) -> Any:
    """``pytest.importorskip(module)``, skipping with the reason ``needs
    MODULE: how to install it``; the module (a submodule, with dots)."""
    __tracebackhide__ = True  # the skip is reported at the caller's line
    top = module.split(".")[0]
    how = INSTALL.get(top, f"pip install {top}")
    return pytest.importorskip(module, reason=f"needs {top}: {how}")
