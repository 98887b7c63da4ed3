"""Property-based fuzzing of the example plugins over /openapi.json.

Schemathesis generates valid and invalid requests for every documented
operation of a running ``deepaas-run``; none may answer 5xx (bad input is a
4xx with a JSON message), and every answer must match the schema and media
types documented for its status. Run by its command line, as a user would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deepaas_run import DeepaasRun

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


def test_no_server_errors(tmp_path):
    srv = DeepaasRun(tmp_path, "--model-name", "demo,demo_class")
    try:
        srv.wait_ready()
        result = subprocess.run(
            [
                SCHEMATHESIS,
                "run",
                f"{srv.url}/openapi.json",
                "--checks",
                # every answer also matches the schema and the media types
                # the document gives its status (issue 8)
                "not_a_server_error,response_schema_conformance,"
                "content_type_conformance",
                "--max-examples",
                "40",
                "--seed",
                "20261122",
                "--generation-deterministic",
                "--request-timeout",
                "30",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=540,
            cwd=tmp_path,
        )
    finally:
        srv.stop()
        srv.close()
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "passed" in report.lower()
