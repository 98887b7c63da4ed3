"""The servers of a state directory, in its database: leases, sweeps, cancels.

The ``servers`` table has one row per running server (see
:mod:`deepaas.training.ownership` for the identity, the lease and the rules
that say an owner is gone). :class:`ServerTable` keeps our row's heartbeat,
turns the unfinished records of gone owners into errors, and carries cancel
requests from a server that does not own a training to the one that does
(``trainings.cancel_requested``, taken with ``cancel_acked``). With each
heartbeat a server also learns whether its own lease had lapsed, and which
of its trainings another server marked meanwhile (:class:`Tick`). Every
call runs on the store's own thread (:meth:`TrainingStore.call`).
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from deepaas.training import store as st
from deepaas.training.ownership import (
    FILES_AFTER_LEASES,
    LEASE_S,
    OwnerRow,
    ServerIdentity,
    files_unowned,
    owner_gone,
)

FORGET_SERVERS_AFTER = FILES_AFTER_LEASES  # leases: then a gone server's row goes


@dataclasses.dataclass(frozen=True)
class Tick:
    """What one heartbeat found (see :meth:`TrainingStore.tick`)."""

    cancels: list[str]  # our trainings another server asked to cancel (acked)
    interrupted: list[tuple[str, str]]  # (uuid, status) of gone owners, now errors
    # Of the trainings we hold as queued or running, those another server
    # finished (marked while our lease had lapsed): as stored.
    taken: list[st.Training] = dataclasses.field(default_factory=list)
    # Seconds since our previous heartbeat when it was older than the lease
    # (inf: our row was gone); None while the lease held.
    lapsed: float | None = None


@dataclasses.dataclass(frozen=True)
class CancelView:
    """A training being cancelled through a server that does not own it."""

    record: st.Training | None
    owner: OwnerRow | None
    acked: bool  # the owner took the request


class ServerTable:
    """Our row in ``servers``, and what goes through it, for one store."""

    def __init__(self, store: st.TrainingStore) -> None:
        self.store = store

    async def register(self, me: ServerIdentity) -> None:
        """Add our ``servers`` row (our lease starts now)."""
        await self.store.call(self._beat, me, time.time())

    def _beat(self, me: ServerIdentity, at: float) -> None:
        self.store.db.execute(
            "INSERT INTO servers (id, pid, host, pidns, pstart, started, heartbeat) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat",
            (me.id, me.pid, me.host, me.pidns, me.pstart, st.now(), at),
        )

    async def unregister(self, me: ServerIdentity) -> None:
        """Remove our row: our unfinished records are interrupted from now on."""
        await self.store.call(
            lambda: self.store.db.execute("DELETE FROM servers WHERE id = ?", (me.id,))
        )

    async def tick(
        self, me: ServerIdentity, lease: float = LEASE_S, active: Sequence[str] = ()
    ) -> Tick:
        """Renew our lease, take the cancel requests for our trainings, and
        turn the unfinished records of servers that are gone into errors.
        ``active``: the trainings we hold as queued or running (those that
        another server finished are in :attr:`Tick.taken`)."""
        return await self.store.call(self._tick, me, lease, tuple(active))

    def _tick(self, me: ServerIdentity, lease: float, active: tuple[str, ...]) -> Tick:
        db = self.store.db
        at = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            # In the transaction: no other server can mark ours between
            # this look and the renewal below.
            ours = db.execute(
                "SELECT heartbeat FROM servers WHERE id = ?", (me.id,)
            ).fetchone()
            last = -math.inf if ours is None else float(ours[0])
            lapsed = at - last if last < at - lease else None
            taken = [
                st.from_row(row)
                for uuid in active
                for row in db.execute(
                    f"SELECT * FROM trainings WHERE uuid = ? AND owner = ? "
                    f"AND status IN ({', '.join('?' for _ in st.FINISHED)})",
                    (uuid, me.id, *st.FINISHED),
                )
            ]
            self._beat(me, at)
            cancels = [
                str(row[0])
                for row in db.execute(
                    "SELECT uuid FROM trainings WHERE owner = ? "
                    "AND cancel_requested IS NOT NULL AND cancel_acked IS NULL "
                    "AND status IN (?, ?)",
                    (me.id, *st.UNFINISHED),
                ).fetchall()
            ]
            if cancels:
                db.executemany(
                    "UPDATE trainings SET cancel_acked = ? WHERE uuid = ?",
                    [(at, uuid) for uuid in cancels],
                )
            interrupted = self._sweep(me, lease, at)
            db.execute(
                "DELETE FROM servers WHERE heartbeat < ? AND id != ? AND id NOT IN "
                "(SELECT owner FROM trainings WHERE owner IS NOT NULL "
                "AND status IN (?, ?))",
                (at - FORGET_SERVERS_AFTER * lease, me.id, *st.UNFINISHED),
            )
            db.execute("COMMIT")
        except BaseException:
            st.rollback(db)
            raise
        return Tick(cancels, interrupted, taken, lapsed)

    async def sweep(
        self, me: ServerIdentity, lease: float = LEASE_S
    ) -> list[tuple[str, str]]:
        """Turn the unfinished records of servers that are gone into errors;
        returns their ``(uuid, status)``."""
        return await self.store.call(self._sweep, me, lease, time.time())

    def _sweep(
        self, me: ServerIdentity, lease: float, at: float, uuid: str | None = None
    ) -> list[tuple[str, str]]:
        query = (
            "SELECT t.uuid, t.status, t.owner, t.owner_pid, s.id AS sid, s.pid, "
            "s.host, s.pidns, s.pstart, s.heartbeat FROM trainings t "
            "LEFT JOIN servers s ON s.id = t.owner "
            "WHERE t.status IN (?, ?) AND (t.owner IS NULL OR t.owner != ?)"
        )
        params: tuple[Any, ...] = (*st.UNFINISHED, me.id)
        if uuid is not None:
            query += " AND t.uuid = ?"
            params += (uuid,)
        changed = []
        finish, finish_time = st.stamp()
        for row in self.store.db.execute(query, params).fetchall():
            if not owner_gone(
                row["owner"], row["owner_pid"], _owner(row), me, at, lease
            ):
                continue
            cursor = self.store.db.execute(
                "UPDATE trainings SET status = ?, message = ?, finish_date = ?, "
                "finish_time = ? WHERE uuid = ? AND status = ?",
                (st.ERROR, st.interrupted_message(row["status"]), finish,
                 finish_time, row["uuid"], row["status"]),
            )  # fmt: skip
            if cursor.rowcount:
                changed.append((str(row["uuid"]), str(row["status"])))
        return changed

    async def leftovers(
        self, uuids: list[str], me: ServerIdentity, lease: float = LEASE_S
    ) -> list[str]:
        """Those of ``uuids`` (names in the jobs directory) whose job files
        we may remove: finished, and their owner surely gone or us
        (:func:`~deepaas.training.ownership.files_unowned`). A name without
        a record is a training still being submitted: kept."""

        def leftovers() -> list[str]:
            at = time.time()
            found = []
            for uuid in uuids:
                row = self.store.db.execute(
                    "SELECT t.status, t.owner, s.id AS sid, s.pid, s.host, s.pidns, "
                    "s.pstart, s.heartbeat FROM trainings t "
                    "LEFT JOIN servers s ON s.id = t.owner WHERE t.uuid = ?",
                    (uuid,),
                ).fetchone()
                if row is None or row["status"] not in st.FINISHED:
                    continue
                if files_unowned(row["owner"], _owner(row), me, at, lease):
                    found.append(uuid)
            return found

        return await self.store.call(leftovers)

    # -- cancel requests (through a server that is not the owner) -------------

    async def request_cancel(self, uuid: str) -> None:
        """Ask the owner of an unfinished training to cancel it."""
        await self.store.call(
            lambda: self.store.db.execute(
                "UPDATE trainings SET cancel_requested = ? WHERE uuid = ? "
                "AND status IN (?, ?) AND cancel_requested IS NULL",
                (time.time(), uuid, *st.UNFINISHED),
            )
        )

    async def withdraw_cancel(self, uuid: str) -> bool:
        """Take back a request the owner has not taken; False if it has."""

        def withdraw() -> bool:
            cursor = self.store.db.execute(
                "UPDATE trainings SET cancel_requested = NULL "
                "WHERE uuid = ? AND cancel_acked IS NULL",
                (uuid,),
            )
            return bool(cursor.rowcount)

        return await self.store.call(withdraw)

    async def cancel_view(
        self, uuid: str, me: ServerIdentity, lease: float = LEASE_S
    ) -> CancelView:
        """The record and its owner, after marking it if the owner is gone."""
        return await self.store.call(self._cancel_view, uuid, me, lease)

    def _cancel_view(self, uuid: str, me: ServerIdentity, lease: float) -> CancelView:
        self._sweep(me, lease, time.time(), uuid)
        row = self.store.db.execute(
            "SELECT t.*, s.id AS sid, s.pid, s.host, s.pidns, s.pstart, s.heartbeat "
            "FROM trainings t LEFT JOIN servers s ON s.id = t.owner WHERE t.uuid = ?",
            (uuid,),
        ).fetchone()
        if row is None:
            return CancelView(None, None, False)
        return CancelView(
            st.from_row(row), _owner(row), row["cancel_acked"] is not None
        )


def _owner(row: sqlite3.Row) -> OwnerRow | None:
    if row["sid"] is None:
        return None
    return OwnerRow(
        id=str(row["sid"]),
        pid=int(row["pid"]),
        host=str(row["host"]),
        pidns=str(row["pidns"]),
        pstart=int(row["pstart"]),
        heartbeat=float(row["heartbeat"]),
    )
