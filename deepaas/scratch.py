"""The server's scratch directory: uploads and large results live here.

One directory per server process, ``$TMPDIR/deepaas-<pid>-<random>``,
created when the server starts and removed when it stops. A server that was
killed (SIGKILL, out of memory) cannot remove its own, so every server, as
it starts, sweeps the directories left by servers that are gone.

"Gone" is not judged by the pid in the name: servers in containers (PID
namespaces) that share a host's ``/tmp`` all run as pid 1, and a pid is
reused. Instead each server holds a ``flock`` on its directory for as long
as it runs; the kernel drops it when the process ends, however it ends
(SIGKILL included). The sweeper removes a directory only when it can take
an exclusive lock on it itself, and holds that lock while it removes it, so
two sweepers never race. Directories of the earlier naming (8 hex digits,
no lock) are removed only when clearly dead: untouched for a day and their
pid is not a live process here.

If the directory disappears while the server runs (someone cleaned the
temp folder), :meth:`ScratchDir.ready` makes it again, locked, before the
next request writes there.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

from deepaas.engine.process import pid_alive

LOG = logging.getLogger(__name__)

PREFIX = "deepaas-"
# deepaas-<pid>-<16 hex>: locked while its server runs. deepaas-<pid>-<8 hex>:
# the earlier naming, by servers that held no lock.
_NAME = re.compile(rf"^{PREFIX}(\d+)-([0-9a-f]{{16}}|[0-9a-f]{{8}})$")
OLD_FORMAT_AGE_S = 24 * 3600.0  # an unlocked old-format dir untouched this long
CHECK_INTERVAL_S = 1.0  # how often requests make sure the directory exists
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: The answer (507) when the scratch directory's disk or quota is full.
NO_SPACE_MESSAGE = (
    "no space left for uploads/results in the server's scratch directory; "
    "retry later, send smaller files, or ask the operator to free space in "
    "the server's temp folder (TMPDIR)"
)

_OWNERS: dict[str, ScratchDir] = {}  # path -> the live ScratchDir there


def is_no_space(exc: BaseException) -> bool:
    """An ``OSError`` that means "the disk or the quota is full"."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def owner(path: str) -> ScratchDir | None:
    """The live :class:`ScratchDir` at ``path`` (None if there is none)."""
    return _OWNERS.get(path)


class ScratchDir:
    """A directory path decided now, created (and locked) by :meth:`create`."""

    def __init__(self, parent: str | None = None) -> None:
        self.parent = Path(parent or tempfile.gettempdir())
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        self.path = str(self.parent / name)
        self._fd: int | None = None  # the open, locked directory
        self._mutex = threading.Lock()  # create/ensure/remove run in threads
        self._removed = False
        self._checked_at = -CHECK_INTERVAL_S  # time.monotonic() of the last check
        self._checking: asyncio.Future[None] | None = None

    def create(self) -> None:
        """Make the directory (locked), then sweep the leftovers of dead
        servers. Blocking: call it in the executor."""
        with self._mutex:
            self._removed = False
            self._make()
        _OWNERS[self.path] = self
        sweep_stale(self.parent)

    def remove(self) -> None:
        """Remove the directory and its contents, then drop the lock."""
        with self._mutex:
            self._removed = True
            _OWNERS.pop(self.path, None)
            shutil.rmtree(self.path, ignore_errors=True)
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def ensure(self) -> bool:
        """Make the directory again if it was removed under us; False once
        :meth:`remove` ran (nothing is made after the server stopped)."""
        with self._mutex:
            if self._removed or self._fd is None:
                return False
            if _same_file(self._fd, self.path):
                return True
            if os.path.lexists(self.path):
                # Not ours any more (replaced by someone else): never write there.
                raise OSError(errno.EEXIST, "replaced by another file", self.path)
            LOG.warning(
                "the scratch directory %s was removed while the server runs: "
                "making it again",
                self.path,
            )
            self._make()
            return True

    @property
    def due(self) -> bool:
        """Whether :meth:`ready` would check (a request skips awaiting it
        otherwise: the usual case costs no coroutine)."""
        return time.monotonic() - self._checked_at >= CHECK_INTERVAL_S

    async def ready(self) -> None:
        """Make sure the directory exists before a request writes there: at
        most one check every ``CHECK_INTERVAL_S``, in the executor, shared
        by the requests that arrive meanwhile."""
        if not self.due:
            return
        if self._checking is None or self._checking.done():
            try:
                loop = asyncio.get_running_loop()
                self._checking = loop.run_in_executor(None, self._check)
            except RuntimeError:  # the executor is shut down: stopping
                return
        await asyncio.shield(self._checking)

    def recheck(self) -> None:
        """The next :meth:`ready` looks again (a request found it missing)."""
        self._checked_at = -CHECK_INTERVAL_S

    def _check(self) -> None:
        try:
            self.ensure()
        except OSError as exc:
            LOG.error("the scratch directory %s cannot be made: %s", self.path, exc)
            return
        self._checked_at = time.monotonic()

    def _make(self) -> None:
        """Create the directory and lock it (the caller holds the mutex).

        A sweeper (another server starting) may lock and remove the
        directory in the moment between its creation and our lock: then it
        is gone before we open it, or the locked directory is not the one at
        the path; either way we try again.
        """
        while True:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            try:
                fd = os.open(self.path, _DIR_FLAGS)
            except FileNotFoundError:  # swept before we opened it
                continue
            try:
                # Shared is enough: a sweeper asks for an exclusive lock.
                fcntl.flock(fd, fcntl.LOCK_SH)
            except OSError as exc:  # a file system without flock (some NFS)
                LOG.warning(
                    "cannot lock the scratch directory %s (%s): if this server "
                    "is killed, its directory is left for you to remove",
                    self.path,
                    exc.strerror,
                )
            if _same_file(fd, self.path):
                break
            os.close(fd)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd


def _same_file(fd: int, path: str) -> bool:
    """Whether ``path`` (not followed) is the file open as ``fd``."""
    try:
        there = os.lstat(path)
    except OSError:
        return False
    here = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)


def sweep_stale(parent: Path, now: float | None = None) -> list[str]:
    """Remove scratch directories left by servers that no longer run (see
    the module's docstring); the paths removed. Blocking: in the executor."""
    now = time.time() if now is None else now
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _NAME.match(entry.name)
        if not match:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        old_format = len(match.group(2)) == 8
        if old_format and (
            now - info.st_mtime < OLD_FORMAT_AGE_S or pid_alive(int(match.group(1)))
        ):
            continue
        if _remove_unlocked(entry.path):
            removed.append(entry.path)
    return removed


def _remove_unlocked(path: str) -> bool:
    """Remove ``path`` if no process holds a lock on it (its server is gone)."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its server runs (or flock is not supported)
            return False
        if not _same_file(fd, path):
            return False
        LOG.info("removing %s, left by a server that stopped without cleaning up", path)
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(fd)
