"""Prepare the GPU check (issue 9): the wheels a GPU host without a package
index needs, in one folder that travels with the working tree.

Run here, where PyPI is reachable and no GPU is needed::

    python benchmarks/gpu/prepare.py [--dry-run] [--json] [--dest DIR]

It works out which packages deepaas needs that the GPU machine's image lacks:
the ``dependencies`` of deepaas's ``pyproject.toml`` and of the example
plugins' (``plugins-example/``, ``benchmarks/*_plugin/``), then those
packages' own runtime requirements, recursively, with the markers evaluated
for CPython 3.12 on Linux x86_64, minus what the image already has
(:data:`IMAGE_HAS`). Each one is downloaded as a wheel for CPython 3.12
manylinux x86_64 (or a pure-Python ``py3-none-any`` one), ``--no-deps``, one
version each: the version installed in the Python running this script when
it satisfies every range asked for (the one the test suite here ran with),
else the newest that does. deepaas itself and the example plugins are built
as wheels (``pip wheel --no-deps``) from copies of their sources.

Everything lands in ``--dest`` (default ``benchmarks/gpu/wheels``,
git-ignored), old wheels there replaced, with ``MANIFEST.json``: each wheel's
size, sha256 and why it is there, and what the image is expected to provide
with the ranges deepaas and the carried wheels ask of it (so that the run on
the GPU host can check them before anything else). The wheels must stay
under 64 MiB, the most one device call carries; together with the rest of
the working tree too, which travels in the same call.

``--dry-run`` resolves the same list without the network, from the metadata
of the packages installed in the running Python, prints what it would take,
and writes nothing.

Exit status: 0 done (or listed), 1 a download, a build or a check failed,
2 bad arguments or an unusable environment.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement  # type: ignore
    from pip._vendor.packaging.specifiers import SpecifierSet  # type: ignore
    from pip._vendor.packaging.utils import (  # type: ignore
        canonicalize_name,
        parse_wheel_filename,
    )
    from pip._vendor.packaging.version import Version  # type: ignore

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - deepaas supports 3.10; tomli is usually there
    try:
        import tomli as tomllib
    except ImportError:
        sys.exit("prepare.py needs Python 3.11+ (tomllib) or the tomli package")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO / "benchmarks" / "gpu" / "wheels"
MANIFEST = "MANIFEST.json"
MIB = 1024 * 1024
# The most one device call carries: the working tree and the carried paths
# together (.library/device/README.md, "Limits").
LIMIT_BYTES = 64 * MIB

# -- the GPU host ------------------------------------------------------------

# Its python3 is CPython 3.12.3 on Linux x86_64 (KINDS.md, "pip list").
TARGET_PYTHON = "3.12"
TARGET_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "implementation_version": "3.12.3",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "sys_platform": "linux",
    "os_name": "posix",
}
# pip matches each manylinux tag exactly: name the usual ones (the image's
# glibc is recent, so any of them installs there).
PLATFORMS = [
    "manylinux_2_39_x86_64",
    "manylinux_2_35_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]

# The Python packages the GPU image already has: the list under "Python
# packages already there" for nvidia-h200 in .library/device/KINDS.md, as read
# on a machine running the image on 2026-11-17. Versions are not listed there
# (a few are in its "pip list" row); MANIFEST.json records the ranges asked of
# each so that the run can check them on the host. Keep this the only copy;
# KINDS.md's list can be pasted in as it is, commas and all.
_IMAGE_LIST = """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc
    anyio attrs botorch build certifi charset-normalizer chex click cloudpickle
    cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
    cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
    execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
    gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
    jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader
    lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
    markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath
    msgpack multidict multipledispatch mypy-extensions nanobind narwhals
    networkx ninja numba numba-cuda numpy numpyro nvidia-cublas
    nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
    nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
    nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
    nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
    opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
    orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
    portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
    py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
    pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
    python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
    safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
    sentencepiece sentence-transformers setuptools shellingham simplejson six
    sortedcontainers statsmodels sympy tabulate tensorboard
    tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken
    timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
    torchmetrics torchvision tqdm transformers treescope triton typer
    typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug
    wheel wrapt xarray xxhash yarl zipp
"""
IMAGE_HAS = frozenset(
    canonicalize_name(name.strip("."))
    for name in re.split(r"[\s,]+", _IMAGE_LIST)
    if name.strip(".")
)


# -- what is built here --------------------------------------------------------


@dataclass(frozen=True)
class LocalProject:
    path: str  # relative to the repository root
    why: str
    # What to copy for the build (None: the whole folder, less build
    # leftovers); the repository root holds far more than deepaas's sources.
    sources: tuple[str, ...] | None = None


LOCAL_PROJECTS = (
    LocalProject(
        ".",
        "deepaas itself, from this working tree",
        ("pyproject.toml", "README.md", "setup.cfg", "LICENSE", "deepaas"),
    ),
    LocalProject(
        "plugins-example",
        "example plugins: demo, demo_class, demo_torch (a torch MLP)",
    ),
    LocalProject(
        "benchmarks/mlp_plugin",
        "bench_mlp: the torch MLP of benchmarks/batching.py (GPU batching)",
    ),
    LocalProject(
        "benchmarks/trivial_plugin",
        "bench_trivial: the trivial plugin of benchmarks/predict_overhead.py",
    ),
    LocalProject(
        "benchmarks/fault_plugin",
        "bench_faults: a plugin that crashes or sleeps on request (worker kills)",
    ),
)

_BUILD_LEFTOVERS = shutil.ignore_patterns(
    "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".*"
)


def read_project(root: Path) -> dict[str, Any]:
    with open(root / "pyproject.toml", "rb") as f:
        project: dict[str, Any] = tomllib.load(f)["project"]
    return project


# -- resolving ---------------------------------------------------------------


@dataclass(eq=False)
class Need:
    """A package to carry: who asks for it, and which version was chosen."""

    name: str  # canonical
    display: str  # as first spelled
    specifier: SpecifierSet = field(default_factory=SpecifierSet)
    extras: set[str] = field(default_factory=set)
    asked_by: dict[str, str] = field(default_factory=dict)  # requirer -> spec
    version: str | None = None
    requires: list[str] | None = None  # its Requires-Dist, once known
    note: str = ""
    wheel: Path | None = None

    def why(self) -> str:
        return "; ".join(
            f"{who} asks {spec}" if spec else f"{who} asks for it"
            for who, spec in self.asked_by.items()
        )


@dataclass
class Plan:
    carry: dict[str, Need]  # canonical name -> need, in discovery order
    image: dict[str, dict[str, str]]  # canonical name -> requirer -> spec
    local: list[tuple[LocalProject, dict[str, Any]]]


# A fetcher picks a version for a need and reads its requirements: from the
# installed metadata (dry run) or from the downloaded wheel.
Fetcher = Callable[[Need], None]


def active(req: Requirement, extras: Iterable[str]) -> bool:
    """Whether a requirement applies on the GPU host, given the extras."""
    if req.marker is None:
        return True
    return any(
        req.marker.evaluate({**TARGET_ENV, "extra": extra})
        for extra in ("", *sorted(extras))
    )


def resolve(
    local: list[tuple[LocalProject, dict[str, Any]]],
    fetch: Fetcher,
    include: Iterable[str] = (),
) -> Plan:
    """The packages to carry, from the local projects' dependencies down.

    ``include`` names packages to carry even though the image has them (for
    a version of the image's that is outside a range deepaas asks).
    """
    forced = {canonicalize_name(name) for name in include}
    local_names = {canonicalize_name(p["name"]): p for _, p in local}
    carry: dict[str, Need] = {}
    image: dict[str, dict[str, str]] = {}
    queue: deque[Need] = deque()

    def add(requirer: str, line: str, extras: Iterable[str] = ()) -> None:
        req = Requirement(line)
        if not active(req, extras):
            return
        name = canonicalize_name(req.name)
        spec = str(req.specifier)
        if name in local_names:  # built here: check the range instead
            version = local_names[name]["version"]
            if not req.specifier.contains(version, prereleases=True):
                raise SystemExit(
                    f"{requirer} asks {req.name}{spec}, but the one built here "
                    f"is {version}"
                )
            return
        if name in IMAGE_HAS and name not in forced:
            image.setdefault(name, {})[requirer] = spec
            return
        need = carry.get(name)
        if need is None:
            need = carry[name] = Need(name, req.name)
        need.asked_by[requirer] = spec
        need.specifier &= req.specifier
        grown = not set(req.extras) <= need.extras
        need.extras |= set(req.extras)
        if need.requires is None or grown:  # not read yet, or more extras
            if not any(queued is need for queued in queue):
                queue.append(need)
        elif need.version and not need.specifier.contains(
            need.version, prereleases=True
        ):
            raise SystemExit(
                f"{requirer} asks {req.name}{spec}, but {need.display} "
                f"{need.version} was already chosen for {need.why()}; pin a "
                "version that suits all of them in the environment running "
                "prepare.py"
            )

    for _, project in local:
        for line in project.get("dependencies", []):
            add(project["name"], line)
    for name in sorted(forced - set(carry)):
        add("--include", name)
    while queue:
        need = queue.popleft()
        if need.requires is None:
            fetch(need)
        for line in need.requires or ():
            add(f"{need.display} {need.version or ''}".strip(), line, need.extras)
    return Plan(carry, image, local)


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def fetch_installed(need: Need) -> None:
    """Dry run: the installed package's version and requirements."""
    try:
        dist = importlib.metadata.distribution(need.display)
    except importlib.metadata.PackageNotFoundError:
        need.note = (
            "not installed here: the version and its own requirements are "
            "read from the wheel when prepared for real"
        )
        need.requires = []
        return
    need.version = dist.version
    need.requires = list(dist.requires or [])
    if not need.specifier.contains(dist.version, prereleases=True):
        need.note = (
            f"installed {dist.version} is outside {need.specifier}: "
            "the newest inside would be downloaded"
        )
        need.version = None


# -- downloading and building --------------------------------------------------


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def tag_ok(filename: str) -> bool:
    """Whether a wheel installs on CPython 3.12, Linux x86_64."""
    _, _, _, tags = parse_wheel_filename(filename)
    for tag in tags:
        interp, abi, plat = tag.interpreter, tag.abi, tag.platform
        py_ok = interp in {"py3", "py312", "cp312"} or (
            abi == "abi3" and interp.startswith("cp3") and int(interp[3:] or 0) <= 12
        )
        abi_ok = abi in {"none", "abi3", "cp312"}
        plat_ok = plat == "any" or (
            plat.startswith("manylinux") and plat.endswith("_x86_64")
        )
        if py_ok and abi_ok and plat_ok:
            return True
    return False


def wheel_requires(path: Path) -> tuple[str, list[str]]:
    """(Version, Requires-Dist lines) from a wheel's METADATA."""
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise SystemExit(f"{path.name}: no single .dist-info/METADATA in it")
        meta = HeaderParser().parsestr(zf.read(names[0]).decode("utf-8"))
    return str(meta["Version"]), list(meta.get_all("Requires-Dist") or [])


class Downloader:
    """Real run: download each need's wheel into a staging folder."""

    def __init__(self, staging: Path, newest: bool) -> None:
        self.staging = staging
        self.newest = newest

    def __call__(self, need: Need) -> None:
        tried: list[str] = []
        here = None if self.newest else installed_version(need.display)
        if here is not None and need.specifier.contains(here, prereleases=True):
            tried.append(f"{need.display}=={here}")
        tried.append(f"{need.display}{need.specifier}")
        errors = []
        for spec in tried:
            folder = self.staging / need.name
            shutil.rmtree(folder, ignore_errors=True)
            args = ["download", "--no-deps", "--only-binary=:all:", "-q"]
            args += ["--python-version", TARGET_PYTHON, "--implementation", "cp"]
            args += ["--abi", "cp312"]
            for plat in PLATFORMS:
                args += ["--platform", plat]
            proc = pip(*args, "-d", str(folder), spec)
            files = sorted(folder.glob("*.whl")) if folder.is_dir() else []
            if proc.returncode == 0 and len(files) == 1:
                wheel = files[0]
                if not tag_ok(wheel.name):
                    raise SystemExit(f"{wheel.name}: not a CPython 3.12 x86_64 wheel")
                need.version, need.requires = wheel_requires(wheel)
                need.wheel = wheel
                if spec != tried[0]:
                    need.note = f"{here} (installed here) has no such wheel"
                print(f"  downloaded {wheel.name}", flush=True)
                return
            errors.append(f"pip download {spec}:\n{proc.stderr.strip()[-1500:]}")
        raise SystemExit("\n".join(errors))


def copy_sources(project: LocalProject, into: Path) -> Path:
    src = REPO / project.path
    dst = into / (src.name if project.path != "." else "deepaas-src")
    if project.sources is None:
        shutil.copytree(src, dst, ignore=_BUILD_LEFTOVERS)
        return dst
    dst.mkdir(parents=True)
    for name in project.sources:
        path = src / name
        if path.is_dir():
            shutil.copytree(path, dst / name, ignore=_BUILD_LEFTOVERS)
        elif path.is_file():
            shutil.copy2(path, dst / name)
    return dst


def build(project: LocalProject, staging: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the project's sources (a build in
    place could pick up a stale ``build/`` folder)."""
    src = copy_sources(project, staging / "src")
    out = staging / "built" / src.name
    args = ["wheel", "--no-deps", "-q", "-w", str(out)]
    try:  # no need to fetch a build backend when a recent one is here
        import setuptools

        if Version(setuptools.__version__) >= Version("77"):
            args.append("--no-build-isolation")
    except ImportError:
        pass
    proc = pip(*args, str(src))
    wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
    if proc.returncode != 0 or len(wheels) != 1:
        raise SystemExit(
            f"building {project.path} failed:\n{proc.stderr.strip()[-2000:]}"
        )
    if not tag_ok(wheels[0].name):
        raise SystemExit(f"{wheels[0].name}: not a pure-Python wheel")
    print(f"  built {wheels[0].name}", flush=True)
    return wheels[0]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_bytes(skip: Path) -> int | None:
    """What else travels with a device call: tracked and untracked, not
    ignored files of the working tree (None when git cannot say)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    total = 0
    skip = skip.resolve()
    for rel in out.decode("utf-8", "replace").split("\0"):
        path = REPO / rel
        if rel and path.is_file() and skip not in path.resolve().parents:
            total += path.stat().st_size
    return total


def size_problem(wheels: int, tree: int | None) -> str | None:
    """Why these sizes cannot travel in one device call, if they cannot."""
    limit = f"the {LIMIT_BYTES // MIB} MiB one device call carries"
    if wheels > LIMIT_BYTES:
        return f"the wheels take {wheels / MIB:.2f} MiB, over {limit}"
    if tree is not None and wheels + tree > LIMIT_BYTES:
        return (
            f"the wheels ({wheels / MIB:.2f} MiB) and the rest of the working "
            f"tree ({tree / MIB:.2f} MiB) make {(wheels + tree) / MIB:.2f} MiB, "
            f"over {limit}; ignore or remove large untracked files first"
        )
    return None


def git_state() -> dict[str, Any] | None:
    """The commit the deepaas wheel was built from, and whether the working
    tree had changes then (None when git cannot say)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "deepaas", "pyproject.toml"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "uncommitted_changes": bool(changed)}


# -- output ----------------------------------------------------------------------


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "target": {
            "python": TARGET_PYTHON,
            "implementation": "cp",
            "abi": "cp312",
            "platforms": PLATFORMS,
        },
        "image_list": ".library/device/KINDS.md, nvidia-h200, read 2026-11-17",
        "download": [
            {
                "name": need.display,
                "version": need.version,
                "why": need.why(),
                **({"note": need.note} if need.note else {}),
            }
            for need in plan.carry.values()
        ],
        "build": [
            {"name": p["name"], "version": p["version"], "path": lp.path, "why": lp.why}
            for lp, p in plan.local
        ],
        "image_provides": {
            name: {"asked_by": asked, "specifier": str(combined(asked))}
            for name, asked in sorted(plan.image.items())
        },
    }


def combined(asked: dict[str, str]) -> SpecifierSet:
    spec = SpecifierSet()
    for one in asked.values():
        spec &= SpecifierSet(one)
    return spec


def print_plan(plan: Plan) -> None:
    print(f"Wheels for CPython {TARGET_PYTHON}, manylinux x86_64 (or pure Python):")
    print("download from PyPI:")
    for need in plan.carry.values():
        version = f"=={need.version}" if need.version else str(need.specifier)
        print(f"  {need.display}{version}    ({need.why()})")
        if need.note:
            print(f"      {need.note}")
    print("build here (pip wheel --no-deps):")
    for lp, p in plan.local:
        print(f"  {p['name']} {p['version']}    ({lp.path}: {lp.why})")
    print("already in the GPU image (KINDS.md, 2026-11-17), not carried:")
    for name, asked in sorted(plan.image.items()):
        print(f"  {name}{combined(asked)}    (asked by {', '.join(asked)})")


# -- main ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DEST,
        help="folder for the wheels and MANIFEST.json (default: %(default)s)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be taken, from installed metadata; no network",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the plan as JSON (for tests)"
    )
    parser.add_argument(
        "--newest",
        action="store_true",
        help="the newest version in range, not the one installed here",
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="NAME",
        help="carry NAME even though the image has it (e.g. aiohttp, if the "
        "image's is older than deepaas asks); repeatable",
    )
    args = parser.parse_args(argv)

    local = [(lp, read_project(REPO / lp.path)) for lp in LOCAL_PROJECTS]
    if args.dry_run:
        plan = resolve(local, fetch_installed, args.include)
        if args.json:
            print(json.dumps(plan_json(plan), indent=2))
        else:
            print_plan(plan)
        return 0

    dest: Path = args.dest.resolve()
    with tempfile.TemporaryDirectory(prefix="deepaas-gpu-wheels-") as tmp:
        staging = Path(tmp)
        print("Resolving and downloading (pip download --no-deps):", flush=True)
        plan = resolve(local, Downloader(staging / "pypi", args.newest), args.include)
        print("Building (pip wheel --no-deps):", flush=True)
        built = [(lp, p, build(lp, staging)) for lp, p in plan.local]

        whys: list[tuple[Path, str, str]] = []  # wheel, source, why
        for need in plan.carry.values():
            assert need.wheel is not None
            whys.append((need.wheel, "pypi", need.why()))
        whys += [(wheel, lp.path, lp.why) for lp, _, wheel in built]
        files = [wheel for wheel, _, _ in whys]
        names = [canonicalize_name(parse_wheel_filename(f.name)[0]) for f in files]
        if len(set(names)) != len(names):
            raise SystemExit(f"two versions of one package: {sorted(names)}")
        entries: list[dict[str, Any]] = []
        total = 0
        for path, source, why in whys:
            name, version, _, _ = parse_wheel_filename(path.name)
            entry: dict[str, Any] = {"file": path.name, "name": str(name)}
            entry.update(version=str(version), source=source, why=why)
            entry["size"] = path.stat().st_size
            entry["sha256"] = sha256(path)
            total += entry["size"]
            entries.append(entry)

        tree = tree_bytes(dest)
        print(f"Wheels: {len(files)}, {total / MIB:.2f} MiB", end="")
        if tree is not None:
            print(f"; with the working tree: {(total + tree) / MIB:.2f} MiB", end="")
        print(f" (limit {LIMIT_BYTES // MIB} MiB a device call)")
        problem = size_problem(total, tree)
        if problem:
            print(f"error: {problem}. Nothing was written to {dest}", file=sys.stderr)
            return 1

        dest.mkdir(parents=True, exist_ok=True)
        for old in [*dest.glob("*.whl"), dest / MANIFEST]:
            old.unlink(missing_ok=True)
        for path in files:
            shutil.copy2(path, dest / path.name)
        manifest = plan_json(plan)
        del manifest["download"], manifest["build"]
        manifest["deepaas_source"] = git_state()
        manifest["wheels"] = entries
        manifest["total_bytes"] = total
        manifest["tree_bytes"] = tree
        manifest["limit_bytes"] = LIMIT_BYTES
        try:
            where = dest.relative_to(REPO).as_posix()
        except ValueError:
            where = str(dest)
        manifest["install"] = (
            f"python3 -m pip install --no-index --no-deps --target DIR {where}/*.whl"
        )
        (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    for entry in entries:
        print(f"  {entry['size'] / 1024:9.1f} KiB  {entry['file']}")
    print(f"Written to {dest} (with {MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
