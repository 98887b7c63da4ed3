"""A tensor-native plugin whose signature is malformed stops ``deepaas-run``
before it listens, with one line naming the plugin, what is wrong and the
line of ``get_infer_signature()`` (a real ``deepaas-run`` process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deepaas_run import run_to_exit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

BAD_DATATYPE = """import numpy as np


def get_infer_signature():
    return {
        "inputs": [{"name": "x", "datatype": "float32", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
    }


def infer(x):
    return {"y": x}
"""

NO_INFER = """
def get_infer_signature():
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
    }
"""


@pytest.mark.parametrize(
    ("source", "detail", "line"),
    [
        (
            BAD_DATATYPE,
            "get_infer_signature() 'inputs'[0] ('x'): datatype 'float32' is not "
            "an OIP datatype; use one of BOOL, UINT8",
            4,
        ),
        (
            NO_INFER,
            "get_infer_signature() is defined but infer() is not: define "
            "infer(**arrays) returning a dict of output arrays, or remove "
            "get_infer_signature()",
            2,
        ),
    ],
)
def test_a_malformed_signature_is_a_start_up_error(
    tmp_path: Path, source: str, detail: str, line: int
) -> None:
    plugin = tmp_path / "tensors.py"
    plugin.write_text(source)
    proc = run_to_exit(str(plugin), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "ready in" not in proc.stderr  # refused before listening
    assert (
        f"deepaas-run: error: cannot load model 'tensors' (plugin {plugin}): {detail}"
    ) in proc.stderr
    assert f"at {plugin}:{line}\n" in proc.stderr
