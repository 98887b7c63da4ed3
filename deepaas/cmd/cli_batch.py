"""``deepaas-cli predict`` over many inputs: batch and FaaS mode.

``--input-dir DIR`` (its regular files, not hidden ones, in name order)
and/or ``--inputs FILE ...``: each file becomes the plugin's file argument
(the first one it declares, or ``--input-arg NAME``) in one prediction; the
other options given apply to every input. The predictions run in
``--jobs N`` worker processes of the server's own engine
(:class:`~deepaas.engine.runtime.ModelRuntime`, without HTTP), placed on
``--devices`` as ``deepaas-run`` places them (an inherited
``CUDA_VISIBLE_DEVICES`` included), so batching (``predict_batch``), crash
isolation and respawns are the server's. Each result is written into
``--output-dir``, named after its input: ``NAME.json`` for JSON, ``NAME``
with the extension of the result's type otherwise (``cat.jpg`` ->
``cat.jpg.json`` or ``cat.jpg.png``).

Progress goes to stderr (a rich bar on a terminal, a plain line at most once
a second otherwise), each failure as one line when it happens, and one
summary line at the end. Exit status: 0 when every input succeeded, 1 when
the model failed on one or more, 2 for a usage error (found before any input
runs) or when an input could not be read (the others still run).

This module reads the options and checks them (every usage error is found
here, before a worker starts); :mod:`deepaas.cmd.cli_batch_run` runs the
inputs; the progress views are :mod:`deepaas.cmd.cli_progress`'s.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

from deepaas.cmd.cli_batch_run import DEVICES, Batch, Plan
from deepaas.cmd.cli_options import collect_args, validate_args
from deepaas.cmd.cli_output import (
    EXIT_USAGE,
    OUTPUT_OPTION,
    CliError,
    marked_read_only,
)
from deepaas.model.loading import PluginSpec
from deepaas.model.v2.fields import ArgSpec
from deepaas.model.v2.wrapper import ModelWrapper, UploadedFile
from deepaas.options import MAX_PROCESSES

INPUT_DIR = "--input-dir"
INPUTS = "--inputs"
INPUT_ARG = "--input-arg"
OUTPUT_DIR = "--output-dir"
JOBS = "--jobs"
BATCH_OPTIONS = (INPUT_DIR, INPUTS)


def add_options(parser: argparse.ArgumentParser) -> None:
    """The batch options of ``predict`` (a plugin argument of the same name,
    added after them, takes the option over)."""
    group = parser.add_argument_group(
        "batch mode (many inputs, each as the file argument; docs/cli.md)"
    )
    group.add_argument(
        INPUT_DIR,
        dest="batch_input_dir",
        metavar="DIR",
        help="Predict on every file of DIR (not hidden ones, not sub-folders).",
    )
    group.add_argument(
        INPUTS,
        dest="batch_inputs",
        metavar="FILE",
        nargs="+",
        action="extend",
        help="Predict on each of these files (with or without --input-dir).",
    )
    group.add_argument(
        INPUT_ARG,
        dest="batch_input_arg",
        metavar="NAME",
        help="The file argument each input is given as (default: the first one).",
    )
    group.add_argument(
        OUTPUT_DIR,
        dest="batch_output_dir",
        metavar="DIR",
        help=(
            "Where the results go (made if missing): one per input, named "
            "after it (NAME.json, or NAME.<ext> of the result's type)."
        ),
    )
    group.add_argument(
        JOBS,
        dest="batch_jobs",
        metavar="N",
        type=_jobs,
        help="Worker processes, placed on --devices, at most 256 (default: 1).",
    )
    group.add_argument(
        DEVICES,
        dest="batch_devices",
        metavar="SPEC",
        help=(
            "auto (default: the GPUs NVML reports, within an inherited "
            "CUDA_VISIBLE_DEVICES), cpu, or a list of GPU indices/UUIDs, as "
            "deepaas-run --devices."
        ),
    )


def _jobs(text: str) -> int:
    """``--jobs``: worker processes, 1 to :data:`~deepaas.options.MAX_PROCESSES`
    (as ``deepaas-run --workers``: each holds its own copy of the model)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(
            f"must be from 1 to {MAX_PROCESSES}, not {value}"
        )
    return value


def wanted(rest: Sequence[str]) -> bool:
    """Whether the command line asks for batch mode (before the model is
    loaded: its parent process then hides the GPUs, as deepaas-run's)."""
    for token in rest:
        if token == "--":
            return False
        if token.split("=", 1)[0] in BATCH_OPTIONS:
            return True
    return False


def files_optional(
    parser: argparse.ArgumentParser, specs: Mapping[str, ArgSpec]
) -> None:
    """Batch mode: the plugin's required file arguments are not required
    options (the inputs give one of them; the schema checks the rest)."""
    for action in parser._actions:
        spec = specs.get(action.dest)
        if spec is not None and spec.is_file:
            action.required = False


def is_batch(namespace: argparse.Namespace) -> bool:
    """Batch mode: inputs given. Its other options without them are a usage
    error (they would be ignored)."""
    if getattr(namespace, "batch_input_dir", None) or getattr(
        namespace, "batch_inputs", None
    ):
        return True
    alone = [
        option
        for option, dest in (
            (INPUT_ARG, "batch_input_arg"),
            (OUTPUT_DIR, "batch_output_dir"),
            (JOBS, "batch_jobs"),
            (DEVICES, "batch_devices"),
        )
        if getattr(namespace, dest, None) is not None
    ]
    if alone:
        raise _usage(
            f"{', '.join(alone)}: only with {INPUT_DIR} DIR or {INPUTS} FILE... "
            "(batch mode)"
        )
    return False


# -- what to run -------------------------------------------------------------


def _usage(message: str) -> CliError:
    return CliError(message, EXIT_USAGE)


def _listed(directory: str) -> list[str]:
    if not os.path.exists(directory):
        raise _usage(f"{INPUT_DIR} {directory!r}: no such directory")
    if not os.path.isdir(directory):
        raise _usage(f"{INPUT_DIR} {directory!r}: not a directory")
    try:
        with os.scandir(directory) as entries:
            names = sorted(
                entry.name
                for entry in entries
                if not entry.name.startswith(".") and entry.is_file()
            )
    except OSError as exc:
        raise _usage(
            f"{INPUT_DIR} {directory!r}: cannot list it: {exc.strerror}"
        ) from None
    if not names:
        raise _usage(f"{INPUT_DIR} {directory!r}: no files in it")
    return [os.path.join(directory, name) for name in names]


def _file_spec(model: ModelWrapper, specs: Mapping[str, ArgSpec], name: str | None):
    declared = list(specs.values())
    files = [spec for spec in declared if spec.is_file]
    if name is not None:
        for spec in declared:
            if name in (spec.key, spec.name):
                if not spec.is_file:
                    raise _usage(
                        f"{INPUT_ARG} {name!r}: not a file argument of model "
                        f"{model.name!r}; its file arguments: "
                        f"{', '.join(s.key for s in files) or 'none'}"
                    )
                return spec
        raise _usage(
            f"{INPUT_ARG} {name!r}: model {model.name!r} has no such argument; "
            f"its file arguments: {', '.join(s.key for s in files) or 'none'}"
        )
    if not files:
        raise _usage(
            f"model {model.name!r} has no file argument (type 'file' in "
            "get_predict_args()): batch mode gives each input as one"
        )
    return files[0]


def _check_output_dir(path: str) -> str:
    if os.path.exists(path) and not os.path.isdir(path):
        raise _usage(f"{OUTPUT_DIR} {path!r}: not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise _usage(
            f"{OUTPUT_DIR} {path!r}: cannot create it: {exc.strerror or exc}"
        ) from None
    if not os.path.isdir(path):
        raise _usage(f"{OUTPUT_DIR} {path!r}: not a directory")
    st = os.stat(path)
    if marked_read_only(path, st):  # 0555: root could write in it
        raise _usage(
            f"{OUTPUT_DIR} {path!r}: cannot write in it: "
            f"{os.strerror(errno.EACCES)} (mode {stat.S_IMODE(st.st_mode):04o})"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".deepaas-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _usage(
            f"{OUTPUT_DIR} {path!r}: cannot write in it: {exc.strerror or exc}"
        ) from None
    return path


def _option(namespace: argparse.Namespace, dest: str) -> Any:
    """A batch option's value; None when a plugin argument of the same name
    took the option over."""
    return getattr(namespace, dest, None)


def plan(
    model: ModelWrapper, namespace: argparse.Namespace, specs: Mapping[str, ArgSpec]
) -> Plan:
    """Check everything a run needs before any input runs (usage errors)."""
    if not model.has_predict:
        raise CliError(f"model {model.name!r} does not implement predict")
    spec = _file_spec(model, specs, _option(namespace, "batch_input_arg"))
    for dest, other in specs.items():
        if other is spec and getattr(namespace, dest, None) is not None:
            raise _usage(
                f"--{spec.key} is given by each input in batch mode; do not pass it too"
            )
    inputs: list[str] = []
    if _option(namespace, "batch_input_dir"):
        inputs += _listed(_option(namespace, "batch_input_dir"))
    for path in _option(namespace, "batch_inputs") or ():
        if not os.path.exists(path):
            raise _usage(f"{INPUTS}: no such file: {path!r}")
        if not os.path.isfile(path):
            raise _usage(f"{INPUTS}: not a regular file: {path!r}")
        inputs.append(path)
    seen: dict[str, str] = {}
    for path in inputs:
        name = os.path.basename(path)
        if name in seen:
            raise _usage(
                f"two inputs are named {name!r} ({seen[name]!r} and {path!r}): "
                f"their results would have the same name in {OUTPUT_DIR}"
            )
        seen[name] = path
    if getattr(namespace, "deepaas_method_output", None) is not None:
        raise _usage(
            f"{OUTPUT_OPTION} writes one result: batch mode writes each into "
            f"{OUTPUT_DIR} DIR"
        )
    if not _option(namespace, "batch_output_dir"):
        raise _usage(f"batch mode writes its results into {OUTPUT_DIR} DIR: give it")
    outputs = _check_output_dir(_option(namespace, "batch_output_dir"))
    folder = _option(namespace, "batch_input_dir")
    if folder and os.path.samefile(folder, outputs):
        raise _usage(
            f"{OUTPUT_DIR} {outputs!r} is the {INPUT_DIR}: a later run would "
            "take the results for inputs; write them into another folder"
        )
    return Plan(
        tuple(inputs),
        outputs,
        spec,
        # No more workers than inputs: each costs a process and a model.
        min(_option(namespace, "batch_jobs") or 1, len(inputs)),
        _option(namespace, "batch_devices") or "auto",
    )


def run(
    spec: PluginSpec,
    model: ModelWrapper,
    namespace: argparse.Namespace,
    specs: Mapping[str, ArgSpec],
    worker_env: Mapping[str, str],
    tmp_dir: str,
    stream: IO[str] | None = None,
) -> int:
    """Batch mode, from the parsed ``predict`` options; the exit status."""
    chosen = plan(model, namespace, specs)
    data = collect_args(namespace, specs, tmp_dir)
    placeholder = UploadedFile(
        name=chosen.spec.key,
        filename=os.devnull,
        content_type="application/octet-stream",
        original_filename=os.path.basename(chosen.inputs[0]),
    )
    data[chosen.spec.key] = [placeholder] if chosen.spec.is_list else placeholder
    # The same schema as one prediction's: a bad option fails before any run.
    kwargs = validate_args(model, "predict", specs, data)
    model.resolve_accept(kwargs)
    batch = Batch(
        spec,
        model,
        chosen,
        kwargs,
        worker_env,
        tmp_dir,
        warm=not namespace.nowarm,
        stream=stream if stream is not None else sys.stderr,
    )
    return batch.run()


@contextlib.contextmanager
def gpus_hidden() -> Iterator[dict[str, str]]:
    """This process imports the plugin with no GPU (as deepaas-run's does);
    yields the environment the workers get: the one it had."""
    before = dict(os.environ)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield before
    finally:
        if "CUDA_VISIBLE_DEVICES" in before:
            os.environ["CUDA_VISIBLE_DEVICES"] = before["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
