"""``deepaas-cli``: run a plugin's methods from the command line, no server.

``deepaas-cli [--model-name NAME] {get_metadata,warm,predict,train} [options]``
loads one model in this process (with the CPU/GPU environment as it is) and
calls one of its methods. ``predict`` and ``train`` get one ``--<key>`` option
per plugin argument, built from the plugin's own marshmallow fields; the
values are validated by the same schema the API uses, so a value the API
refuses is refused here with the same message. Files are given by path and
reach the plugin as :class:`UploadedFile` (a temporary copy, removed after).

The result is JSON on stdout (for ``predict`` the very bytes the API would
send), or written to ``--deepaas_method_output PATH``. Exit status: 0 on
success, 1 when the model fails (or cannot be loaded), 2 for a usage error
(unknown or invalid arguments, no model chosen). Plugin code runs with its
``print()`` output sent to stderr, so stdout holds only the result.

``deepaas-cli new`` and ``deepaas-cli dockerize`` load no model: they write a
plugin package and its Dockerfile (:mod:`deepaas.cmd.cli_tools`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Mapping, Sequence
from typing import IO, Any, NoReturn

from deepaas.cmd import cli_batch
from deepaas.cmd.cli_options import add_field, collect_args, validate_args
from deepaas.cmd.cli_output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    OUTPUT_OPTION,
    PROG,
    CliError,
    emit,
    remove_result,
)
from deepaas.cmd.cli_progress import make_progress
from deepaas.cmd.cli_tools import TOOLS, run_tool
from deepaas.flags import VersionAction
from deepaas.log import formatter
from deepaas.model import loading
from deepaas.model.v2.fields import ArgSpec
from deepaas.model.v2.results import OutputError, PredictResult, ResultRenderer, dumps
from deepaas.model.v2.wrapper import ModelWrapper
from deepaas.training import context as training_context

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


def _top_parser() -> argparse.ArgumentParser:
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


def _split(argv: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
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


def _late_model_names(rest: Sequence[str]) -> tuple[list[str], list[str]]:
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


def _names(given: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    raw = list(given) or [environ.get(ENV_MODEL, "")]
    return [n.strip() for item in raw for n in item.split(",") if n.strip()]


def _choose(
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        if "unrecognized arguments" in message and any(
            option in message.split() for option in ("--debug", "--version")
        ):
            message += f" ({GLOBAL_HINT})"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _command_parser(
    command: str, model: ModelWrapper
) -> tuple[argparse.ArgumentParser, dict[str, ArgSpec]]:
    parser = _Parser(
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


# -- running ---------------------------------------------------------------


def _warm(model: ModelWrapper) -> bool:
    try:
        return model.warm()
    except Exception as exc:
        raise _ModelFailed(model, "warm", exc) from exc


class _ModelFailed(CliError):
    def __init__(self, model: ModelWrapper, method: str, exc: BaseException) -> None:
        super().__init__(
            f"model {model.name!r} failed in {method}(): "
            f"{type(exc).__name__}: {exc}".rstrip(": ")
        )


def _run(
    command: str,
    model: ModelWrapper,
    namespace: argparse.Namespace,
    specs: Mapping[str, ArgSpec],
    tmp_dir: str,
) -> PredictResult:
    if command == "get_metadata":
        from deepaas.api.v2.models import model_document

        try:
            document = model_document("", model)
        except Exception as exc:
            raise _ModelFailed(model, "get_metadata", exc) from exc
        return PredictResult("application/json", body=dumps(document))
    if command == "warm":
        warmed = _warm(model)
        return PredictResult(
            "application/json", body=dumps({"model": model.name, "warmed": warmed})
        )
    if command == "predict" and not model.has_predict:
        raise CliError(f"model {model.name!r} does not implement predict")
    if command == "train" and not model.has_train:
        raise CliError(f"model {model.name!r} does not implement train")
    data = collect_args(namespace, specs, tmp_dir)
    kwargs = validate_args(model, command, specs, data)
    if command == "predict":
        model.resolve_accept(kwargs)  # */* -> a type the plugin knows, as the API
    if not namespace.nowarm:
        _warm(model)
    if command == "predict":
        try:
            output = model.predict(kwargs)
        except Exception as exc:
            raise _ModelFailed(model, "predict", exc) from exc
        try:
            return ResultRenderer(model, tmp_dir).render(output, kwargs.get("accept"))
        except OutputError as exc:
            raise CliError(f"model {model.name!r}: {exc}") from exc
    progress = make_progress()  # a bar on a terminal, plain lines otherwise
    training_context.set_progress_sink(progress.report)
    try:
        output = model.plugin.train(**kwargs)
    except Exception as exc:
        raise _ModelFailed(model, "train", exc) from exc
    finally:
        training_context.set_progress_sink(None)
        progress.flush()
    try:
        return PredictResult("application/json", body=dumps(output))
    except (TypeError, ValueError) as exc:
        raise CliError(
            f"model {model.name!r}: train() returned a value that is not JSON "
            f"serializable: {exc}"
        ) from exc


def _execute(
    argv: Sequence[str],
    available: Sequence[loading.PluginSpec] | None,
    stdout: IO[str],
) -> int:
    head, command, rest = _split(argv)
    top = _top_parser()
    top_args = top.parse_args(head)
    _setup_logging(top_args.debug)
    if command is None:
        top.print_usage(sys.stderr)
        raise CliError(
            f"choose a sub-command: {', '.join([*COMMANDS, *TOOLS])}", EXIT_USAGE
        )
    if command in TOOLS:  # they write files; no model is loaded
        if top_args.model_name:
            raise CliError(f"{command} takes no --model-name", EXIT_USAGE)
        return run_tool(command, rest, stdout)
    late: list[str] = []
    if not top_args.model_name:  # "predict --model-name X" works too
        late, rest = _late_model_names(rest)
    # Batch mode runs the model in workers: this process imports it without
    # GPUs, as deepaas-run's does; the workers get the environment as it is.
    batch = command == "predict" and cli_batch.wanted(rest)
    hidden = cli_batch.gpus_hidden() if batch else contextlib.nullcontext(None)
    # Plugin code may print(): while it runs, stdout is kept for the result.
    with contextlib.redirect_stdout(sys.stderr), hidden as worker_env:
        spec = _choose(_names(top_args.model_name or late, os.environ), available)
        try:
            model = loading.load(spec)
        except loading.PluginLoadError as exc:
            raise CliError(str(exc)) from exc
        parser, specs = _command_parser(command, model)
    if batch:  # a required file argument is given by each input
        cli_batch.files_optional(parser, specs)
    if late and any(arg.key == MODEL_OPTION[2:] for arg in specs.values()):
        raise CliError(
            f"{MODEL_OPTION} after the sub-command is ambiguous: model "
            f"{model.name!r} has an argument of that name. Name the model before "
            f"the sub-command: {PROG} {MODEL_OPTION} {model.name} {command} "
            f"{MODEL_OPTION} VALUE",
            EXIT_USAGE,
        )
    namespace = parser.parse_args(rest)  # --help goes to stdout
    if cli_batch.is_batch(namespace):
        with (
            tempfile.TemporaryDirectory(prefix="deepaas-cli-") as tmp_dir,
            contextlib.redirect_stdout(sys.stderr),
        ):
            return cli_batch.run(
                spec, model, namespace, specs, worker_env or os.environ, tmp_dir
            )
    with tempfile.TemporaryDirectory(prefix="deepaas-cli-") as tmp_dir:
        with contextlib.redirect_stdout(sys.stderr):
            result = _run(command, model, namespace, specs, tmp_dir)
        try:
            emit(result, getattr(namespace, "deepaas_method_output", None), stdout)
        finally:
            remove_result(result)
    return EXIT_OK


def _setup_logging(debug: bool) -> None:
    # deepaas's own format: the engine's records (batch mode runs workers)
    # may carry a request id, or not.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, handlers=[handler]
    )


def main(
    argv: Sequence[str] | None = None,
    *,
    specs: Sequence[loading.PluginSpec] | None = None,
) -> int:
    """Run the command; returns the exit status.

    ``specs`` replaces the installed plugins (for tests); by default the
    ``deepaas.v2.model`` entry points are used, as ``deepaas-run`` does.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in _split(argv)[0]
    stdout = sys.stdout
    terminated = _TermAsInterrupt()
    try:
        with terminated:
            return _execute(argv, specs, stdout)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except CliError as exc:
        cause = exc.__cause__
        broken = cause.causes if isinstance(cause, loading.PluginLoadError) else ()
        if debug:
            for error in broken or ([cause] if cause is not None else []):
                traceback.print_exception(error, file=sys.stderr)
        for line in str(exc).splitlines() or [""]:
            print(f"{PROG}: error: {line}", file=sys.stderr)
        if broken and not debug:
            print(f"{PROG}: --debug shows the full traceback", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        if terminated.received:
            print(f"{PROG}: terminated", file=sys.stderr)
            return 128 + signal.SIGTERM
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


class _TermAsInterrupt:
    """While active (in the main thread), SIGTERM is handled as Ctrl-C:
    a batch run's workers are stopped and its temporary copies removed, as
    on SIGINT, instead of the process dying where it stands. Slurm
    (``scancel``, a time limit), Kubernetes and OSCAR stop a command so.
    ``received`` says it came; the previous handler is put back after."""

    def __init__(self) -> None:
        self.received = False
        self._before: Any = None

    def __enter__(self) -> _TermAsInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._before = signal.signal(signal.SIGTERM, self._on_term)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._before is not None:
            signal.signal(signal.SIGTERM, self._before)

    def _on_term(self, signum: int, frame: Any) -> None:
        self.received = True
        if callable(signal.getsignal(signal.SIGINT)):
            # SIGINT's own handler runs next: asyncio.run's cancels the
            # running task (cleanly: its finally blocks run), Python's
            # raises KeyboardInterrupt.
            signal.raise_signal(signal.SIGINT)
        else:  # SIGINT ignored (started in the background by a script)
            raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
