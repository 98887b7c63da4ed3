"""A package from ``deepaas-cli new``, installed and served for real.

The package is built and installed by pip (``--no-deps --no-build-isolation
--target``: into a folder of the test's own, so this environment is left
as it was and there is nothing to uninstall); servers and commands find it,
its entry point included, with that folder on ``PYTHONPATH``. Then a real
``deepaas-run`` serves it (predict and train over HTTP), and the package's
own tests (``tests/test_predict.py``, through ``deepaas-cli``) pass.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepaas.scaffold import plugin
from tests.deepaas_run import REPO_ROOT, DeepaasRun, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NAME = "my_first_model"
MODEL = f"/v2/models/{NAME}/"
BOUNDARY = "scaffold-test-boundary"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the package's directory, the folder it is installed in)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is needed to build the package (--no-build-isolation)")
    root = tmp_path_factory.mktemp("scaffold")
    package = plugin.create(NAME, root / NAME).directory
    site = root / "site"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--no-index", "--target", str(site)),
            str(package),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entry_points = next(site.glob("*.dist-info")) / "entry_points.txt"
    assert entry_points.read_text().split() == [
        "[deepaas.v2.model]",
        NAME,
        "=",
        f"{NAME}.api",
    ]
    assert (site / NAME / "sample.csv").is_file()  # package data in the wheel
    return package, site


@pytest.fixture
def server(installed: tuple[Path, Path], tmp_path: Path) -> Iterator[DeepaasRun]:
    """``deepaas-run --model-name NAME`` with its state directory given as a
    flag (workers see it as $DEEPAAS_STATE_DIR all the same)."""
    _, site = installed
    run = DeepaasRun(
        tmp_path,
        "--model-name",
        NAME,
        "--state-dir",
        str(tmp_path / "state"),
        "--devices",
        "cpu",
        path=[site],
    )
    try:
        yield run.wait_ready()
    finally:
        run.close()


def csv_upload(field: str, filename: str, content: str) -> tuple[bytes, dict[str, str]]:
    """A multipart body with one file part, and its Content-Type header."""
    body = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
        f"{content}\r\n--{BOUNDARY}--\r\n"
    ).encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def train(server: DeepaasRun, body: bytes | None = None, **headers: str) -> Any:
    """Start a training and wait for its end; its record."""
    status, raw, _ = server.call("POST", f"{MODEL}train/", body, headers)
    assert status == 200, raw
    uuid = json.loads(raw)["uuid"]

    def finished() -> Any:
        status, record = server.request("GET", f"{MODEL}train/{uuid}")
        assert status == 200, record
        return record if record["status"] not in ("queued", "running") else None

    return until(finished, "the training ends", timeout=60)


def test_serves_predicts_and_trains_over_http(server, tmp_path):
    status, document = server.request("GET", MODEL)
    assert status == 200
    model_file = str(tmp_path / "state" / "models" / NAME / "model.json")
    assert document["trained"] is False
    assert document["model_file"] == model_file  # --state-dir reached the plugin

    status, answer = server.request("POST", f"{MODEL}predict/?x=1&x=2")
    assert (status, answer) == (
        200,
        {"y": [0.0, 0.0], "slope": 0.0, "intercept": 0.0, "trained": False},
    )
    assert server.request("POST", f"{MODEL}predict/") == (
        422,
        {"x": ["Missing data for required field."]},
    )

    record = train(server)  # no file: the sample data, y = 2x + 1 with noise
    assert record["status"] == "done", record
    output = record["result"]["output"]
    assert output["points"] == 20
    assert output["slope"] == pytest.approx(2, abs=0.1)
    assert output["model_file"] == model_file

    # the workers read the new line at once, without a restart
    status, answer = server.request("POST", f"{MODEL}predict/?x=10")
    assert status == 200
    assert answer["trained"] is True
    assert answer["y"] == [pytest.approx(21, abs=0.5)]

    body, headers = csv_upload("data", "points.csv", "x,y\n0,5\n1,2\n2,-1\n")
    record = train(server, body, **headers)
    assert record["status"] == "done", record
    assert record["args"]["data"]["original_filename"] == "points.csv"
    output = record["result"]["output"]
    assert (output["slope"], output["intercept"]) == (-3.0, 5.0)
    assert server.request("POST", f"{MODEL}predict/", {"x": [4]}) == (
        200,
        {"y": [-7.0], "slope": -3.0, "intercept": 5.0, "trained": True},
    )

    body, headers = csv_upload("data", "bad.csv", "x,y\n1,oops\n")
    record = train(server, body, **headers)
    assert record["status"] == "error"
    assert "bad.csv, line 2: expected two numbers x,y" in record["message"]

    # NaN trains nothing: the user is told, and the last line is kept
    body, headers = csv_upload("data", "nan.csv", "x,y\n0,1\n1,nan\n")
    record = train(server, body, **headers)
    assert record["status"] == "error"
    assert "nan.csv, line 3: expected two finite numbers x,y" in record["message"]
    assert server.request("POST", f"{MODEL}predict/", {"x": [4]}) == (
        200,
        {"y": [-7.0], "slope": -3.0, "intercept": 5.0, "trained": True},
    )


def test_the_packages_own_tests_pass(installed):
    package, site = installed
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPAAS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO_ROOT)])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=package,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
