"""``deepaas-cli new NAME``: write a plugin package that serves at once.

The package holds a small model that works (a straight line fitted by
least squares in pure Python: ``train`` saves it under the state directory,
``predict`` uses it), so that a newcomer sees every part of the plugin API
doing something before replacing it with their own model; a test that
trains and predicts through ``deepaas-cli``; and a README.

Everything is checked before anything is written, and the files are
written into a staging directory that is renamed into place (a new
directory), or whose entries are renamed into an existing empty directory
(which is kept as it is: its owner, mode and ACLs, and a shell inside it,
``--dir .``): a refused or failed ``new`` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import importlib.util
import keyword
import os
import re
import shutil
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import deepaas
from deepaas.model.loading import NAMESPACE
from deepaas.scaffold import ScaffoldError, refusal, render

NAME_RULE = (
    "a model name is the name of its Python package and of its URLs "
    "(/v2/models/NAME/): lowercase ASCII letters, digits and underscores, "
    "starting with a letter, not a Python keyword"
)
_VALID = re.compile(r"[a-z][a-z0-9_]*")
# The name is a folder's and a module's name, and pip adds to it in file
# names (NAME.egg-info, __editable___NAME_0_1_0_finder.py): well within the
# 255 bytes a file name may have on common file systems.
MAX_NAME = 100
# Names that would shadow what the package or its tests import.
_RESERVED = {"deepaas", "test", "tests"}

# Each file of the package (NAME: the package's name) and what it is, said
# after writing. The template of each is file-templates/plugin/<path>.tmpl
# (.gitignore: gitignore.tmpl, as tools may skip hidden package data).
FILES = {
    "pyproject.toml": f"the package and its {NAMESPACE} entry point",
    "NAME/__init__.py": "",
    "NAME/api.py": "the model: the functions deepaas calls",
    "NAME/sample.csv": "training data (x,y)",
    "tests/test_predict.py": "trains and predicts through deepaas-cli",
    "README.md": "how to serve, call, test and ship it",
    ".gitignore": "",
}


@dataclass(frozen=True)
class Created:
    """What ``new`` wrote: the package directory and its files (relative
    paths, each with what it is)."""

    name: str
    directory: Path
    files: tuple[tuple[str, str], ...]


def suggest(name: str) -> str:
    """A valid model name close to ``name`` (``My-Model`` -> ``my_model``)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    candidate = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    if not candidate:
        return "my_model"
    if not candidate[0].isalpha():
        candidate = f"model_{candidate}"
    candidate = candidate[:MAX_NAME].rstrip("_")
    if keyword.iskeyword(candidate) or candidate in _RESERVED:
        candidate = f"{candidate}_model"
    return candidate


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted, its start only when it is long (a message stays
    one readable line)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}..."


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a model name (the rule and a name that would
    do), or None when it can (by its form: see :func:`check_name`)."""
    if len(name) > MAX_NAME:
        return (
            f"{shown(name)} is not a valid model name: {len(name)} characters, "
            f"at most {MAX_NAME} (it names the package's folder and files, and "
            f"a file name has at most 255 bytes); try {suggest(name)!r}"
        )
    if not _VALID.fullmatch(name) or keyword.iskeyword(name):
        return (
            f"{shown(name)} is not a valid model name: {NAME_RULE}; "
            f"try {suggest(name)!r}"
        )
    return None


def check_name(name: str, target: Path | None = None) -> None:
    """Refuse a name that cannot be a package and a model name, a
    directory ``target`` in the way, or a name already taken here; the
    message gives the rule and a name that would do."""
    problem = name_problem(name)
    if problem:
        raise ScaffoldError(problem)
    if target is not None:  # before "taken": a second `new NAME` says this
        _check_target(target)
    if name in _RESERVED or name in sys.stdlib_module_names:
        raise ScaffoldError(
            f"{name!r} is taken: a package of that name would hide the module "
            f"{name!r} that Python or deepaas imports; try {name + '_model'!r}"
        )
    for entry_point in importlib.metadata.entry_points(group=NAMESPACE):
        if entry_point.name == name:
            owner = entry_point.dist.name if entry_point.dist else "a package"
            raise ScaffoldError(
                f"model name {name!r} is taken: {owner} already declares it "
                f"({entry_point.value}); choose another name, or pip uninstall "
                f"{owner} first"
            )
    spec = importlib.util.find_spec(name)
    if spec is not None:
        where = spec.origin or ", ".join(spec.submodule_search_locations or [])
        raise ScaffoldError(
            f"a module named {name!r} is already installed ({where}): the new "
            "package would clash with it; choose another name"
        )


def _check_target(target: Path) -> None:
    """Refuse a ``target`` that cannot become the package's directory: a
    file, a directory that is not empty or not writable, a path through a
    file, one too long or that cannot be looked into."""
    try:
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise ScaffoldError(
                f"{target} exists and is not a directory: nothing written"
            )
        if target.is_dir():
            entries = sorted(entry.name for entry in target.iterdir())
            if entries:
                more = ", ..." if len(entries) > 3 else ""
                raise ScaffoldError(
                    f"{target} already exists and is not empty "
                    f"({', '.join(entries[:3])}{more}): nothing written; choose "
                    "another directory with --dir, or remove it"
                )
            _check_writable(target)
            return
        # A new directory: its nearest existing parent must be a writable
        # directory (``filemodel/sub``: filemodel is a file).
        for parent in target.parents:  # as given: filemodel, not /home/...
            if parent.is_dir():
                _check_writable(parent)
                return
            if parent.exists() or parent.is_symlink():
                raise ScaffoldError(f"{parent} is not a directory: nothing written")
    except OSError as exc:  # too long, not searchable, a loop of links...
        raise refusal(exc, f"cannot use {target}") from None


def _check_writable(directory: Path) -> None:
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ScaffoldError(
            f"{directory} is not writable: nothing written; choose another "
            "directory with --dir"
        )


def requirement() -> str:
    """The generated package's requirement on deepaas: this deepaas or a
    later one, which also keeps DEEPaaS 2.x (what PyPI's ``deepaas`` is) out."""
    return f"deepaas>={deepaas.__version__}"


def create(name: str, directory: Path | None = None) -> Created:
    """Write the plugin package ``name`` into ``directory`` (default:
    ``./name``), which must not exist or be empty. Raises
    :class:`ScaffoldError` (nothing written) when it cannot."""
    target = Path(name) if directory is None else directory
    check_name(name, target)
    values = {
        "name": name,
        "dist": name.replace("_", "-"),
        "deepaas_requirement": requirement(),
    }
    contents = [
        (path.replace("NAME", name), render(f"plugin/{path.lstrip('.')}.tmpl", values))
        for path in FILES
    ]
    _write_atomically(target, contents)
    described = tuple(
        (path.replace("NAME", name), what) for path, what in FILES.items()
    )
    return Created(name=name, directory=target, files=described)


def _write_atomically(target: Path, contents: list[tuple[str, str]]) -> None:
    """Write the files under a staging directory, then rename it to
    ``target`` (a new directory) or rename its entries into ``target`` (an
    existing empty one, kept as it is): there is never a half-written
    package, and on a failure nothing is left (not even the parents made)."""
    absolute = target.absolute()
    existing = absolute.is_dir()
    made: list[Path] = []  # parent directories made, to remove on a failure
    try:
        if existing:
            stage = absolute / f".deepaas-new-{os.getpid()}"
        else:
            for parent in reversed(absolute.parents):
                if not parent.is_dir():
                    parent.mkdir()
                    made.append(parent)
            stage = absolute.parent / f".{absolute.name}.deepaas-new-{os.getpid()}"
        shutil.rmtree(stage, ignore_errors=True)  # left by a killed run of ours
        stage.mkdir()
    except OSError as exc:
        _remove_made(made)
        raise ScaffoldError(
            f"cannot create {target}: {exc.strerror or exc}", usage=False
        ) from None
    moved: list[Path] = []
    try:
        for relative, text in contents:
            path = stage / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        if not existing:
            os.rename(stage, absolute)
            return
        for entry in sorted(stage.iterdir()):
            destination = absolute / entry.name
            if os.path.lexists(destination):  # filled meanwhile
                raise FileExistsError(errno.EEXIST, "File exists", str(destination))
            os.rename(entry, destination)
            moved.append(destination)
        stage.rmdir()
    except OSError as exc:
        for path in moved:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        shutil.rmtree(stage, ignore_errors=True)
        _remove_made(made)
        if isinstance(exc, FileExistsError) or (
            not existing and isinstance(exc, OSError) and exc.errno == errno.ENOTEMPTY
        ):
            raise ScaffoldError(
                f"{target} is not empty any more: nothing written"
            ) from None
        raise ScaffoldError(
            f"cannot write {target}: {exc.strerror or exc}", usage=False
        ) from None


def _remove_made(made: list[Path]) -> None:
    """Remove the (empty) parent directories this run made, deepest first."""
    for directory in reversed(made):
        with contextlib.suppress(OSError):
            directory.rmdir()
