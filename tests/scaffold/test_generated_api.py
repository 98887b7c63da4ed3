"""The model of a package from ``deepaas-cli new`` (``NAME/api.py``),
called in this process: what ``train()`` refuses (rows that are not two
finite numbers, values too large to fit) and that it never saves a line
``predict()`` cannot use; and that the README's commands work as written.

``test_generated_plugin.py`` installs and serves the same package.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from deepaas.scaffold import plugin

pytestmark = pytest.mark.timeout(60)

NAME = "line_model"
NOT_FINITE = "expected two finite numbers x,y (not nan or inf)"
TOO_LARGE = "cannot fit a line to these values (too large, or too close together)"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return plugin.create(NAME, tmp_path / NAME).directory


@pytest.fixture
def api(package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The package's api module, its state directory a temporary one."""
    monkeypatch.setenv("DEEPAAS_STATE_DIR", str(tmp_path / "state"))
    spec = importlib.util.spec_from_file_location(
        f"_scaffold_{NAME}_api", package / NAME / "api.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upload(tmp_path: Path, name: str, text: str) -> SimpleNamespace:
    """What deepaas passes for an uploaded file."""
    path = tmp_path / f"upload-{name}"
    path.write_text(text)
    return SimpleNamespace(filename=str(path), original_filename=name)


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        (
            "0,1\n1,nan\n",
            f"bad.csv, line 3: {NOT_FINITE}, got ['1', 'nan']",
        ),
        (
            "0,1\ninf,2\n",
            f"bad.csv, line 3: {NOT_FINITE}, got ['inf', '2']",
        ),
        (
            "0,1\n1,-Infinity\n",
            f"bad.csv, line 3: {NOT_FINITE}, got ['1', '-Infinity']",
        ),
        (
            "0,1\n1,oops\n",
            "bad.csv, line 3: expected two numbers x,y, got ['1', 'oops']",
        ),
        (
            "0,1\n1,2,3\n",
            "bad.csv, line 3: expected two numbers x,y, got ['1', '2', '3']",
        ),
        ("0,1\n1\n", "bad.csv, line 3: expected two numbers x,y, got ['1']"),
        ("0,1e308\n1,-1e308\n", f"bad.csv: {TOO_LARGE}"),
        ("1e308,0\n-1e308,1\n", f"bad.csv: {TOO_LARGE}"),
        ("0,0\n1e-200,1e-200\n", f"bad.csv: {TOO_LARGE}"),
        ("0,0\n0,1\n", "bad.csv: a line needs points at two different x at least"),
    ],
    ids=[
        "nan",
        "inf",
        "-inf",
        "text",
        "three",
        "one",
        "huge-y",
        "huge-x",
        "tiny",
        "one-x",
    ],
)
def test_train_refuses_data_it_cannot_fit_and_saves_nothing(api, tmp_path, rows, said):
    with pytest.raises(ValueError) as raised:
        api.train(data=upload(tmp_path, "bad.csv", "x,y\n" + rows))
    assert str(raised.value) == said
    assert not api.model_file().exists()
    assert api.predict(x=[1.0])["trained"] is False


def test_a_refused_training_keeps_the_last_line(api, tmp_path):
    assert (
        api.train(data=upload(tmp_path, "good.csv", "x,y\n0,5\n1,2\n2,-1\n"))["slope"]
        == -3.0
    )
    saved = api.model_file().read_text()
    with pytest.raises(ValueError):
        api.train(data=upload(tmp_path, "bad.csv", "x,y\n0,1\n1,nan\n"))
    assert api.model_file().read_text() == saved
    assert api.predict(x=[4.0])["y"] == [-7.0]


def test_predict_says_to_train_again_over_a_model_file_without_a_line(api):
    # as a deepaas-cli new before this fix saved after training on NaN
    path = api.model_file()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"slope": None, "intercept": None}))
    with pytest.raises(
        ValueError, match=r"holds no usable line .*: train the model again"
    ):
        api.predict(x=[1.0])


def test_the_sample_data_trains(api):
    trained = api.train()
    assert trained["points"] == 20
    assert json.loads(api.model_file().read_text()) == {
        "slope": trained["slope"],
        "intercept": trained["intercept"],
    }


def test_the_readme_makes_the_file_it_uploads(package, api, tmp_path):
    readme = (package / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    for block in blocks:
        lines = block.splitlines()
        for number, line in enumerate(lines):
            for used in re.findall(r"@?([\w.-]+\.csv)", line):
                if f"> {used}" in line:
                    continue
                made = [earlier for earlier in lines[:number] if f"> {used}" in earlier]
                assert made or (package / used).exists(), (used, block)
    # the line that writes points.csv writes the data the README promises
    (made,) = {
        line.split("#")[0].strip()
        for line in readme.splitlines()
        if "> points.csv" in line
    }
    subprocess.run(["bash", "-c", made], cwd=tmp_path, check=True, timeout=30)
    points = tmp_path / "points.csv"
    trained = api.train(
        data=SimpleNamespace(filename=str(points), original_filename="points.csv")
    )
    assert (trained["slope"], trained["intercept"], trained["points"]) == (-3.0, 5.0, 3)
