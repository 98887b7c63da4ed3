"""The plugin package in a directory, as ``deepaas-cli dockerize`` needs to
know it: its distribution name, its models (``deepaas.v2.model`` entry
points) and the metadata that becomes the image's labels.

The package is found from its ``pyproject.toml`` (PEP 621:
``[project.entry-points."deepaas.v2.model"]``) or ``setup.cfg``
(``[options.entry_points]``, or pbr's ``[entry_points]``), read as text:
nothing is imported or installed. Reading a package's declarations is a
question of its own (what a package is, and what in it is refused), apart
from :mod:`deepaas.scaffold.container`, which turns what is found here into
a Dockerfile.
"""

from __future__ import annotations

import configparser
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepaas.model.loading import NAMESPACE
from deepaas.scaffold import ScaffoldError, plugin, refusal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - tomli is a dependency below 3.11
    import tomli as tomllib

LOOKED_FOR = (
    f'a pyproject.toml with a [project.entry-points."{NAMESPACE}"] table, or a '
    f"setup.cfg with a {NAMESPACE} entry point in [options.entry_points]"
)
# Where a package's URL is found among its [project.urls], most telling first.
_SOURCE_KEYS = ("source", "repository", "source code", "code", "homepage")
# A distribution's name (PEP 508), which the Dockerfile's comments and image
# name are made of.
_DIST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_ENTRY_POINTS = f'[project.entry-points."{NAMESPACE}"]'


@dataclass(frozen=True)
class PluginPackage:
    """What a Dockerfile needs to know of a plugin package."""

    directory: Path
    dist: str  # the distribution's name
    models: tuple[str, ...]  # its deepaas.v2.model entry-point names
    version: str | None = None  # None when not static (dynamic, attr:)
    description: str | None = None
    license: str | None = None
    url: str | None = None
    authors: str | None = None


def find_package(directory: Path) -> PluginPackage:
    """The plugin package in ``directory``, or :class:`ScaffoldError`
    saying what was looked for (or what in it is wrong)."""
    try:
        return _find_package(directory)
    except OSError as exc:  # not readable, a name too long...
        raise refusal(exc, f"cannot read the package in {directory}") from None


def _find_package(directory: Path) -> PluginPackage:
    found: dict[str, Any] = {}
    models: list[str] = []
    pyproject = directory / "pyproject.toml"
    setup_cfg = directory / "setup.cfg"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ScaffoldError(f"{pyproject} is not valid TOML: {exc}") from None
        project = _table(data.get("project"), pyproject, "[project]")
        found = _pep621_metadata(project, pyproject)
        points = _table(
            project.get("entry-points"), pyproject, "[project.entry-points]"
        )
        table = _table(points.get(NAMESPACE), pyproject, _ENTRY_POINTS)
        for name, value in table.items():
            _check_entry_point(pyproject, _ENTRY_POINTS, name, value)
        models = list(table)
    if setup_cfg.is_file():
        cfg_found, cfg_models = _setup_cfg(setup_cfg)
        found = {**cfg_found, **{k: v for k, v in found.items() if v}}
        models = models or cfg_models
    if not models:
        seen = [p.name for p in (pyproject, setup_cfg) if p.is_file()]
        verb = "declares" if len(seen) == 1 else "declare"
        what = f"{' and '.join(seen)} {verb}" if seen else "found"
        raise ScaffoldError(
            f"no plugin package in {directory.resolve()}: looked for {LOOKED_FOR}; "
            f"{what} none. Run dockerize in the directory of your plugin "
            "package (deepaas-cli new NAME writes one)"
        )
    dist = found.get("dist")
    if dist is None:  # no name declared: the directory's, if it would do
        dist = directory.resolve().name
        if not _DIST_NAME.fullmatch(dist):
            raise ScaffoldError(
                f"the package in {directory.resolve()} declares no name, and "
                f"its directory's name {plugin.shown(dist)} is not a valid one: "
                'add name = "..." to [project] in pyproject.toml'
            )
    return PluginPackage(
        directory=directory,
        dist=dist,
        models=tuple(models),
        version=found.get("version"),
        description=found.get("description"),
        license=found.get("license"),
        url=found.get("url"),
        authors=found.get("authors"),
    )


def _table(value: Any, path: Path, key: str) -> dict[str, Any]:
    """The TOML table ``key`` (empty when absent), or a refusal."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScaffoldError(f"{path}: {key} must be a table, not {value!r}")
    return value


def _check_entry_point(path: Path, table: str, name: Any, value: Any) -> None:
    """Refuse an entry point whose name is not a model name (the name goes
    into the Dockerfile and into every URL) or whose value is not a
    ``module`` or ``module:object`` string."""
    problem = plugin.name_problem(name)
    if problem:
        raise ScaffoldError(f"{path}: an entry point in {table}: {problem}")
    if not isinstance(value, str) or not value.strip():
        raise ScaffoldError(
            f"{path}: the entry point {name!r} in {table} must be a string "
            f'naming a module ({name} = "{name}.api"), not {value!r}'
        )


def _dist_name(value: Any, path: Path, key: str) -> str | None:
    """A declared distribution name, checked (PEP 508)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _DIST_NAME.fullmatch(value.strip()):
        raise ScaffoldError(
            f"{path}: {key} must be a package name (ASCII letters, digits, "
            f"'.', '_' and '-', starting and ending with a letter or a digit), "
            f"not {plugin.shown(value) if isinstance(value, str) else repr(value)}"
        )
    return value.strip()


def _pep621_metadata(project: dict[str, Any], path: Path) -> dict[str, Any]:
    """The labels' values from a ``[project]`` table; a name or version
    that is not a string is refused, other values that are not are left
    out."""

    def text(value: Any) -> str | None:
        return value.strip() or None if isinstance(value, str) else None

    version = project.get("version")
    if version is not None and not isinstance(version, str):
        raise ScaffoldError(
            f"{path}: version in [project] must be a string, not {version!r}"
        )

    license_ = project.get("license")
    if isinstance(license_, dict):  # the older {text = "..."} form
        license_ = license_.get("text")
    urls_table = project.get("urls")
    urls_table = urls_table if isinstance(urls_table, dict) else {}
    urls = {str(k).lower(): v for k, v in urls_table.items()}
    people = project.get("authors")
    authors = [
        _person(a.get("name"), a.get("email"))
        for a in (people if isinstance(people, list) else [])
        if isinstance(a, dict)
    ]
    return {
        "dist": _dist_name(project.get("name"), path, "name in [project]"),
        "version": text(version),
        "description": text(project.get("description")),
        "license": text(license_),
        "url": next((text(urls[k]) for k in _SOURCE_KEYS if k in urls), None),
        "authors": ", ".join(a for a in authors if a) or None,
    }


def _person(name: Any, email: Any) -> str:
    """``Name <email>``, or what there is of it."""
    parts = [str(name).strip() if name else "", f"<{email}>" if email else ""]
    return " ".join(part for part in parts if part)


def _setup_cfg(path: Path) -> tuple[dict[str, Any], list[str]]:
    """Metadata and entry-point names from a setuptools or pbr setup.cfg."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ScaffoldError(f"{path} cannot be read: {exc}") from None
    models: list[str] = []
    for section in ("options.entry_points", "entry_points"):
        lines = parser.get(section, NAMESPACE, fallback="").splitlines()
        for line in lines:
            if not line.strip():
                continue
            name, _, value = line.partition("=")
            where = f"[{section}] {NAMESPACE}"
            _check_entry_point(path, where, name.strip(), value.strip() or None)
            models.append(name.strip())

    def text(key: str) -> str | None:
        value = parser.get("metadata", key, fallback="").strip()
        # "attr: pkg.__version__", "file: VERSION": not known without running
        return None if not value or value.startswith(("attr:", "file:")) else value

    author = _person(text("author"), text("author_email"))
    found = {
        "dist": _dist_name(text("name"), path, "name in [metadata]"),
        "version": text("version"),
        "description": text("description") or text("summary"),
        "license": text("license"),
        "url": text("url") or text("home_page") or text("home-page"),
        "authors": author or None,
    }
    return found, models
