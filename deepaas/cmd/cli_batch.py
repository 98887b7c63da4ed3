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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import mimetypes
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

from deepaas.cmd.cli_options import collect_args, validate_args
from deepaas.cmd.cli_output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, CliError
from deepaas.engine import devices
from deepaas.engine.batching import resolve_policy
from deepaas.engine.pool import PoolConfig
from deepaas.engine.runtime import Limits, ModelRuntime
from deepaas.engine.selection import select_devices
from deepaas.engine.visible import Visible
from deepaas.exceptions import DeepaasError
from deepaas.model.loading import PluginSpec
from deepaas.model.v2.fields import ArgSpec
from deepaas.model.v2.results import PredictResult
from deepaas.model.v2.wrapper import JSON_TYPES, ModelWrapper, UploadedFile

INPUT_DIR = "--input-dir"
INPUTS = "--inputs"
INPUT_ARG = "--input-arg"
OUTPUT_DIR = "--output-dir"
JOBS = "--jobs"
DEVICES = "--devices"
BATCH_OPTIONS = (INPUT_DIR, INPUTS)
START_TIMEOUT_S = 300.0  # a model whose workers warm for longer is stuck
STOP_GRACE_S = 5.0
PLAIN_INTERVAL_S = 1.0


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
        type=_positive,
        help="Worker processes, placed on --devices (default: 1).",
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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
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


@dataclasses.dataclass(frozen=True)
class Plan:
    inputs: tuple[str, ...]
    outputs: str  # the output folder
    spec: ArgSpec  # the file argument each input is given as
    jobs: int
    devices: str


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


def output_name(input_path: str, content_type: str) -> str:
    """``cat.jpg`` -> ``cat.jpg.json`` (JSON) or ``cat.jpg.png`` (a PNG)."""
    base = os.path.basename(input_path)
    kind = content_type.split(";")[0].strip().lower()
    if kind in JSON_TYPES:
        return base + ".json"
    if kind == "text/plain":
        return base + ".txt"
    return base + (mimetypes.guess_extension(kind) or ".bin")


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
    try:
        fd, probe = tempfile.mkstemp(prefix=".deepaas-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _usage(
            f"{OUTPUT_DIR} {path!r}: cannot write in it: {exc.strerror or exc}"
        ) from None
    return path


def plan(
    model: ModelWrapper, namespace: argparse.Namespace, specs: Mapping[str, ArgSpec]
) -> Plan:
    """Check everything a run needs before any input runs (usage errors)."""
    if not model.has_predict:
        raise CliError(f"model {model.name!r} does not implement predict")
    spec = _file_spec(model, specs, namespace.batch_input_arg)
    for dest, other in specs.items():
        if other is spec and getattr(namespace, dest, None) is not None:
            raise _usage(
                f"--{spec.key} is given by each input in batch mode; do not pass it too"
            )
    inputs: list[str] = []
    if namespace.batch_input_dir:
        inputs += _listed(namespace.batch_input_dir)
    for path in namespace.batch_inputs or ():
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
    if not namespace.batch_output_dir:
        raise _usage(f"batch mode writes its results into {OUTPUT_DIR} DIR: give it")
    outputs = _check_output_dir(namespace.batch_output_dir)
    return Plan(
        tuple(inputs),
        outputs,
        spec,
        namespace.batch_jobs or 1,
        namespace.batch_devices or "auto",
    )


# -- progress ------------------------------------------------------------------


class _Plain:
    """Plain lines: progress at most once a second, each failure, a summary."""

    def __init__(self, stream: IO[str], total: int) -> None:
        self.stream = stream
        self.total = total
        self.shown_at = time.monotonic()

    def say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def advance(self, done: int, failed: int) -> None:
        now = time.monotonic()
        if now - self.shown_at >= PLAIN_INTERVAL_S and done < self.total:
            self.shown_at = now
            self.say(f"{PROG}: progress: {done}/{self.total} ({failed} failed)")

    def close(self) -> None:
        pass


class _Bar:
    """A rich progress bar on a terminal; lines printed above it."""

    def __init__(self, stream: IO[str], total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=stream)
        self.progress = Progress(
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            refresh_per_second=4,
        )
        self.progress.start()
        self.task = self.progress.add_task("", total=total)

    def say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def advance(self, done: int, failed: int) -> None:
        self.progress.update(
            self.task, completed=done, description=f"{failed} failed" if failed else ""
        )

    def close(self) -> None:
        self.progress.refresh()
        self.progress.stop()


def _view(stream: IO[str], total: int) -> _Plain | _Bar:
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        try:
            return _Bar(stream, total)
        except ImportError:
            pass
    return _Plain(stream, total)


# -- running -------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    ok: int = 0
    failed: int = 0  # the model failed (or its result could not be written)
    unreadable: int = 0  # the input could not be read

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.unreadable

    @property
    def exit_code(self) -> int:
        if self.unreadable:
            return EXIT_USAGE
        return EXIT_FAILED if self.failed else EXIT_OK


class _InputError(Exception):
    """The input cannot be read."""


def _copy(spec: ArgSpec, path: str, tmp_dir: str) -> UploadedFile:
    """A temporary copy of the input, as ``deepaas-cli predict --KEY PATH``."""
    suffix = os.path.splitext(path)[1]
    fd, copy = tempfile.mkstemp(prefix="input-", suffix=suffix, dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(copy)
        raise _InputError(f"cannot read it: {exc.strerror or exc}") from None
    return UploadedFile(
        name=spec.key,
        filename=copy,
        content_type=mimetypes.guess_type(path)[0] or "application/octet-stream",
        original_filename=os.path.basename(path),
    )


def _write(result: PredictResult, target: str) -> None:
    """The result at ``target``, whole or not at all."""
    folder, name = os.path.split(target)
    partial = os.path.join(folder, f".{name}.partial")
    try:
        if result.body is not None:
            with open(partial, "wb") as out:
                out.write(result.body)
        else:
            assert result.path is not None
            if result.delete:
                shutil.move(result.path, partial)
            else:
                shutil.copyfile(result.path, partial)
        os.replace(partial, target)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


class Batch:
    """One batch run: the inputs through a model's runtime, results to files."""

    def __init__(
        self,
        spec: PluginSpec,
        model: ModelWrapper,
        plan: Plan,
        kwargs: dict[str, Any],
        worker_env: Mapping[str, str],
        tmp_dir: str,
        warm: bool,
        stream: IO[str],
    ) -> None:
        self.spec = spec
        self.model = model
        self.plan = plan
        self.kwargs = kwargs  # validated, the input's argument a placeholder
        self.worker_env = dict(worker_env)
        self.tmp_dir = tmp_dir
        self.warm = warm
        self.stream = stream
        self.tally = Tally()
        self.view: _Plain | _Bar | None = None

    def placement(self) -> tuple[devices.Device, ...]:
        """The devices ``deepaas-run --devices`` would use, here and now."""
        wanted = self.plan.devices.strip().lower()
        inherited = Visible.from_env(self.worker_env)
        nvml = devices.Nvml.open() if wanted != "cpu" else None
        try:
            return tuple(select_devices(self.plan.devices, nvml, inherited))
        except devices.DeviceError as exc:
            raise _usage(f"{DEVICES}: {exc}") from None
        finally:
            if nvml is not None:
                nvml.close()

    def run(self) -> int:
        where = self.placement()
        began = time.monotonic()
        self.view = view = _view(self.stream, len(self.plan.inputs))
        try:
            asyncio.run(self._run_all(where, view))
        finally:
            view.close()
            self.view = None
        tally = self.tally
        elapsed = time.monotonic() - began
        total = len(self.plan.inputs)
        print(
            f"{PROG}: {tally.ok} ok, {tally.failed + tally.unreadable} failed, "
            f"{total} input{'' if total == 1 else 's'} in {elapsed:.1f}s; "
            f"results in {self.plan.outputs}",
            file=self.stream,
            flush=True,
        )
        return tally.exit_code

    def _output(self, label: str, line: str) -> None:
        """What the plugin prints in a worker: on stderr, above the bar."""
        if self.view is not None:
            self.view.say(f"[{label}] {line}")
        else:
            print(f"[{label}] {line}", file=self.stream, flush=True)

    async def _run_all(self, where: tuple[devices.Device, ...], view: Any) -> None:
        wrapper = self.model
        runtime = ModelRuntime(
            PoolConfig(
                model=self.spec.name,
                target=self.spec.target,
                origin=self.spec.origin,
                size=self.plan.jobs,
                tmp_dir=self.tmp_dir,
                warm=self.warm,
                env=self.worker_env,
                output=self._output,
                devices=where,
            ),
            resolve_policy(wrapper.has_predict_batch, wrapper.batching, None, None, 0),
            Limits(),
        )
        try:
            await runtime.start()
            await self._settled(runtime)
            error = runtime.status().start_error
            if error and not runtime.pool.ready_workers:
                raise CliError(f"model {self.model.name!r} cannot start: {error}")
            # Enough calls in flight for every worker to have its next call
            # (or batch) queued; not all: each holds a copy of its input.
            ahead = self.plan.jobs * max(2, 2 * runtime.policy.max_batch_size)
            slots = asyncio.Semaphore(ahead)
            tasks = []
            for path in self.plan.inputs:
                await slots.acquire()
                task = asyncio.ensure_future(self._one(runtime, path, view))
                task.add_done_callback(lambda _: slots.release())
                tasks.append(task)
            await asyncio.gather(*tasks)
        finally:
            await runtime.stop(STOP_GRACE_S)

    async def _settled(self, runtime: ModelRuntime) -> None:
        """A worker is ready, or none could start (the pool says which)."""
        ready = asyncio.ensure_future(runtime.wait_ready(START_TIMEOUT_S))
        while not ready.done() and not runtime.settled():
            await asyncio.wait({ready}, timeout=0.05)
        ready.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ready

    async def _one(self, runtime: ModelRuntime, path: str, view: Any) -> None:
        tally = self.tally
        name = os.path.basename(path)
        try:
            try:
                upload = _copy(self.plan.spec, path, self.tmp_dir)
            except _InputError as exc:
                tally.unreadable += 1
                view.say(f"{PROG}: failed: {name}: {exc}")
                return
            kwargs = dict(self.kwargs)
            kwargs[self.plan.spec.name] = [upload] if self.plan.spec.is_list else upload
            files = [upload.filename]
            try:
                result = await runtime.predict(kwargs, files)
            except DeepaasError as exc:
                tally.failed += 1
                view.say(f"{PROG}: failed: {name}: {exc.message}")
                return
            finally:
                for leftover in files:  # emptied if the runtime took them
                    with contextlib.suppress(OSError):
                        os.unlink(leftover)
            target = os.path.join(
                self.plan.outputs, output_name(path, result.content_type)
            )
            try:
                _write(result, target)
            except OSError as exc:
                tally.failed += 1
                view.say(
                    f"{PROG}: failed: {name}: cannot write {target!r}: "
                    f"{exc.strerror or exc}"
                )
                return
            finally:
                if result.delete and result.path:
                    with contextlib.suppress(OSError):
                        os.unlink(result.path)
            tally.ok += 1
        finally:
            view.advance(tally.done, tally.failed + tally.unreadable)


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
