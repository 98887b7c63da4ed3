"""The ``deepaas-run`` command line, built from :data:`deepaas.options.OPTIONS`.

Every option gets its flag (a ``bool`` one as ``--name``/``--noname``), its
help with the default shown as the docs show it, and no default applied:
:func:`deepaas.config.load_settings` tells a flag that was given from one
that was not, and falls back to the environment and the config file.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from deepaas import version_line
from deepaas.options import OPTIONS, Option


def build_parser(prog: str = "deepaas-run") -> argparse.ArgumentParser:
    """The ``deepaas-run`` argument parser (every option, no defaults applied)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve DEEPaaS models over HTTP: the installed plugins, or "
        "the plugins given (TARGET arguments, --plugin).",
        epilog="Every option can also be set as DEEPAAS_<NAME> in the environment "
        "or as <name> in the [DEFAULT] section of --config-file.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config-file", help="INI file with a [DEFAULT] section.")
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument(
        "plugin_files",
        nargs="*",
        metavar="[NAME=]TARGET",
        help="Plugins to serve, as --plugin: path/to/model.py[:Attribute], or "
        "a module.",
    )
    for opt in OPTIONS:
        if not opt.cli:
            continue
        names = [opt.flag] + ([opt.short] if opt.short else [])
        help_text = f"{opt.help} (default: {_show_default(opt)})"
        if opt.kind == "bool":
            parser.add_argument(
                *names,
                "--no" + opt.flag[2:],
                dest=opt.name,
                action=_OnOff,
                help=help_text,
            )
        elif opt.kind == "names":
            parser.add_argument(
                *names,
                dest=opt.name,
                action="append",
                help=help_text,
                metavar=opt.metavar,
            )
        else:
            convert: Callable[[str], Any] = {
                "int": int,
                "optional_int": int,
                "float": float,
            }.get(opt.kind, str)
            parser.add_argument(
                *names,
                dest=opt.name,
                type=convert,
                choices=opt.choices or None,
                help=help_text,
            )
    return parser


class VersionAction(argparse.Action):
    """``--version``: which deepaas this is, on one line (argparse's own
    action wraps it at the terminal's width, splitting a long folder)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any):
        kwargs.setdefault(
            "help", "Show which deepaas this is (version, folder, Python) and exit."
        )
        kwargs["default"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog} {version_line()}")
        parser.exit()


class _OnOff(argparse.Action):
    """``--warm`` / ``--nowarm`` as one option, so ``--help`` shows both."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, not (option_string or "").startswith("--no"))


def _show_default(opt: Option) -> str:
    if opt.shown_default is not None:
        return opt.shown_default
    if opt.kind == "bool":
        return "on" if opt.default else "off"
    if opt.kind == "names":
        return "all"
    if opt.default is None:
        return "the model's own"
    return repr(opt.default) if opt.default == "" else str(opt.default)
