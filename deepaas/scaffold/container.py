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
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deepaas
from deepaas.model.loading import NAMESPACE
from deepaas.scaffold import ScaffoldError, render

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


def find_package(directory: Path) -> PluginPackage:
    """The plugin package in ``directory``, or :class:`ScaffoldError`
    saying what was looked for."""
    found: dict[str, Any] = {}
    models: list[str] = []
    pyproject = directory / "pyproject.toml"
    setup_cfg = directory / "setup.cfg"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ScaffoldError(f"{pyproject} is not valid TOML: {exc}") from None
        project = data.get("project") or {}
        found = _pep621_metadata(project)
        points = (project.get("entry-points") or {}).get(NAMESPACE) or {}
        models = [str(name) for name in points]
    if setup_cfg.is_file():
        cfg_found, cfg_models = _setup_cfg(setup_cfg)
        found = {**cfg_found, **{k: v for k, v in found.items() if v}}
        models = models or cfg_models
    if not models:
        seen = [p.name for p in (pyproject, setup_cfg) if p.is_file()]
        what = f"{' and '.join(seen)} declare" if seen else "found"
        raise ScaffoldError(
            f"no plugin package in {directory.resolve()}: looked for {LOOKED_FOR}; "
            f"{what} none. Run dockerize in the directory of your plugin "
            "package (deepaas-cli new NAME writes one)"
        )
    return PluginPackage(
        directory=directory,
        dist=found.get("dist") or directory.resolve().name,
        models=tuple(models),
        version=found.get("version"),
        description=found.get("description"),
        license=found.get("license"),
        url=found.get("url"),
        authors=found.get("authors"),
    )


def _pep621_metadata(project: dict[str, Any]) -> dict[str, Any]:
    """The labels' values from a ``[project]`` table (text values only)."""

    def text(value: Any) -> str | None:
        return value.strip() or None if isinstance(value, str) else None

    license_ = project.get("license")
    if isinstance(license_, dict):  # the older {text = "..."} form
        license_ = license_.get("text")
    urls = {str(k).lower(): v for k, v in (project.get("urls") or {}).items()}
    authors = [
        _person(a.get("name"), a.get("email"))
        for a in project.get("authors") or []
        if isinstance(a, dict)
    ]
    return {
        "dist": text(project.get("name")),
        "version": text(project.get("version")),
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
    except configparser.Error as exc:
        raise ScaffoldError(f"{path} cannot be read: {exc}") from None
    models: list[str] = []
    for section in ("options.entry_points", "entry_points"):
        lines = parser.get(section, NAMESPACE, fallback="").splitlines()
        models += [line.split("=")[0].strip() for line in lines if "=" in line]

    def text(key: str) -> str | None:
        value = parser.get("metadata", key, fallback="").strip()
        # "attr: pkg.__version__", "file: VERSION": not known without running
        return None if not value or value.startswith(("attr:", "file:")) else value

    author = _person(text("author"), text("author_email"))
    found = {
        "dist": text("name"),
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
    package = find_package(directory)
    target = directory / output
    if target.exists() and not force:
        raise ScaffoldError(
            f"{target} already exists: nothing written; --force writes over it, "
            "or choose another file with --output"
        )
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
    ignore = directory / ".dockerignore"
    written = [target]
    try:
        target.write_text(text)
        if not ignore.exists():
            ignore.write_text(render("docker/dockerignore.tmpl", {}))
            written.append(ignore)
    except OSError as exc:
        raise ScaffoldError(
            f"cannot write {exc.filename}: {exc.strerror}", usage=False
        ) from None
    return Dockerfile(
        path=target,
        package=package,
        gpu=gpu,
        base=CUDA_IMAGE if gpu else python_image,
        deepaas_spec=spec,
        build_command=build,
        run_command=run,
        written=tuple(written),
        warnings=(warning,) if warning else (),
    )
