"""``deepaas-cli dockerize``: a Dockerfile for the plugin package in a
directory.

The image is the one ``docker/Dockerfile`` (CPU) or ``docker/Dockerfile.cuda``
(``--gpu``) builds, made for one package: deepaas pinned to the version that
writes the file (a build argument, ``DEEPAAS``, to change it), the package
installed from the build context with it in one resolve, only its models
served (``DEEPAAS_V2_MODEL``), the state directory a volume, dumb-init as
PID 1, OCI labels from the package's metadata, git, a non-root user,
``deepaas-run`` on 0.0.0.0 with a health check. It passes hadolint (the
tests lint both variants).

The package is found from its ``pyproject.toml`` (PEP 621:
``[project.entry-points."deepaas.v2.model"]``) or ``setup.cfg``
(``[options.entry_points]``, or pbr's ``[entry_points]``), read as text:
nothing is imported or installed to write the Dockerfile.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deepaas
from deepaas.model.loading import NAMESPACE
from deepaas.scaffold import ScaffoldError, plugin, refusal, render

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - tomli is a dependency below 3.11
    import tomli as tomllib

# Bases, as in docker/Dockerfile and docker/Dockerfile.cuda. The CPU image
# gets the Python this deepaas runs on, which the plugin was made with.
PYTHON_IMAGE = "python:{major}.{minor}-slim"
CUDA_IMAGE = "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
STATE_DIR = "/var/lib/deepaas"
LOOKED_FOR = (
    f'a pyproject.toml with a [project.entry-points."{NAMESPACE}"] table, or a '
    f"setup.cfg with a {NAMESPACE} entry point in [options.entry_points]"
)
# Where a package's URL is found among its [project.urls], most telling first.
_SOURCE_KEYS = ("source", "repository", "source code", "code", "homepage")
_PLAIN_ENV = re.compile(r"[A-Za-z0-9_.,-]+")
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


@dataclass(frozen=True)
class Dockerfile:
    """A Dockerfile written: where, for what, and how to use it."""

    path: Path
    package: PluginPackage
    gpu: bool
    base: str  # the base image
    deepaas_spec: str
    build_command: str
    run_command: str
    written: tuple[Path, ...]  # the Dockerfile, and .dockerignore if it was added
    warnings: tuple[str, ...] = field(default=())
    kept: Path | None = None  # the .dockerignore that was there, left alone


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


def deepaas_spec() -> tuple[str, str | None]:
    """What the image installs as deepaas: this version, pinned; and a
    warning when that version cannot be on PyPI (a development build)."""
    version = deepaas.__version__
    spec = f"deepaas=={version}"
    if ".dev" not in version and "+" not in version:
        return spec, None
    # Running from a checkout (pip install -e): its folder, to build from.
    root = Path(deepaas.__file__).resolve().parent.parent
    source = shlex.quote(str(root)) if (root / "pyproject.toml").is_file() else None
    wheel = f"deepaas-{version}-py3-none-any.whl"
    return spec, (
        f"deepaas {version} is a development version, not on PyPI: the image "
        "cannot install it from there. Put a wheel of it in the build context "
        f"(pip wheel --no-deps -w . {source or '/path/to/deepaas'}) and add "
        f"--build-arg DEEPAAS=/src/{wheel} to docker build"
    )


def _image_name(package: PluginPackage, gpu: bool) -> str:
    """``repository:tag`` for docker build -t, from the package's name and
    version (Docker allows lowercase names only)."""
    repo = re.sub(r"[^a-z0-9._-]+", "-", package.dist.lower()).strip("-._")
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", package.version or "latest")[:120]
    return f"{repo or 'model'}:{tag}{'-gpu' if gpu else ''}"


def _quote(value: str) -> str:
    """A Dockerfile double-quoted value (no variable expansion, one line)."""
    value = " ".join(value.split())
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _labels(package: PluginPackage) -> str:
    """The LABEL instruction's arguments: OCI annotations the package has."""
    prefix = "org.opencontainers.image."
    pairs = [
        ("title", package.dist),
        ("description", package.description),
        ("version", package.version),
        ("licenses", package.license),
        ("source", package.url),
        ("authors", package.authors),
    ]
    lines = [f"{prefix}{key}={_quote(value)}" for key, value in pairs if value]
    return " \\\n      ".join(lines)


def write(
    directory: Path = Path("."),
    *,
    gpu: bool = False,
    output: Path = Path("Dockerfile"),
    force: bool = False,
) -> Dockerfile:
    """Write the Dockerfile of the package in ``directory`` to ``output``
    (relative to ``directory``), and a ``.dockerignore`` if there is none.

    Refuses (:class:`ScaffoldError`, nothing written) outside a plugin
    package and over an existing file unless ``force``. The ``docker``
    commands it returns name ``directory`` as given (the build context).
    """
    for path in (directory, output):
        if any(not char.isprintable() for char in str(path)):
            raise ScaffoldError(
                f"{str(path)!r} holds a line break or another control character: "
                "the Dockerfile's comments name it; choose another path"
            )
    package = find_package(directory)
    target = directory / output
    ignore = directory / ".dockerignore"
    try:
        if target.is_dir():
            raise ScaffoldError(f"{target} is a directory: nothing written")
        if (target.exists() or target.is_symlink()) and not force:
            raise ScaffoldError(
                f"{target} already exists: nothing written; --force writes over "
                "it, or choose another file with --output"
            )
        if not target.parent.is_dir():
            raise ScaffoldError(
                f"{target.parent} is not a directory: nothing written; --output "
                "names a file in an existing directory"
            )
        kept = ignore if ignore.exists() or ignore.is_symlink() else None
    except OSError as exc:  # a name too long, a folder not searchable...
        raise refusal(exc, f"cannot write {target}") from None
    spec, warning = deepaas_spec()
    image = _image_name(package, gpu)
    # docker build reads CONTEXT/Dockerfile unless -f names another file.
    named = "" if output == Path("Dockerfile") else f" -f {shlex.quote(str(target))}"
    build = f"docker build{named} -t {image} {shlex.quote(str(directory))}"
    volume = f"{image.split(':')[0]}-state:{STATE_DIR}"
    gpus = " --gpus all" if gpu else ""
    run = f"docker run --rm{gpus} -p 5000:5000 -v {volume} {image}"
    models = ",".join(package.models)
    python_image = PYTHON_IMAGE.format(
        major=sys.version_info.major, minor=sys.version_info.minor
    )
    values = {
        "dist": package.dist,
        "models": models if _PLAIN_ENV.fullmatch(models) else _quote(models),
        "deepaas_version": deepaas.__version__,
        "deepaas_spec": spec,
        "labels": _labels(package),
        "build_command": build,
        "run_command": run,
        "python_image": python_image,
        "cuda_image": CUDA_IMAGE,
    }
    text = render(f"docker/Dockerfile.{'gpu' if gpu else 'cpu'}.tmpl", values)
    written = _write_files(
        target, text, None if kept else (ignore, render("docker/dockerignore.tmpl", {}))
    )
    return Dockerfile(
        path=target,
        package=package,
        gpu=gpu,
        base=CUDA_IMAGE if gpu else python_image,
        deepaas_spec=spec,
        build_command=build,
        run_command=run,
        written=written,
        warnings=(warning,) if warning else (),
        kept=kept,
    )


def _write_files(
    target: Path, text: str, ignore: tuple[Path, str] | None
) -> tuple[Path, ...]:
    """Write the Dockerfile (through a temporary file renamed over it) and
    the new ``.dockerignore`` (never over one that appeared meanwhile); on
    a failure, neither is left written."""
    partial = target.with_name(f".{target.name}.deepaas-{os.getpid()}")
    created: list[Path] = []
    try:
        if ignore is not None:
            with ignore[0].open("x") as fh:
                created.append(ignore[0])
                fh.write(ignore[1])
        with partial.open("w") as fh:
            created.append(partial)
            fh.write(text)
        os.replace(partial, target)
    except OSError as exc:
        for path in created:
            with contextlib.suppress(OSError):
                path.unlink()
        failed = exc.filename or target
        if failed == str(partial):
            failed = target
        raise ScaffoldError(
            f"cannot write {failed}: {exc.strerror or exc}: nothing written",
            usage=False,
        ) from None
    return (target, ignore[0]) if ignore is not None else (target,)
