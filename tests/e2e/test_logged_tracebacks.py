"""A plugin's traceback is in the log at its summary's level (issue 15):
``deepaas-run --log-level WARNING`` shows the line saying a request, a
worker's start or a training failed, with the traceback under it, in one
record, for each of the three; and a plugin's own ``logging.exception``
(no logging set up) keeps its level and traceback too."""

from __future__ import annotations

import re

import pytest

from tests.deepaas_run import until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

#: The first line of a log record (a traceback's lines are not).
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def record(output: str, summary: str) -> list[str]:
    """The lines of the log record whose first line holds ``summary``."""
    lines = output.splitlines()
    for start, line in enumerate(lines):
        if summary in line and RECORD.match(line):
            end = start + 1
            while end < len(lines) and not RECORD.match(lines[end]):
                end += 1
            if "ready in" in "".join(lines[start:end]):  # the banner came between
                end = next(
                    (i for i in range(start + 1, end) if "ready in" in lines[i]), end
                )
            return lines[start:end]
    raise AssertionError(f"no record with {summary!r} in:\n{output}")


def test_tracebacks_show_at_log_level_warning(server, tmp_path):
    srv = server(
        "--log-level",
        "WARNING",
        "--state-dir",
        str(tmp_path / "state"),
        "--plugin",
        "raising=tests.plugins.raising",
        "--plugin",
        "broken_warm=tests.plugins.broken_warm",
    ).wait_ready()
    status, body = srv.request("POST", "/v2/models/raising/predict/?x=7")
    assert (status, body) == (500, {"message": "ValueError: the model cannot take x=7"})
    status, body = srv.request("POST", "/v2/models/raising/predict/?x=8&log=true")
    assert (status, body) == (200, {"status": "OK", "predictions": "logged"})
    status, training = srv.request("POST", "/v2/models/raising/train/", {})
    assert status == 200, training
    path = f"/v2/models/raising/train/{training['uuid']}"
    until(
        lambda: srv.request("GET", path)[1]["status"] == "error", "the training failed"
    )
    until(lambda: "the training diverged\n" in srv.output(), "the training is logged")
    output = srv.output()

    predict = record(output, "POST /v2/models/raising/predict/ -> 500: ValueError")
    assert " WARNING deepaas.api.errors: " in predict[0]
    assert predict[1] == "  Traceback (most recent call last):"
    assert any("in deep_in_the_model" in line for line in predict)
    assert predict[-1] == "  ValueError: the model cannot take x=7"

    warm = record(output, "model broken_warm: worker failed at warm")
    assert " ERROR deepaas.engine.pool: " in warm[0]
    assert warm[1] == "  Traceback (most recent call last):"
    assert any("broken_warm.py" in line and "in warm" in line for line in warm)
    assert warm[-1] == "  RuntimeError: weights not found"

    own = record(output, "predict could not use x=8")
    assert " ERROR deepaas.worker: " in own[0]
    assert own[0].endswith("[raising/0] predict could not use x=8")
    assert own[1] == "  Traceback (most recent call last):"
    assert own[-1] == "  ValueError: the model cannot take x=8"

    train = record(output, f"training {training['uuid']} of model raising: error")
    assert " WARNING deepaas.training.scheduler: " in train[0]
    assert train[0].endswith("error: RuntimeError: the training diverged")
    assert any("in deep_in_the_training" in line for line in train)
    assert train[-1] == "  RuntimeError: the training diverged"

    # no traceback line is a record of its own (at INFO, say)
    assert not any(
        RECORD.match(line) and "Traceback" in line for line in output.splitlines()
    )
