"""Processes a plugin started that outlive its worker or training job.

A child (predict worker, training job) runs in its own session, and
stopping it signals its process group; but a process the plugin started in
a session of its own (``subprocess.Popen(..., start_new_session=True)``, a
daemon that double-forks) is in neither, and used to outlive the child, and
the server. On Linux, ``prctl(PR_SET_CHILD_SUBREAPER)`` keeps such
processes in the family:

- ``deepaas-run``'s process is a subreaper (:func:`adopt`): a child's
  descendants that lose their parent (the child ended, however: exit,
  crash, SIGKILL at its deadline, replaced, cancelled) become its children
  instead of init's.
- Each child is a subreaper too (:func:`mark_descendants`), so what its
  plugin started stays under it while it runs (a helper whose parent exits
  is not taken for an orphan of a dead child), and it puts a mark in the
  environment its plugin's processes inherit: ``DEEPAAS_ORPHAN_OF=<the
  server's token>``. The child itself does not carry it (its environment
  was set when it started), so the mark means "a plugin's process".
- When a child has ended (:meth:`~deepaas.engine.process.Child.ended`),
  and once more when ``deepaas-run`` stops, :func:`sweep` sends SIGTERM to
  every marked process that is now a child of the server, with its
  descendants, then SIGKILL to what is left after :data:`GRACE_S`, and
  reaps them.

Limits: only on Linux (elsewhere nothing is adopted: such processes outlive
the server, as before); a process whose environment the plugin replaced
(``env={...}`` without the mark) is not recognised; a plugin process that
exits by itself while its child still runs stays a zombie under that child
until the child ends; and when the server is killed by SIGKILL, its children
die with it (``PR_SET_PDEATHSIG``) but what they started goes to init.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import sys
import threading
import time

LOG = logging.getLogger(__name__)

ENV = "DEEPAAS_ORPHAN_OF"
GRACE_S = 0.5  # SIGTERM, then SIGKILL after this long
KILL_WAIT_S = 0.5  # after SIGKILL, how long we wait for them to be gone
POLL_S = 0.02  # how often the process table is read meanwhile (in a thread)
_PR_SET_CHILD_SUBREAPER = 36

# The process-wide state of this process (the kernel's is process-wide too):
# our token once we adopt orphans, else None.
_token: str | None = None
_killing = threading.Lock()  # one sweep at a time: the next finds what is left


def _subreaper() -> bool:
    """Make this process a subreaper; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return False


def adopt() -> str | None:
    """Make the server process adopt its children's orphans (``deepaas-run``
    calls it before it starts any child); the token its children mark their
    plugins' processes with, or None where this is not possible."""
    global _token
    if _token is None and _subreaper():
        _token = f"{os.getpid()}-{secrets.token_hex(8)}"
    return _token


def token() -> str | None:
    """The mark for children to give their plugins' processes (None: we
    adopt nothing, so there is nothing to mark)."""
    return _token


def mark_descendants(mark: str | None) -> None:
    """In a child, before its plugin loads: keep what the plugin starts
    under us, marked as the server's (see the module's docstring)."""
    if mark and _subreaper():
        os.environ[ENV] = mark


def _table() -> dict[int, tuple[int, str]]:
    """Every process we can see: pid -> (parent pid, state letter)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # the name may hold spaces
        table[int(name)] = (int(fields[1]), fields[0].decode())
    return table


def _marked(pid: int, mark: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return mark in fh.read().split(b"\0")
    except OSError:  # gone, or not ours
        return False


def _descendants(table: dict[int, tuple[int, str]], roots: set[int]) -> set[int]:
    """``roots`` and every process below them."""
    below: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        below.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(below.get(pid, ()))
    return found


def kill(why: str, grace: float = GRACE_S) -> list[int]:
    """Kill the marked processes that are now our children, and theirs:
    SIGTERM, SIGKILL after ``grace`` seconds; reap them; log what was
    killed, and ``why`` ("worker iris/0 ended"). The pids signalled.
    Blocking (it waits for them): call it in a thread."""
    if _token is None:
        return []
    with _killing:
        pids = _kill(f"{ENV}={_token}".encode(), grace)
    if pids:  # logged here: the sweep's awaiting caller may be cancelled
        LOG.warning(
            "%s: stopped %d process(es) its plugin started and left running (pids %s)",
            why,
            len(pids),
            ", ".join(map(str, pids)),
        )
    return pids


def _kill(mark: bytes, grace: float) -> list[int]:
    me = os.getpid()
    signalled: set[int] = set()
    deadline = time.monotonic() + grace
    killed_at: float | None = None
    while True:
        table = _table()
        live = {pid for pid, (_, state) in table.items() if state not in "ZX"}
        roots = {
            pid
            for pid in live
            if table[pid][0] == me and (pid in signalled or _marked(pid, mark))
        }
        targets = _descendants(table, roots) & live
        targets |= signalled & live  # signalled before, moved since
        for pid, (ppid, state) in table.items():
            if ppid == me and state == "Z" and pid in signalled:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # ours now: reap it
        if not targets:
            return sorted(signalled)
        now = time.monotonic()
        if killed_at is not None and now - killed_at > KILL_WAIT_S:
            LOG.warning("processes %s did not end after SIGKILL", sorted(targets))
            return sorted(signalled)
        sig = signal.SIGTERM if now < deadline else signal.SIGKILL
        for pid in targets - signalled if sig == signal.SIGTERM else targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL and killed_at is None:
            killed_at = now
        signalled |= targets
        time.sleep(POLL_S)


async def sweep(why: str) -> None:
    """:func:`kill` in a thread, if we adopt orphans (``why``: for the log)."""
    if _token is None:
        return
    with contextlib.suppress(RuntimeError):  # the executor is shut down
        await asyncio.get_running_loop().run_in_executor(None, kill, why)
