"""Processes a plugin started that outlive its worker or training job.

A child (predict worker, training job) runs in its own session, and
stopping it signals its process group; but a process the plugin started in
a session of its own (``subprocess.Popen(..., start_new_session=True)``, a
daemon that double-forks) is in neither, and used to outlive the child, and
the server. Such processes are found by a mark they inherit:

- ``deepaas-run`` draws a token (:func:`enable`, Linux only: the marks are
  read from ``/proc``), and gives each child it starts a mark of its own,
  ``DEEPAAS_ORPHAN_OF=<token>/<serial>`` (:func:`new_mark`), in the
  environment the child starts with. The child carries it in
  ``/proc/<pid>/environ`` and so does every process below it, whether
  exec'd (it inherits the variable) or merely forked (``os.fork``, a
  ``multiprocessing`` fork, a Python daemon that double-forks without
  exec: a fork shows its parent's starting environment, never a variable
  set in ``os.environ`` later). The serial is never reused, unlike a pid:
  a mark means "started under child N", wherever it went since: still
  under the child, or adopted by init (or a container's init) after its
  parent exited.
- When a child has ended (:meth:`~deepaas.engine.process.Child.ended`),
  :func:`sweep` sends SIGTERM to every live process that carries its mark,
  with its descendants, then SIGKILL to what is left after
  :data:`GRACE_S`; when ``deepaas-run`` stops, it does so for every child's
  mark.

Nobody's parentage changes: an orphan goes to init, which reaps it, as for
any process. (Making the server and each child a child subreaper,
``PR_SET_CHILD_SUBREAPER``, would find orphans by parentage instead, but a
plugin's ``cmd &`` at each request then left a zombie under its worker per
request: a worker cannot tell those from its plugin's own subprocesses,
whose exit status is not its to take.)

Limits: only on Linux (elsewhere nothing is marked: such processes outlive
their child and the server, as before); a process whose environment the
plugin replaced (``env={...}`` without the mark), and that is no
descendant of a marked one, is not recognised; when the server is killed
by SIGKILL, its children die with it (``PR_SET_PDEATHSIG``) but what they
started is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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

# This process's token once marks are given (enable()), else None.
_token: str | None = None
_killing = threading.Lock()  # one sweep at a time: the next finds what is left
_serials = itertools.count(1)


def enable() -> str | None:
    """Draw the token the server's children mark their plugins' processes
    with (``deepaas-run`` calls it before it starts any child); None where
    marks cannot be read back (not Linux)."""
    global _token
    if _token is None and sys.platform.startswith("linux"):
        _token = f"{os.getpid()}-{secrets.token_hex(8)}"
    return _token


def new_mark() -> str | None:
    """The mark for a child about to start (``<token>/<serial>``, to put in
    its environment as :data:`ENV`); None when nothing is marked."""
    if _token is None:
        return None
    return f"{_token}/{next(_serials)}"


def _table() -> dict[int, tuple[int, str, bytes]]:
    """Every process we can see: pid -> (parent pid, state letter, start
    time). The start time tells a process from a later one given its pid
    once it ended."""
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
        # state, ppid, ... starttime: fields 3, 4 and 22 of proc(5)
        table[int(name)] = (int(fields[1]), fields[0].decode(), fields[19])
    return table


def _marked(pid: int, mark: bytes) -> bool:
    """Whether ``pid``'s environment holds an entry starting with ``mark``."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
    except OSError:  # gone, or not ours
        return False
    return environ.startswith(mark) or b"\0" + mark in environ


def _descendants(table: dict[int, tuple[int, str, bytes]], roots: set[int]) -> set[int]:
    """``roots`` and every process below them."""
    below: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        below.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(below.get(pid, ()))
    return found


def kill(why: str, mark: str | None = None, grace: float = GRACE_S) -> list[int]:
    """Kill the live processes carrying ``mark`` (a child's, from
    :func:`new_mark`; any child's, when None), and their descendants:
    SIGTERM, SIGKILL after ``grace`` seconds; log what was killed, and
    ``why`` ("worker iris/0 ended"). The pids signalled. Blocking (it
    waits for them): call it in a thread."""
    if _token is None:
        return []
    entry = f"{ENV}={mark}\0" if mark is not None else f"{ENV}={_token}/"
    with _killing:
        pids = _kill(entry.encode(), grace)
    if pids:  # logged here: the sweep's awaiting caller may be cancelled
        LOG.warning(
            "%s: stopped %d process(es) its plugin started and left running (pids %s)",
            why,
            len(pids),
            ", ".join(map(str, pids)),
        )
    return pids


def _kill(mark: bytes, grace: float) -> list[int]:
    """The loop of :func:`kill`. What it signalled is followed by pid and
    start time: a pid that ended meanwhile and was given to another process
    is not that process, and is left alone."""
    me = os.getpid()
    signalled: dict[int, bytes] = {}  # pid -> its start time
    deadline = time.monotonic() + grace
    killed_at: float | None = None
    while True:
        table = _table()
        live = {pid for pid, (_, state, _) in table.items() if state not in "ZX"}
        live.discard(me)
        same = {pid for pid in live if signalled.get(pid) == table[pid][2]}
        roots = same | {pid for pid in live - same if _marked(pid, mark)}
        targets = _descendants(table, roots) & live
        targets |= same  # signalled before, moved since
        for pid, (ppid, state, start) in table.items():
            if ppid == me and state == "Z" and signalled.get(pid) == start:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # ours: reap it
        if not targets:
            return sorted(signalled)
        now = time.monotonic()
        if killed_at is not None and now - killed_at > KILL_WAIT_S:
            LOG.warning("processes %s did not end after SIGKILL", sorted(targets))
            return sorted(signalled)
        sig = signal.SIGTERM if now < deadline else signal.SIGKILL
        for pid in targets - same if sig == signal.SIGTERM else targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL and killed_at is None:
            killed_at = now
        signalled.update((pid, table[pid][2]) for pid in targets)
        time.sleep(POLL_S)


async def sweep(why: str, mark: str | None = None) -> None:
    """:func:`kill` in a thread, if processes are marked (``why``: for the
    log; ``mark``: a child's, None for every child's)."""
    if _token is None:
        return
    with contextlib.suppress(RuntimeError):  # the executor is shut down
        await asyncio.get_running_loop().run_in_executor(None, kill, why, mark)
