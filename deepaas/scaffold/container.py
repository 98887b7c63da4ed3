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

What the package is (its name, models and metadata, read from its
``pyproject.toml`` or ``setup.cfg`` without importing it) is found by
:mod:`deepaas.scaffold.package`; this module makes the image of it: the
Dockerfile's values, the ``docker`` commands, and the files written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import deepaas
from deepaas.scaffold import ScaffoldError, refusal, render

# LOOKED_FOR was read from here before deepaas.scaffold.package held it.
from deepaas.scaffold.package import LOOKED_FOR as LOOKED_FOR
from deepaas.scaffold.package import PluginPackage, find_package

# Bases, as in docker/Dockerfile and docker/Dockerfile.cuda. The CPU image
# gets the Python this deepaas runs on, which the plugin was made with.
PYTHON_IMAGE = "python:{major}.{minor}-slim"
CUDA_IMAGE = "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
STATE_DIR = "/var/lib/deepaas"
_PLAIN_ENV = re.compile(r"[A-Za-z0-9_.,-]+")


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


def image_name(package: PluginPackage, gpu: bool) -> str:
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
    image = image_name(package, gpu)
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
