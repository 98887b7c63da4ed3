"""Cancelling a training that another server of the state directory owns.

Only the owner can stop a training's process, so a server asked to cancel
a training it does not run writes a cancel request into the database
(``trainings.cancel_requested``); the owner takes it with its next
heartbeat (``cancel_acked``, in the same transaction) and cancels as if
asked itself. The asking server waits for the outcome, and its answer
never says more than what happened:

- the record once it is finished (cancelled, or ended meanwhile, or marked
  because its owner turned out to be gone);
- :class:`OwnerDidNotAct` (409) when the owner did not take the request in
  time. The request is then taken back in one conditional write that fails
  if the owner took it meanwhile (then the wait goes on): after a 409 that
  says "taken back", the owner never cancels on that request;
- :class:`OwnerDidNotAct` (409) when the owner took the request but the
  training has not ended in time: that cancel goes on (it cannot be taken
  back), and the answer says so.

A DELETE whose client hangs up while it waits takes its request back the
same way (if the owner has not taken it): a request nobody waits for must
not act later by surprise.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable

from deepaas.engine.process import EOF_WAIT_S
from deepaas.exceptions import DeepaasError
from deepaas.tasks import TaskSet
from deepaas.training import store as st
from deepaas.training.ownership import ServerIdentity
from deepaas.training.servers import CancelView, ServerTable

CANCEL_POLL_S = 0.1  # how often a cancel through another server looks again


class OwnerDidNotAct(DeepaasError):
    """409: another server owns the training and did not cancel it in time."""

    def __init__(self, message: str, owner: dict[str, object]) -> None:
        super().__init__(409, message)
        self.owner = owner


async def cancel_elsewhere(
    servers: ServerTable,
    tasks: TaskSet,
    me: ServerIdentity,
    record: st.Training,
    *,
    grace: float,
    heartbeat: float,
    lease: float,
    on_gone: Callable[[], None],
) -> st.Training:
    """Cancel ``record``, owned by another server, through the database (see
    the module docstring). ``grace``: our ``--train-cancel-grace``, how long
    a training that ignores SIGTERM is given; ``on_gone`` is called when the
    record was marked because its owner is gone (its files may go)."""
    loop = asyncio.get_running_loop()
    uuid = record.uuid
    if record.owner is None:  # an older deepaas: it reads no requests
        view = await servers.cancel_view(uuid, me, lease)
        if view.record is not None and view.record.finished:
            return _finished(view, on_gone)
        raise _did_not_act(view, record, "cannot take cancel requests")
    await servers.request_cancel(uuid)
    asked = loop.time()
    ack_by = asked + 2 * heartbeat + 1.0
    done_by = ack_by + grace + EOF_WAIT_S + heartbeat
    try:
        while True:
            view = await servers.cancel_view(uuid, me, lease)
            if view.record is None or view.record.finished:
                return _finished(view, on_gone) if view.record else record
            now = loop.time()
            if not view.acked and now > ack_by:
                if await servers.withdraw_cancel(uuid):
                    raise _did_not_act(
                        view,
                        record,
                        f"did not take the cancel request within "
                        f"{ack_by - asked:.0f}s; the request was taken back",
                    )
                continue  # taken just now: wait for the cancel
            if view.acked and now > done_by:
                raise _did_not_act(
                    view,
                    record,
                    f"took the cancel request and is cancelling it, but it has "
                    f"not ended within {now - asked:.0f}s (that server's "
                    "--train-cancel-grace may be longer); the cancel goes on: "
                    "GET the training to see it end",
                    cancelling=True,
                )
            await asyncio.sleep(CANCEL_POLL_S)
    except asyncio.CancelledError:  # the client hung up
        with contextlib.suppress(RuntimeError):  # the manager is stopping
            tasks.spawn(_take_back(servers, uuid), f"take back cancel {uuid}")
        raise


async def _take_back(servers: ServerTable, uuid: str) -> None:
    with contextlib.suppress(sqlite3.Error, OSError):
        await servers.withdraw_cancel(uuid)


def _finished(view: CancelView, on_gone: Callable[[], None]) -> st.Training:
    assert view.record is not None
    if view.record.message in (st.STOPPED_WHILE_RUNNING, st.STOPPED_WHILE_QUEUED):
        on_gone()  # perhaps its owner is gone: its files may go
    return view.record


def _did_not_act(
    view: CancelView, record: st.Training, what: str, cancelling: bool = False
) -> OwnerDidNotAct:
    record = view.record or record
    if view.owner is not None:
        owner = view.owner.describe()
        who = f"server {owner['id']} (pid {owner['pid']} on {owner['host']})"
    else:  # a record written before server identities: only its PID is known
        owner = {"id": record.owner, "pid": record.owner_pid, "host": None}
        who = (
            f"the server with pid {record.owner_pid} (an older deepaas)"
            if record.owner is None
            else f"server {record.owner}"
        )
    advice = "" if cancelling else "; cancel it through that server, or try again"
    return OwnerDidNotAct(
        f"training {record.uuid} is {record.status} on {who}, which {what}{advice}",
        owner,
    )
