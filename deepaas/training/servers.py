"""The servers of a state directory, in its database: leases, sweeps, cancels.

The ``servers`` table has one row per running server (see
:mod:`deepaas.training.ownership` for the identity, the lease and the rules
that say an owner is gone). :class:`ServerTable` keeps our row's heartbeat,
turns the unfinished records of gone owners into errors, and carries cancel
requests from a server that does not own a training to the one that does
(``trainings.cancel_requested``, taken with ``cancel_acked``). Every call
runs on the store's own thread (:meth:`TrainingStore.call`).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import Any

from deepaas.training import store as st
from deepaas.training.ownership import LEASE_S, OwnerRow, ServerIdentity, owner_gone

FORGET_SERVERS_AFTER = 6  # leases: then a gone server's row is deleted


@dataclasses.dataclass(frozen=True)
class Tick:
    """What one heartbeat found (see :meth:`TrainingStore.tick`)."""

    cancels: list[str]  # our trainings another server asked to cancel (acked)
    interrupted: list[tuple[str, str]]  # (uuid, status) of gone owners, now errors


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

    async def tick(self, me: ServerIdentity, lease: float = LEASE_S) -> Tick:
        """Renew our lease, take the cancel requests for our trainings, and
        turn the unfinished records of servers that are gone into errors."""
        return await self.store.call(self._tick, me, lease)

    def _tick(self, me: ServerIdentity, lease: float) -> Tick:
        db = self.store.db
        at = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
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
        return Tick(cancels, interrupted)

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
        finish = st.now()
        for row in self.store.db.execute(query, params).fetchall():
            if not owner_gone(
                row["owner"], row["owner_pid"], _owner(row), me, at, lease
            ):
                continue
            cursor = self.store.db.execute(
                "UPDATE trainings SET status = ?, message = ?, finish_date = ? "
                "WHERE uuid = ? AND status = ?",
                (st.ERROR, st.interrupted_message(row["status"]), finish, row["uuid"],
                 row["status"]),
            )  # fmt: skip
            if cursor.rowcount:
                changed.append((str(row["uuid"]), str(row["status"])))
        return changed

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
