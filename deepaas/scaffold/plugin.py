"""``deepaas-cli new NAME``: write a plugin package that serves at once.

The package holds a small model that works (a straight line fitted by
least squares in pure Python: ``train`` saves it under the state directory,
``predict`` uses it), so that a newcomer sees every part of the plugin API
doing something before replacing it with their own model; a test that
trains and predicts through ``deepaas-cli``; and a README.

Everything is checked before anything is written, and the files are
written into a staging directory that is renamed into place: a refused or
failed ``new`` leaves nothing behind.
"""

from __future__ import annotations

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
from deepaas.scaffold import ScaffoldError, render

NAME_RULE = (
    "a model name is the name of its Python package and of its URLs "
    "(/v2/models/NAME/): lowercase ASCII letters, digits and underscores, "
    "starting with a letter, not a Python keyword"
)
_VALID = re.compile(r"[a-z][a-z0-9_]*")
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
    if keyword.iskeyword(candidate) or candidate in _RESERVED:
        candidate = f"{candidate}_model"
    return candidate


def check_name(name: str, target: Path | None = None) -> None:
    """Refuse a name that cannot be a package and a model name, a
    directory ``target`` in the way, or a name already taken here; the
    message gives the rule and a name that would do."""
    if not _VALID.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"{name!r} is not a valid model name: {NAME_RULE}; try {suggest(name)!r}"
        )
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
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ScaffoldError(f"{target} exists and is not a directory: nothing written")
    if target.is_dir():
        entries = sorted(entry.name for entry in target.iterdir())
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise ScaffoldError(
                f"{target} already exists and is not empty ({shown}): nothing "
                "written; choose another directory with --dir, or remove it"
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
    """Write the files under a staging directory next to ``target``, then
    rename it to ``target``: there is never a half-written package."""
    parent = target.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = parent / f".{target.name}.deepaas-new-{os.getpid()}"
        shutil.rmtree(stage, ignore_errors=True)  # left by a killed run of ours
        stage.mkdir()
    except OSError as exc:
        raise ScaffoldError(
            f"cannot create {target}: {exc.strerror or exc}", usage=False
        ) from None
    try:
        for relative, text in contents:
            path = stage / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        # Onto an empty directory too (rename(2) replaces an empty one).
        os.rename(stage, target)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if target.is_dir() and any(target.iterdir()):  # filled meanwhile
            raise ScaffoldError(
                f"{target} is not empty any more: nothing written"
            ) from None
        raise ScaffoldError(
            f"cannot write {target}: {exc.strerror or exc}", usage=False
        ) from None
