"""Batch mode's run: each input through the model's runtime (the server's
engine, without HTTP) and its result into a file.

:class:`Batch` starts the model's workers (:class:`~deepaas.engine.runtime.ModelRuntime`
on the devices ``deepaas-run`` would use), feeds them a bounded number of
inputs at a time (each a temporary copy, as ``deepaas-cli predict --KEY
PATH`` gives it), writes each result whole or not at all, and counts and
reports each outcome. What to run, and the usage errors, are
:mod:`deepaas.cmd.cli_batch`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import mimetypes
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any, TypeVar

from deepaas.cmd.cli_options import copy_upload
from deepaas.cmd.cli_output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CliError,
    replace_whole,
    write_result,
)
from deepaas.cmd.cli_progress import BatchBar, BatchLines, batch_view
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

STOP_GRACE_S = 5.0
T = TypeVar("T")
# Inputs and results larger than this are copied on a thread: the event loop
# also reads the workers' answers.
BIG_FILE = 1 << 20
DEVICES = "--devices"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one batch run does (checked by :func:`deepaas.cmd.cli_batch.plan`)."""

    inputs: tuple[str, ...]
    outputs: str  # the output folder
    spec: ArgSpec  # the file argument each input is given as
    jobs: int
    devices: str


def output_name(input_path: str, content_type: str, filename: str | None = None) -> str:
    """``cat.jpg`` -> ``cat.jpg.json`` (JSON), ``cat.jpg.png`` (a PNG), or
    with the extension of the file the model named (``filename``) when its
    type has none (``application/octet-stream``), else ``.bin``."""
    base = os.path.basename(input_path)
    kind = content_type.split(";")[0].strip().lower()
    if kind in JSON_TYPES:
        return base + ".json"
    if kind == "text/plain":
        return base + ".txt"
    extension = mimetypes.guess_extension(kind)
    named = os.path.splitext(filename or "")[1]
    if (named and kind in ("application/octet-stream", "")) or extension is None:
        extension = named or None
    return base + (extension or ".bin")


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


def _one_line(text: str) -> str:
    """``text`` with its control characters escaped (a newline as ``\\n``,
    ESC as ``\\x1b``): one input's failure is one line on stderr, and a
    file name cannot send escape sequences to the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _InputError(Exception):
    """The input cannot be read."""


def _copy(
    spec: ArgSpec, path: str, tmp_dir: str, stop: threading.Event
) -> UploadedFile:
    """A temporary copy of the input, as ``deepaas-cli predict --KEY PATH``;
    given up, and removed, when ``stop`` is set (raises
    :class:`~deepaas.cmd.cli_output.Stopped`)."""
    try:
        return copy_upload(spec, path, tmp_dir, stop)
    except OSError as exc:
        raise _InputError(f"cannot read it: {exc.strerror or exc}") from None


def _write(result: PredictResult, target: str, stop: threading.Event) -> None:
    """The result at ``target``, whole or not at all; a copy gives up when
    ``stop`` is set (raises :class:`~deepaas.cmd.cli_output.Stopped`)."""

    def make(partial: str) -> None:
        if result.path is not None and result.delete:
            try:  # the result's own file, moved when on the same filesystem
                os.replace(result.path, partial)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        with open(partial, "wb") as out:
            write_result(result, out, stop)

    replace_whole(target, make)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # said when it is read


async def _off_loop(size: int, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, on a thread when it moves a big file."""
    if size < BIG_FILE:
        return function(*args)
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


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
        self.view: BatchLines | BatchBar | None = None
        # Set when the run ends (interrupted): the copies on threads, which
        # asyncio.run waits for, stop at their next chunk.
        self.stopping = threading.Event()

    def placement(self) -> tuple[devices.Device, ...]:
        """The devices ``deepaas-run --devices`` would use, here and now."""
        wanted = self.plan.devices.strip().lower()
        inherited = Visible.from_env(self.worker_env)
        nvml = devices.Nvml.open() if wanted != "cpu" else None
        try:
            return tuple(select_devices(self.plan.devices, nvml, inherited))
        except devices.DeviceError as exc:
            raise CliError(f"{DEVICES}: {exc}", EXIT_USAGE) from None
        finally:
            if nvml is not None:
                nvml.close()

    def run(self) -> int:
        where = self.placement()
        began = time.monotonic()
        self.view = view = batch_view(self.stream, len(self.plan.inputs))
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

    async def _run_all(
        self, where: tuple[devices.Device, ...], view: BatchLines | BatchBar
    ) -> None:
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
        tasks: list[asyncio.Task[None]] = []
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
            for path in self.plan.inputs:
                await slots.acquire()
                task = asyncio.create_task(self._one(runtime, path, view))
                task.add_done_callback(lambda _: slots.release())
                tasks.append(task)
            await asyncio.gather(*tasks)
        finally:
            self.stopping.set()
            # Interrupted: the inputs in flight are not failures of the
            # model, nor to be told as such ("shutting down"): cancelled.
            for pending in tasks:
                pending.cancel()
            await runtime.stop(STOP_GRACE_S)
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _settled(self, runtime: ModelRuntime) -> None:
        """A worker is ready, or none could start (the pool says which)."""
        ready = asyncio.ensure_future(runtime.wait_ready())
        while not ready.done() and not runtime.settled():
            await asyncio.wait({ready}, timeout=0.05)
        ready.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ready

    async def _one(
        self, runtime: ModelRuntime, path: str, view: BatchLines | BatchBar
    ) -> None:
        tally = self.tally
        name = _one_line(os.path.basename(path))
        try:
            try:
                upload = await _off_loop(
                    _size(path), _copy, self.plan.spec, path, self.tmp_dir,
                    self.stopping,
                )  # fmt: skip
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
                view.say(f"{PROG}: failed: {name}: {_one_line(exc.message)}")
                return
            finally:
                for leftover in files:  # emptied if the runtime took them
                    with contextlib.suppress(OSError):
                        os.unlink(leftover)
            target = os.path.join(
                self.plan.outputs,
                output_name(path, result.content_type, result.filename),
            )
            try:
                size = _size(result.path) if result.path is not None else 0
                await _off_loop(size, _write, result, target, self.stopping)
            except OSError as exc:
                tally.failed += 1
                view.say(
                    f"{PROG}: failed: {name}: cannot write '{_one_line(target)}': "
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
