"""``deepaas-cli``'s command line: the global options, the sub-command, and
one option per argument of the chosen model's method.

Kept apart from running the method (:mod:`deepaas.cmd.cli`) because it is
read on its own: ``tests/deploy`` checks every ``deepaas-cli`` flag the HPC
and OSCAR recipes pass against these parsers, without running a model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from deepaas.cmd import cli_batch
from deepaas.cmd.cli_options import add_field
from deepaas.cmd.cli_output import (
    EXIT_FAILED,
    EXIT_USAGE,
    OUTPUT_OPTION,
    PROG,
    CliError,
)
from deepaas.cmd.cli_tools import TOOLS
from deepaas.flags import VersionAction
from deepaas.model import loading
from deepaas.model.v2.fields import ArgSpec
from deepaas.model.v2.wrapper import ModelWrapper

COMMANDS = {
    "get_metadata": "Print the model's metadata document.",
    "warm": "Call the model's warm() and report whether it has one.",
    "predict": (
        "Run one prediction and print the result; with --input-dir or "
        "--inputs, one per file, into --output-dir (batch mode)."
    ),
    "train": "Run train() in this process and print its return value.",
}
NOWARM_OPTION = "--nowarm"
ENV_MODEL = "DEEPAAS_V2_MODEL"

# -- the top level: global options and the sub-command ---------------------


def top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Run an installed deepaas model's methods from the command line, "
            "in this process (no server). Global options come before the "
            "sub-command (--model-name may also follow it); "
            "'%(prog)s --model-name NAME predict --help' lists the model's own "
            "arguments. 'new' and 'dockerize' write a plugin package and its "
            "Dockerfile."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--model-name",
        action="append",
        default=[],
        metavar="NAME",
        help=(
            "The model to run (its entry-point name). Needed when several "
            f"models are installed. Default: ${ENV_MODEL}, else the only "
            "installed model."
        ),
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="Log at DEBUG level and print tracebacks of failures.",
    )
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(title="sub-commands", metavar="SUB-COMMAND")
    for name, text in {**COMMANDS, **TOOLS}.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def split_command(argv: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
    """``[global options] COMMAND [command options]`` -> the three parts."""
    index = 0
    while index < len(argv):
        token = argv[index]
        if token in COMMANDS or token in TOOLS:
            return list(argv[:index]), token, list(argv[index + 1 :])
        index += 2 if token == "--model-name" else 1
    return list(argv), None, []


MODEL_OPTION = "--model-name"
GLOBAL_HINT = (
    "global options go before the sub-command: "
    f"{PROG} --debug --model-name NAME predict [options]"
)


def late_model_names(rest: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--model-name X`` given after the sub-command: (the names, the rest
    without them)."""
    names: list[str] = []
    kept: list[str] = []
    index = 0
    while index < len(rest):
        token = rest[index]
        if token == "--":  # what follows is not options
            kept.extend(rest[index:])
            break
        if token == MODEL_OPTION and index + 1 < len(rest):
            names.append(rest[index + 1])
            index += 2
            continue
        if token.startswith(MODEL_OPTION + "="):
            names.append(token.split("=", 1)[1])
        else:
            kept.append(token)
        index += 1
    return names, kept


def model_names(given: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    raw = list(given) or [environ.get(ENV_MODEL, "")]
    return [n.strip() for item in raw for n in item.split(",") if n.strip()]


def choose(
    names: Sequence[str], available: Sequence[loading.PluginSpec] | None
) -> loading.PluginSpec:
    """The one model to run, or a usage error that lists the choices."""
    if len(names) > 1:
        raise CliError(
            f"{PROG} runs one model at a time; --model-name got {', '.join(names)}",
            EXIT_USAGE,
        )
    try:
        if available is None:
            specs = loading.discover(names)
        else:
            known = {spec.name: spec for spec in available}
            missing = [n for n in names if n not in known]
            if missing:
                raise loading.PluginLoadError(
                    f"model(s) {', '.join(missing)} not installed; installed: "
                    f"{', '.join(sorted(known)) or 'none'}"
                )
            specs = [known[n] for n in names] if names else list(known.values())
            if not specs:
                raise loading.PluginLoadError(loading.NO_PLUGIN_HELP)
    except loading.PluginLoadError as exc:
        # "not installed" is a usage error; a plugin that fails to import is not
        code = EXIT_USAGE if "not installed" in str(exc) else EXIT_FAILED
        raise CliError(str(exc), code) from exc
    if len(specs) > 1:
        listed = ", ".join(spec.name for spec in specs)
        raise CliError(
            f"several models are installed ({listed}); choose one with "
            f"--model-name NAME (or ${ENV_MODEL})",
            EXIT_USAGE,
        )
    return specs[0]


class CommandParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        if "unrecognized arguments" in message and any(
            option in message.split() for option in ("--debug", "--version")
        ):
            message += f" ({GLOBAL_HINT})"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def command_parser(
    command: str, model: ModelWrapper
) -> tuple[argparse.ArgumentParser, dict[str, ArgSpec]]:
    parser = CommandParser(
        prog=f"{PROG} --model-name {model.name} {command}",
        description=COMMANDS[command],
        allow_abbrev=False,
        conflict_handler="resolve",
    )
    parser.add_argument(
        OUTPUT_OPTION,
        metavar="PATH",
        help=(
            "Write the result to PATH instead of stdout: JSON, or the raw "
            "bytes of a non-JSON answer."
        ),
    )
    specs: dict[str, ArgSpec] = {}
    if command in ("predict", "train"):
        parser.add_argument(
            NOWARM_OPTION,
            action="store_true",
            help="Do not call the model's warm() first.",
        )
        if command == "predict":
            cli_batch.add_options(parser)
        group = parser.add_argument_group(f"arguments of {model.name}.{command}()")
        declared = model.predict_args if command == "predict" else model.train_args
        for index, spec in enumerate(declared.values()):
            dest = f"deepaas_arg_{index}"
            specs[dest] = spec
            add_field(group, spec, dest)  # type: ignore[arg-type]
    return parser, specs
