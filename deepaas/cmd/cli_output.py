"""What ``deepaas-cli`` writes: the result (on stdout, or into a file with
``--deepaas_method_output``) and the errors that end a command with an
exit status (0 done, 1 the model failed, 2 a usage error); training
progress is :mod:`deepaas.cmd.cli_progress`'s.

A file is written whole or not at all (:func:`replace_whole`: a temporary
file beside it, renamed over it), here and in batch mode; the name of one of
this process's open descriptors (``/dev/stdout``, ``/dev/fd/N``...) is
written through that descriptor (:func:`own_descriptor`), so the shell's
``>>``, pipe or terminal is kept; a device or a FIFO is written where it
stands. Copies go by 1 MiB chunks and
stop between two when their stop flag is set (:func:`copy_stream`): an
interrupted batch run does not wait for a big file's copy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import IO

from deepaas.model.v2.results import PredictResult
from deepaas.model.v2.wrapper import JSON_TYPES

PROG = "deepaas-cli"
OUTPUT_OPTION = "--deepaas_method_output"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """Ends the command with ``message`` on stderr and exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


CHUNK = 1 << 20


class Stopped(Exception):
    """A copy given up between two chunks: its stop flag was set."""


def copy_stream(
    src: IO[bytes], out: IO[bytes], stop: threading.Event | None = None
) -> int:
    """``src`` into ``out`` by chunks; the bytes copied. Raises
    :class:`Stopped` when ``stop`` is set before the next chunk."""
    size = 0
    while True:
        if stop is not None and stop.is_set():
            raise Stopped
        chunk = src.read(CHUNK)
        if not chunk:
            return size
        out.write(chunk)
        size += len(chunk)


def write_result(
    result: PredictResult, out: IO[bytes], stop: threading.Event | None = None
) -> int:
    """The result's bytes into ``out``; how many (:func:`copy_stream`)."""
    if result.body is not None:
        out.write(result.body)
        return len(result.body)
    assert result.path is not None
    with open(result.path, "rb") as src:
        return copy_stream(src, out, stop)


def _umask() -> int:
    try:  # Linux: read without changing it (other threads may create files)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# An open file descriptor, named: whatever it is open on (a redirected
# file too) is written in place, never replaced; through the descriptor
# itself when it is one of ours (:func:`own_descriptor`).
_DESCRIPTORS = ("/dev/stdout", "/dev/stderr")
_DESCRIPTOR_DIRS = ("/dev/fd/", "/proc/")
# /dev/fd/N, /proc/self/fd/N, /proc/thread-self/fd/N, /proc/PID/fd/N
_DESCRIPTOR_NAME = re.compile(r"/dev/fd/(\d+)|/proc/(self|thread-self|\d+)/fd/(\d+)")


def own_descriptor(target: str) -> int | None:
    """The descriptor of this process that ``target`` names, if it is open:
    ``/dev/stdin`` 0 (an input redirected from a file is never replaced
    by the result), ``/dev/stdout`` 1, ``/dev/stderr`` 2,
    ``/dev/fd/N``, ``/proc/self/fd/N``
    and ``/proc/PID/fd/N`` (this process's PID) N; else None (another
    process's descriptor, any other path). :func:`check_target` refuses
    one open for reading only (``/dev/stdin`` redirected from a file)."""
    path = os.path.abspath(target)
    fd: int | None = None
    if path == "/dev/stdin":
        fd = 0
    elif path == "/dev/stdout":
        fd = 1
    elif path == "/dev/stderr":
        fd = 2
    elif match := _DESCRIPTOR_NAME.fullmatch(path):
        number, pid, proc_number = match.groups()
        if number is not None:
            fd = int(number)
        elif pid in ("self", "thread-self") or int(pid) == os.getpid():
            fd = int(proc_number)
    if fd is None:
        return None
    try:
        os.fstat(fd)
    except (OSError, OverflowError):
        return None  # not open: the path is opened as any other
    return fd


def in_place(target: str) -> bool:
    """Whether ``target`` is written where it stands, not replaced: a device,
    a FIFO, a socket, a directory (the write says why it cannot), or a
    descriptor's name (``/dev/stdout``: a rename would take the place of the
    file the shell opened, or fail)."""
    path = os.path.abspath(target)
    if path in _DESCRIPTORS or path.startswith(_DESCRIPTOR_DIRS):
        return True
    try:
        return not stat.S_ISREG(os.stat(target).st_mode)
    except OSError:
        return False  # new (or cannot be looked at: the write says why)


def replace_whole(target: str, make: Callable[[str], None]) -> None:
    """``target`` made whole or not at all: ``make(partial)`` writes the
    content at ``partial`` (an empty hidden ``.NAME.*.partial`` file beside
    the target), which then takes the target's place in one rename.

    A target that exists keeps its permission bits (a new one gets the
    umask's), a symlink its link (the file it points to is replaced). On any
    failure, ``KeyboardInterrupt`` included, ``partial`` is removed and the
    target is as it was.
    """
    real = os.path.realpath(target)
    folder, name = os.path.split(real)
    try:
        mode = stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, partial = tempfile.mkstemp(
        prefix=f".{name[:200]}.", suffix=".partial", dir=folder
    )
    os.close(fd)
    try:
        make(partial)
        os.chmod(partial, mode)
        os.replace(partial, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def _chunks(result: PredictResult) -> Iterator[bytes]:
    if result.body is not None:
        yield result.body
        return
    assert result.path is not None
    with open(result.path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip() in JSON_TYPES


def _is_text(content_type: str) -> bool:
    return _is_json(content_type) or content_type.startswith("text/")


def _to_descriptor(result: PredictResult, fd: int) -> int:
    """The result written through descriptor ``fd`` itself (a dup of it,
    closed after): opening its name again would truncate what the shell
    opened with ``>>`` and lose an append mode; its size."""
    for stream in (sys.stdout, sys.stderr):  # what was printed comes first
        with contextlib.suppress(Exception):
            stream.flush()
    copy = os.dup(fd)
    try:
        with open(copy, "wb", closefd=False) as out:
            size = write_result(result, out)
            out.flush()  # a short write is retried until all is written
    finally:
        os.close(copy)
    return size


def _to_file(result: PredictResult, target: str) -> int:
    """The result at ``target`` (through our descriptor it names,
    :func:`replace_whole`, or in place); its size."""
    fd = own_descriptor(target)
    if fd is not None:
        return _to_descriptor(result, fd)
    if in_place(target):
        with open(target, "wb") as out:
            return write_result(result, out)
    sizes: list[int] = []

    def make(partial: str) -> None:
        with open(partial, "wb") as out:
            sizes.append(write_result(result, out))

    replace_whole(target, make)
    return sizes[0]


def marked_read_only(path: str, st: os.stat_result) -> bool:
    """Whether the file or folder ``path`` may not be written (a folder:
    no file created in it): for root (the usual user in a container), whom
    ``os.access`` always lets write, when no one has its write bit (0444,
    0555: marked read-only by its owner); for another user, when
    ``os.access`` says it cannot write it."""
    if os.geteuid() == 0:
        return not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    return not os.access(path, os.W_OK)


def _unusable(target: str) -> str | None:
    """Why ``target`` cannot take a result, told without writing anything
    (nor opening a FIFO); None when nothing is seen against it."""
    if target == "":
        return "an empty path: name a file"
    fd = own_descriptor(target)
    if fd is not None:
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        except OSError:
            return None  # the write says why
        if flags & getattr(os, "O_PATH", 0) or flags & os.O_ACCMODE == os.O_RDONLY:
            return f"{target} is open for reading only (descriptor {fd})"
        return None
    try:
        st = os.stat(target)
    except (FileNotFoundError, NotADirectoryError):  # the folder says why
        st = None
    except OSError as exc:  # a loop, a name too long...
        return exc.strerror or str(exc)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            return f"{target} is a folder: name a file in it"
        if not stat.S_ISREG(st.st_mode):  # a device, a FIFO: opened as it is
            if os.geteuid() != 0 and not os.access(target, os.W_OK):
                return os.strerror(errno.EACCES)
            return None
        if marked_read_only(target, st):
            mode = stat.S_IMODE(st.st_mode)
            return f"{os.strerror(errno.EACCES)}: a read-only file (mode {mode:04o})"
    path = os.path.abspath(target)
    if st is None and (path in _DESCRIPTORS or path.startswith(_DESCRIPTOR_DIRS)):
        return os.strerror(errno.ENOENT)  # /dev/fd/N not open: never created
    # a file is replaced through a temporary one beside it: in its folder
    folder = os.path.dirname(os.path.realpath(target))
    shown = os.path.dirname(target) or "."
    if os.path.islink(target):
        shown = folder  # where the link points
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            return f"{shown} is not a folder"
        return f"no folder {shown}"
    # os.access: a read-only mount, for root too; the mode: a folder marked
    # read-only (0555), which root could write in
    if not os.access(folder, os.W_OK | os.X_OK) or marked_read_only(
        folder, os.stat(folder)
    ):
        return f"{os.strerror(errno.EACCES)}: cannot create a file in {shown}"
    return None


def check_target(target: str) -> None:
    """A usage error (exit status 2) when ``target`` cannot take a result:
    an empty path, a missing folder, a folder, a read-only file, a
    descriptor open for reading only. Called before the model runs, so that
    one learns it without waiting for a prediction, and again before the
    write."""
    reason = _unusable(target)
    if reason is not None:
        raise CliError(f"cannot write {target!r}: {reason}", EXIT_USAGE)


#: Failures to open or replace the target: the path given is unusable (a
#: usage error). Others (a full disk: ENOSPC, EFBIG; EIO) end the command
#: as a failure.
_USAGE_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EBADF,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.ENXIO,
        errno.ETXTBSY,
    }
)


def emit(result: PredictResult, target: str | None, stdout: IO[str]) -> None:
    if target is not None:
        check_target(target)
        try:
            size = _to_file(result, target)
        except OSError as exc:
            code = EXIT_USAGE if exc.errno in _USAGE_ERRNOS else EXIT_FAILED
            raise CliError(
                f"cannot write {target!r}: {exc.strerror or exc}", code
            ) from None
        print(
            f"{PROG}: wrote {size} bytes ({result.content_type}) to {target}",
            file=sys.stderr,
        )
        return
    if not _is_text(result.content_type) and stdout.isatty():
        raise CliError(
            f"the result is {result.content_type}, not text: write it to a file "
            f"with {OUTPUT_OPTION} PATH or redirect stdout",
            EXIT_USAGE,
        )
    stdout.flush()
    binary: IO[bytes] | None = getattr(stdout, "buffer", None)
    last = b""
    for chunk in _chunks(result):
        if binary is not None:
            binary.write(chunk)
        else:
            stdout.write(chunk.decode("utf-8", "replace"))
        last = chunk[-1:] or last
    if _is_json(result.content_type) and last != b"\n":
        if binary is not None:
            binary.write(b"\n")
        else:
            stdout.write("\n")
    if binary is not None:
        binary.flush()
    stdout.flush()


def remove_result(result: PredictResult | None) -> None:
    if result is not None and result.delete and result.path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(result.path)
