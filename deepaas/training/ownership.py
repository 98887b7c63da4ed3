"""Which server owns a training record, and when that owner is gone for good.

A training's process is a child of the server that started it, so only that
server can watch it, cancel it and record how it ended. Records used to name
their owner by PID, which breaks twice on a platform: PIDs are reused, and a
container's ``deepaas-run`` is PID 1 every time it starts, so a restarted
server took the old ``running`` records for its own living ones.

Now each server *run* has an identity (:class:`ServerIdentity`, a random
UUID) and a row in the ``servers`` table of the state directory's database,
whose ``heartbeat`` the server rewrites every :data:`HEARTBEAT_S` seconds:
its lease. A record's ``owner`` is that identity. The owner is gone when:

- its row is missing (it stopped cleanly and removed it), or its heartbeat is
  older than :data:`LEASE_S` seconds (it crashed, was killed, or its host
  stopped); or, without waiting for the lease,
- its row names the same host, boot and PID namespace as ours, and no
  process with its PID and start time exists there now (its PID gone, a
  zombie, or reused: PID 1 of a restarted container is another process).
  Two servers in one process (tests) share PID and start time: both alive.

Records written before identities existed (``owner`` empty) fall back to
their ``owner_pid``: gone when that PID is ours, is 1 (an old image ran
``deepaas-run`` as PID 1: nothing we can check), or does not exist.

A server that finds its own lease lapsed (its process or its event loop
was stopped for longer than the lease) may have been declared gone: the
trainings another server marked meanwhile are final (the store never
changes a finished record), and the owner stops their processes as soon as
it runs again (:class:`~deepaas.training.keeper.RecordKeeper`). Their files
(the job directory: uploads, working directory) are removed by the owner
when it stops the job; another server removes them only when the owner is
surely gone (:func:`files_unowned`): its process is gone, or it has not
renewed its lease for :data:`FILES_AFTER_LEASES` leases.

The durations: a 1 s heartbeat lets a cancel request through another server
take effect within a second or two; a 10 s lease survives a loop or disk that
stalls for a few seconds without declaring a live server dead.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid as uuidlib
from typing import Any

from deepaas.engine.process import pid_alive

HEARTBEAT_S = 1.0  # how often a server renews its lease (and reads cancel requests)
LEASE_S = 10.0  # a server whose heartbeat is older than this is gone
# Leases without a heartbeat after which a server's rows and job files are
# another server's to remove, even where its process cannot be checked.
FILES_AFTER_LEASES = 6


def process_start(pid: int) -> int | None:
    """When process ``pid`` of our PID namespace started (clock ticks since
    boot), or None when there is none (or only its zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    try:
        return int(fields[19])  # field 22 of proc(5), counted after "comm)"
    except (IndexError, ValueError):
        return None


def _pid_namespace() -> str:
    """This process's PID namespace and boot, or "" when /proc cannot say.

    ``pid:[inode]`` names a namespace while it exists, the boot id tells one
    boot from the next. /proc must be our own namespace's (``unshare
    --mount-proc``): a /proc whose ``self`` is not our PID describes another.
    """
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return ""
        namespace = os.readlink("/proc/self/ns/pid")
        with open("/proc/sys/kernel/random/boot_id") as file:
            boot = file.read().strip()
    except OSError:
        return ""
    return f"{namespace}@{boot}"


@dataclasses.dataclass(frozen=True)
class ServerIdentity:
    """One run of one server: what its ``servers`` row says."""

    id: str
    pid: int
    host: str
    pidns: str  # "" where unknown: only the lease then tells it is gone
    pstart: int  # process_start(pid); 0 where unknown

    @classmethod
    def new(cls) -> ServerIdentity:
        """A fresh identity for this process."""
        pid = os.getpid()
        pidns = _pid_namespace()
        pstart = process_start(pid) if pidns else None
        return cls(
            id=uuidlib.uuid4().hex,
            pid=pid,
            host=socket.gethostname(),
            pidns=pidns if pstart is not None else "",
            pstart=pstart or 0,
        )


@dataclasses.dataclass(frozen=True)
class OwnerRow:
    """The ``servers`` row of a record's owner, as another server reads it."""

    id: str
    pid: int
    host: str
    pidns: str
    pstart: int
    heartbeat: float  # time.time() of its last heartbeat

    def describe(self) -> dict[str, Any]:
        """The owner as a client is told about it (in a 409)."""
        return {"id": self.id, "pid": self.pid, "host": self.host}


def owner_gone(
    owner: str | None,
    owner_pid: int,
    row: OwnerRow | None,
    me: ServerIdentity,
    now: float,
    lease: float = LEASE_S,
) -> bool:
    """Whether the owner of a ``queued``/``running`` record is gone for good.

    ``owner``/``owner_pid`` are the record's; ``row`` is the owner's
    ``servers`` row (None when missing); ``now`` is ``time.time()``.
    """
    if owner is not None and owner == me.id:
        return False
    if owner is None:  # written before server identities existed
        return owner_pid in (me.pid, 1) or not pid_alive(owner_pid)
    if row is None or row.heartbeat < now - lease:
        return True
    if me.pidns and row.pidns == me.pidns and row.host == me.host:
        # Our PID namespace (or a dead one whose inode was reused: its
        # processes are gone too): a PID and start time name one process.
        return process_start(row.pid) != row.pstart
    return False


def files_unowned(
    owner: str | None,
    row: OwnerRow | None,
    me: ServerIdentity,
    now: float,
    lease: float = LEASE_S,
) -> bool:
    """Whether a server other than the owner may remove the job files of a
    *finished* training (``owner``: the record's; ``row``: the owner's
    ``servers`` row).

    A lapsed lease is not enough: an owner whose process was only stopped
    (SIGSTOP, a frozen VM) still runs the training's process, in its job
    directory, until it notices; it removes the files itself then. So
    another server waits until the owner's process is surely gone (our PID
    namespace says so), or its heartbeat is :data:`FILES_AFTER_LEASES`
    leases old (or its row was removed: it stopped cleanly, or it was
    forgotten after as long). Ours: we remove them when the job ends.
    """
    if owner is None:  # written before identities: the old rule (finished)
        return True
    if owner == me.id:
        return False
    if row is None or row.heartbeat < now - FILES_AFTER_LEASES * lease:
        return True
    if me.pidns and row.pidns == me.pidns and row.host == me.host:
        return process_start(row.pid) != row.pstart
    return False
