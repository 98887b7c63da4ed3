"""``deepaas-cli`` for someone new to it: the version says which deepaas
runs, options after the sub-command work or say where they go, broken
plugins name their file and line, and ``report()`` under ``train`` shows
progress instead of warning on every call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import deepaas
import deepaas.training
from deepaas.cmd import cli
from deepaas.model import loading
from deepaas.training import context, report
from tests.support import DEMO_SPECS

pytestmark = pytest.mark.timeout(60)

SCRIPT = Path(sys.executable).with_name("deepaas-cli")
REPORTER = loading.PluginSpec("reporter", "tests.cli.reporter")
BROKEN = loading.PluginSpec("broken", "tests.plugins.import_fails")
BROKEN_FILE = str(Path(__file__).parents[1] / "plugins" / "import_fails.py")


def run(capsys: pytest.CaptureFixture[str], *argv: str, specs: Any = DEMO_SPECS):
    code = cli.main(list(argv), specs=specs)
    out, err = capsys.readouterr()
    return code, out, err


def test_version_says_which_deepaas_and_where():
    env = {k: v for k, v in os.environ.items() if k != "DEEPAAS_V2_MODEL"}
    env["COLUMNS"] = "20"  # one line, however narrow the terminal
    proc = subprocess.run(
        [str(SCRIPT), "--version"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0
    folder = os.path.dirname(os.path.abspath(deepaas.__file__))
    assert proc.stdout.strip() == (
        f"deepaas-cli {deepaas.__version__} from {folder} "
        f"(Python {sys.version.split()[0]})"
    )


# -- --model-name after the sub-command -------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--model-name", "demo_class", "--data", "hi"],
        ["predict", "--data", "hi", "--model-name=demo_class"],
    ],
)
def test_model_name_after_the_sub_command_works(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert json.loads(out)["upper"] == "HI"


def test_model_name_after_the_sub_command_beats_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("DEEPAAS_V2_MODEL", "demo")
    code, out, _ = run(capsys, "predict", "--model-name", "demo_class", "--data", "x")
    assert code == 0
    assert json.loads(out)["upper"] == "X"


def test_model_name_after_the_sub_command_lists_unknown_models(capsys):
    code, out, err = run(capsys, "get_metadata", "--model-name", "nope")
    assert (code, out) == (2, "")
    assert "model(s) nope not installed; installed: demo, demo_class" in err


def test_model_name_after_the_sub_command_is_ambiguous_for_a_model_that_has_one(
    capsys,
):
    code, out, err = run(
        capsys, "predict", "--model-name", "reporter", specs=[REPORTER]
    )
    assert (code, out) == (2, "")
    assert "has an argument of that name" in err
    assert "deepaas-cli --model-name reporter predict --model-name VALUE" in err
    # before the sub-command it names the model; after, it is the argument
    code, out, _ = run(
        capsys,
        "--model-name",
        "reporter",
        "predict",
        "--model-name",
        "theirs",
        specs=[REPORTER],
    )
    assert code == 0
    assert json.loads(out)["predictions"] == {"model-name": "theirs"}


@pytest.mark.parametrize("option", ["--debug", "--version"])
def test_other_global_options_after_the_sub_command_say_where_they_go(capsys, option):
    code, out, err = run(
        capsys, "--model-name", "demo_class", "predict", "--data", "x", option
    )
    assert (code, out) == (2, "")
    assert f"unrecognized arguments: {option}" in err
    assert "global options go before the sub-command" in err
    assert "deepaas-cli --debug --model-name NAME predict" in err


# -- broken plugins ------------------------------------------------------------------


def test_broken_plugin_names_file_and_line(capsys):
    code, out, err = run(capsys, "get_metadata", specs=[BROKEN])
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0] == (
        "deepaas-cli: error: cannot load model 'broken' (entry point "
        "tests.plugins.import_fails): RuntimeError: weights.h5 not found, "
        f"at {BROKEN_FILE}:3"
    )
    assert lines[1:] == ["deepaas-cli: --debug shows the full traceback"]
    assert "Traceback" not in err


def test_broken_plugin_traceback_with_debug(capsys):
    code, _, err = run(capsys, "--debug", "get_metadata", specs=[BROKEN])
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert f'File "{BROKEN_FILE}", line 3' in err
    assert "--debug shows" not in err


# -- report() under train --------------------------------------------------------------


def test_report_under_train_prints_progress_and_never_warns(capsys, monkeypatch):
    monkeypatch.setattr(deepaas.training, "_warned_outside", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the command
        code, out, err = run(capsys, "train", "--steps", "500", specs=[REPORTER])
    assert code == 0, err
    assert json.loads(out) == {"steps": 500}
    progress = [
        line for line in err.splitlines() if line.startswith("deepaas-cli: progress: ")
    ]
    # At most one line a second, and the last values when train() ends.
    assert 1 <= len(progress) <= 5, progress
    last = json.loads(progress[-1].split("progress: ", 1)[1])
    assert last == {"step": 499, "loss": 1.0 / 500}
    assert "outside a training" not in err
    assert context.progress_sink() is None  # nothing left behind


def test_report_outside_any_training_warns_once(monkeypatch):
    monkeypatch.setattr(deepaas.training, "_warned_outside", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(5):
            report(step=step)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "outside a training" in messages[0]
