"""``deepaas-cli new NAME``: the package it writes, and what it refuses.

The command runs in this process (:func:`deepaas.cmd.cli.main`), in a
temporary directory; the package it writes is installed and served by
``test_generated_plugin.py``.
"""

from __future__ import annotations

import ast
import errno
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepaas.cmd import cli
from deepaas.scaffold import TEMPLATES, plugin
from tests.deepaas_run import register_plugins

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

pytestmark = pytest.mark.timeout(60)

NAME = "my_first_model"
SCAFFOLD = Path(plugin.__file__).parent


def new(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["new", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, out: str, err: str) -> str:
    """A refusal: exit status 2, one line on stderr (no traceback), nothing
    on stdout; the line, without its prefix."""
    assert (code, out) == (2, ""), err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deepaas-cli: error: ")
    return lines[0].removeprefix("deepaas-cli: error: ")


def test_writes_a_package_and_says_what_to_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = new(capsys, NAME)
    assert (code, err) == (0, "")
    written = sorted(
        str(p.relative_to(tmp_path / NAME)) for p in (tmp_path / NAME).rglob("*")
    )
    expected = [path.replace("NAME", NAME) for path in plugin.FILES]
    assert [p for p in written if (tmp_path / NAME / p).is_file()] == sorted(expected)
    assert [p.name for p in tmp_path.iterdir()] == [NAME]  # no staging left over
    for path in expected:
        assert f"  {path}" in out
    assert f"  pip install -e {NAME}\n" in out
    assert f"  deepaas-run --model-name {NAME}\n" in out
    assert f"/v2/models/{NAME}/predict/?x=1&x=2" in out


def test_the_package_declares_the_entry_point_and_its_data(tmp_path):
    created = plugin.create(NAME, tmp_path / "pkg")
    project = tomllib.loads((created.directory / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["deepaas.v2.model"] == {
        NAME: f"{NAME}.api"
    }
    assert project["project"]["name"] == NAME.replace("_", "-")
    import deepaas

    assert f"deepaas>={deepaas.__version__}" in project["project"]["dependencies"]
    assert project["tool"]["setuptools"]["packages"] == [NAME]
    assert project["tool"]["setuptools"]["package-data"] == {NAME: ["*.csv"]}
    module = ast.parse((created.directory / NAME / "api.py").read_text())
    functions = {n.name for n in module.body if isinstance(n, ast.FunctionDef)}
    for name in ("get_metadata", "warm", "get_predict_args", "predict"):
        assert name in functions
    assert {"get_train_args", "train"} <= functions
    test = (created.directory / "tests" / "test_predict.py").read_text()
    assert f'MODEL = "{NAME}"' in test
    assert "deepaas.cmd.cli" in test
    compile(test, "test_predict.py", "exec")


def test_generated_python_is_lint_clean(tmp_path):
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install ruff)")
    created = plugin.create(NAME, tmp_path / "pkg")
    for command in (["check"], ["format", "--check"]):
        proc = subprocess.run(
            [ruff, *command, "--isolated", "--no-cache", str(created.directory)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_template_is_package_data():
    # pyproject.toml ships file-templates/**/*.tmpl: a template with another
    # name would be missing from the wheel.
    project = tomllib.loads((SCAFFOLD.parents[1] / "pyproject.toml").read_text())
    globs = project["tool"]["setuptools"]["package-data"]["deepaas.scaffold"]
    assert globs == [f"{TEMPLATES}/**/*.tmpl"]
    files = [p for p in (SCAFFOLD / TEMPLATES).rglob("*") if p.is_file()]
    assert files
    assert [p for p in files if p.suffix != ".tmpl"] == []


def test_dir_may_be_new_nested_or_empty(capsys, tmp_path):
    code, out, _ = new(capsys, NAME, "--dir", str(tmp_path / "a" / "b"))
    assert code == 0
    assert (tmp_path / "a" / "b" / NAME / "api.py").is_file()
    assert f"pip install -e {tmp_path / 'a' / 'b'}\n" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert new(capsys, NAME, "--dir", str(empty))[0] == 0
    assert (empty / "pyproject.toml").is_file()


def test_refuses_a_directory_that_is_not_empty(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "notes.txt").write_text("mine")
    line = refused(*new(capsys, NAME))
    assert line == (
        f"{NAME} already exists and is not empty (notes.txt): nothing written; "
        "choose another directory with --dir, or remove it"
    )
    assert [p.name for p in (tmp_path / NAME).iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == [NAME]


def test_refuses_a_file_in_the_way(capsys, tmp_path):
    (tmp_path / "taken").write_text("")
    line = refused(*new(capsys, NAME, "--dir", str(tmp_path / "taken")))
    assert "exists and is not a directory: nothing written" in line


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("my-model", "my_model"),
        ("MyModel", "mymodel"),
        ("my model", "my_model"),
        ("2fast", "model_2fast"),
        ("_private", "private"),
        ("class", "class_model"),
        ("café", "cafe"),
        ("-", "my_model"),
    ],
)
def test_refuses_a_name_that_is_not_an_identifier(
    capsys, tmp_path, monkeypatch, name, suggestion
):
    monkeypatch.chdir(tmp_path)
    line = refused(*new(capsys, "--", name))
    assert line == (
        f"{name!r} is not a valid model name: {plugin.NAME_RULE}; try {suggestion!r}"
    )
    assert list(tmp_path.iterdir()) == []
    assert plugin.suggest(suggestion) == suggestion  # the suggestion is valid
    plugin.check_name(suggestion)


@pytest.mark.parametrize("name", ["json", "deepaas", "tests", "pytest"])
def test_refuses_a_name_that_would_hide_a_module(capsys, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    line = refused(*new(capsys, name))
    assert f"{name!r}" in line
    assert "choose another name" in line or f"try {name + '_model'!r}" in line
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_model_name_another_package_declares(capsys, tmp_path, monkeypatch):
    site = tmp_path / "site"
    register_plugins(site, "someone-else", {"taken_name": "elsewhere.api"})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.chdir(tmp_path)
    line = refused(*new(capsys, "taken_name"))
    assert line == (
        "model name 'taken_name' is taken: someone-else already declares it "
        "(elsewhere.api); choose another name, or pip uninstall someone-else first"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["site"]


def test_usage_errors(capsys):
    code, out, err = new(capsys)
    assert (code, out) == (2, "")
    assert "the following arguments are required: NAME" in err
    assert cli.main(["--model-name", "demo", "new", NAME]) == 2
    assert "new takes no --model-name" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert "new, dockerize" in capsys.readouterr().err


def test_a_second_new_of_the_same_name_says_the_directory_is_there(
    capsys, tmp_path, monkeypatch
):
    # after `new NAME && pip install -e NAME`, the name is taken too; the
    # directory is what the user sees first
    monkeypatch.chdir(tmp_path)
    assert new(capsys, NAME)[0] == 0
    site = tmp_path / "site"
    register_plugins(site, NAME, {NAME: f"{NAME}.api"})
    monkeypatch.syspath_prepend(str(site))
    line = refused(*new(capsys, NAME))
    assert line.startswith(f"{NAME} already exists and is not empty (.gitignore, ")


def failed(code: int, out: str, err: str) -> str:
    """A failure to write: exit status 1, one line on stderr, nothing on
    stdout; the line, without its prefix."""
    assert (code, out) == (1, ""), err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deepaas-cli: error: ")
    return lines[0].removeprefix("deepaas-cli: error: ")


def test_writes_into_an_existing_empty_directory_in_place(
    capsys, tmp_path, monkeypatch
):
    # `mkdir mine && cd mine && deepaas-cli new NAME --dir .`: the directory
    # is kept (the shell is still in it, its mode is the user's), not
    # replaced by a new one
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o750)
    mine.chmod(0o750)
    before = mine.stat()
    monkeypatch.chdir(mine)
    code, out, err = new(capsys, NAME, "--dir", ".")
    assert (code, err) == (0, "")
    after = mine.stat()
    assert (after.st_ino, after.st_dev, after.st_mode) == (
        before.st_ino,
        before.st_dev,
        before.st_mode,
    )
    assert Path.cwd().samefile(mine)
    assert sorted(p.name for p in mine.iterdir()) == sorted(
        {path.split("/")[0].replace("NAME", NAME) for path in plugin.FILES}
    )
    assert (mine / NAME / "api.py").is_file()
    assert "  pip install -e .\n" in out
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no staging


def test_a_failure_in_an_existing_directory_leaves_it_empty(
    capsys, tmp_path, monkeypatch
):
    empty = tmp_path / "empty"
    empty.mkdir()
    inode = empty.stat().st_ino
    renamed: list[str] = []
    real_rename = plugin.os.rename

    def rename(source, destination):
        if renamed:  # the second entry cannot be moved
            raise OSError(errno.ENOSPC, "No space left on device", str(destination))
        renamed.append(str(destination))
        real_rename(source, destination)

    monkeypatch.setattr(plugin.os, "rename", rename)
    line = failed(*new(capsys, NAME, "--dir", str(empty)))
    assert line == f"cannot write {empty}: No space left on device"
    assert renamed  # one entry was moved in, then removed
    assert list(empty.iterdir()) == []
    assert empty.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


def test_a_failure_in_a_new_directory_removes_the_parents_it_made(
    capsys, tmp_path, monkeypatch
):
    def write_text(self, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(self))

    monkeypatch.setattr(Path, "write_text", write_text)
    target = tmp_path / "a" / "b" / NAME
    line = failed(*new(capsys, NAME, "--dir", str(target)))
    assert line == f"cannot write {target}: Input/output error"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exists", [True, False], ids=["empty", "new"])
def test_refuses_a_directory_that_is_not_writable(
    capsys, tmp_path, monkeypatch, exists
):
    # root may write anywhere: os.access says what a user would be told
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(plugin.os, "access", lambda path, mode: Path(path) != locked)
    target = locked if exists else locked / "pkg"
    line = refused(*new(capsys, NAME, "--dir", str(target)))
    assert line == (
        f"{locked} is not writable: nothing written; choose another directory "
        "with --dir"
    )
    assert list(locked.iterdir()) == []


def test_refuses_a_path_through_a_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "filemodel").write_text("")
    line = refused(*new(capsys, NAME, "--dir", "filemodel/sub"))
    assert line == "filemodel is not a directory: nothing written"
    assert [p.name for p in tmp_path.iterdir()] == ["filemodel"]


def test_refuses_a_name_too_long_for_a_file_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "a" * 300
    line = refused(*new(capsys, name))
    assert line.startswith(f"{'a' * 40!r}... is not a valid model name: 300 ")
    assert f"at most {plugin.MAX_NAME} (" in line
    assert list(tmp_path.iterdir()) == []
    suggestion = plugin.suggest(name)
    assert len(suggestion) == plugin.MAX_NAME
    assert plugin.name_problem(suggestion) is None
    assert plugin.name_problem("a" * (plugin.MAX_NAME + 1)) is not None


def test_refuses_a_dir_with_a_component_too_long(capsys, tmp_path):
    target = tmp_path / ("b" * 300) / NAME
    line = refused(*new(capsys, NAME, "--dir", str(target)))
    assert line == f"cannot use {target}: File name too long: nothing written"
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_directory_that_cannot_be_looked_into(capsys, tmp_path, monkeypatch):
    # a parent that is not searchable (chmod a-x): lstat says EACCES to a
    # user (not to root, who runs this test: the error is made here)
    target = tmp_path / "closed" / NAME

    def is_symlink(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_symlink", is_symlink)
    line = refused(*new(capsys, NAME, "--dir", str(target)))
    assert line == f"cannot use {target}: Permission denied: nothing written"
    assert list(tmp_path.iterdir()) == []
