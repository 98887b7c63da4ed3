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
(unknown or invalid arguments, no model chosen, an output path that cannot
be written: told before the model runs). Plugin code runs with its
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
from typing import IO, Any

from deepaas.cmd import cli_batch
from deepaas.cmd.cli_options import collect_args, validate_args
from deepaas.cmd.cli_output import (
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CliError,
    check_target,
    emit,
    remove_result,
)
from deepaas.cmd.cli_parser import (
    COMMANDS,
    MODEL_OPTION,
    choose,
    command_parser,
    late_model_names,
    model_names,
    split_command,
    top_parser,
)
from deepaas.cmd.cli_progress import make_progress
from deepaas.cmd.cli_tools import TOOLS, run_tool
from deepaas.log import formatter
from deepaas.model import loading
from deepaas.model.v2.fields import ArgSpec
from deepaas.model.v2.results import OutputError, PredictResult, ResultRenderer, dumps
from deepaas.model.v2.wrapper import ModelWrapper
from deepaas.training import context as training_context

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
    head, command, rest = split_command(argv)
    top = top_parser()
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
        late, rest = late_model_names(rest)
    # Batch mode runs the model in workers: this process imports it without
    # GPUs, as deepaas-run's does; the workers get the environment as it is.
    batch = command == "predict" and cli_batch.wanted(rest)
    hidden = cli_batch.gpus_hidden() if batch else contextlib.nullcontext(None)
    # Plugin code may print(): while it runs, stdout is kept for the result.
    with contextlib.redirect_stdout(sys.stderr), hidden as worker_env:
        spec = choose(model_names(top_args.model_name or late, os.environ), available)
        try:
            model = loading.load(spec)
        except loading.PluginLoadError as exc:
            raise CliError(str(exc)) from exc
        parser, specs = command_parser(command, model)
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
    target = getattr(namespace, "deepaas_method_output", None)
    if target is not None:  # before the model runs: not after a prediction
        check_target(target)
    with tempfile.TemporaryDirectory(prefix="deepaas-cli-") as tmp_dir:
        with contextlib.redirect_stdout(sys.stderr):
            result = _run(command, model, namespace, specs, tmp_dir)
        try:
            emit(result, target, stdout)
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
    debug = "--debug" in split_command(argv)[0]
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
