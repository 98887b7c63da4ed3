"""``deepaas-cli new`` and ``deepaas-cli dockerize``: the sub-commands that
write files instead of running a model.

They belong to ``deepaas-cli`` rather than to a new program because that
is the tool a plugin author already has and already uses to try a model
(``deepaas-cli predict``); one more entry point would be one more name to
learn and to find on ``PATH``. They load no model, so they work with no
plugin installed at all (which is when ``new`` is needed most).

What was written, and the commands to run next, go to stdout; errors are
one line on stderr, ``deepaas-cli: error: ...``, with exit status 2 when the
request is refused before anything is written (a bad name, a directory or
Dockerfile in the way, a directory that is not writable, a path too long, no
plugin package here) and 1 when writing failed (a full disk, ...); in both
cases nothing is left written.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NoReturn

from deepaas.cmd.cli_output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, CliError
from deepaas.scaffold import ScaffoldError, container, plugin

TOOLS = {
    "new": "Write a new plugin package (a small working model, a test, a README).",
    "dockerize": "Write a Dockerfile for the plugin package in this directory.",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with the usage line, as the other sub-commands."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _new_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} new",
        description=(
            "Write a plugin package for the model NAME: pyproject.toml with its "
            "deepaas.v2.model entry point, NAME/api.py (a straight line fitted by "
            "train() and used by predict(), to replace with your model), "
            "tests/test_predict.py and a README. Then: pip install -e NAME && "
            "deepaas-run --model-name NAME."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "name",
        metavar="NAME",
        help=f"The model's name, also its package's: {plugin.NAME_RULE}.",
    )
    parser.add_argument(
        "--dir",
        metavar="PATH",
        type=Path,
        help="Write the package there (a new or empty directory). Default: ./NAME",
    )
    return parser


def _dockerize_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} dockerize",
        description=(
            "Write a Dockerfile for the plugin package in this directory (a "
            "pyproject.toml or setup.cfg with a deepaas.v2.model entry point): "
            "deepaas pinned to this version, the package, only its models served, "
            "the state directory as a volume, an init, OCI labels, a non-root "
            "user; also a .dockerignore if there is none. Prints the docker "
            "build and docker run lines."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help=f"Build on NVIDIA's CUDA runtime image ({container.CUDA_IMAGE}).",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        type=Path,
        default=Path("Dockerfile"),
        help="The file to write, in the package directory. Default: Dockerfile",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="Write over an existing file.",
    )
    parser.add_argument(
        "--dir",
        metavar="PATH",
        type=Path,
        default=Path("."),
        help="The plugin package's directory (the build context). Default: .",
    )
    return parser


def _new(argv: Sequence[str], out: IO[str]) -> None:
    args = _new_parser().parse_args(argv)
    created = plugin.create(args.name, args.dir)
    where = str(created.directory)
    print(f"Created the plugin package {created.name} in {where}/:", file=out)
    width = max(len(path) for path, _ in created.files)
    for path, what in created.files:
        print(f"  {path:<{width}}  {what}".rstrip(), file=out)
    quoted = shlex.quote(where)
    url = f"http://127.0.0.1:5000/v2/models/{created.name}/predict/?x=1&x=2"
    print("Serve it (in the environment where deepaas is installed):", file=out)
    print(f"  pip install -e {quoted}", file=out)
    print(f"  deepaas-run --model-name {created.name}", file=out)
    print("Then, in another terminal:", file=out)
    print(f'  curl -s -X POST "{url}"', file=out)


def _dockerize(argv: Sequence[str], out: IO[str]) -> None:
    args = _dockerize_parser().parse_args(argv)
    made = container.write(args.dir, gpu=args.gpu, output=args.output, force=args.force)
    kind = "GPU (CUDA)" if made.gpu else "CPU"
    models = ", ".join(made.package.models)
    print(
        f"Wrote {made.path}: a {kind} image of {made.package.dist} "
        f"(on {made.base}, with {made.deepaas_spec}; serves {models})",
        file=out,
    )
    for extra in made.written[1:]:
        print(f"Wrote {extra}", file=out)
    if made.kept is not None:
        print(f"Kept your {made.kept} (not written over)", file=out)
    print("Build and run it:", file=out)
    print(f"  {made.build_command}", file=out)
    print(f"  {made.run_command}", file=out)
    for warning in made.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)


def run_tool(command: str, argv: Sequence[str], out: IO[str]) -> int:
    """Run ``new`` or ``dockerize`` with the arguments after it."""
    try:
        {"new": _new, "dockerize": _dockerize}[command](argv, out)
    except ScaffoldError as exc:
        raise CliError(str(exc), EXIT_USAGE if exc.usage else EXIT_FAILED) from None
    except OSError as exc:  # one the scaffold did not expect: still one line
        where = f"{exc.filename}: " if exc.filename else ""
        raise CliError(
            f"{command}: {where}{exc.strerror or exc}", EXIT_FAILED
        ) from None
    return EXIT_OK
