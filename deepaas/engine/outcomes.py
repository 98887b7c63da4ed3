"""How a call ends: its answer, or the error its caller gets instead.

A call's future is settled once, by whoever comes first: its worker's
answer, its deadline, its worker's death, the server stopping, the model
failing to start. The dispatcher and the pool end calls through these
helpers, so that every path settles a call the same way (its deadline timer
cancelled; :func:`fail` leaves a call that already ended alone) and each
error keeps one wording. An answer nobody waits for any more may name a
temporary file (a large result); :func:`discard_value` deletes it.

A caller that leaves while a worker may still read its call's uploads hands
them to the call (:meth:`~deepaas.engine.batching.Call.adopt`); once no
worker can read them any more (the worker answered the message that carried
the call, or died), :func:`unpin` removes them, so that a client hanging up
never pulls a file from under a running ``predict`` or ``predict_batch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from typing import Any

from deepaas.engine.batching import Call
from deepaas.engine.protocol import RemoteError
from deepaas.exceptions import DeepaasError
from deepaas.log import with_detail

LOG = logging.getLogger(__name__)

#: The failures of one worker message whose traceback is logged already:
#: traceback -> the call (None: a call taken back) it is logged with.
Logged = dict[str, "Call | None"]


def answer(call: Call, ok: bool, value: Any, logged: Logged | None = None) -> None:
    """Hand a worker's answer to the caller: the result, or its error.

    An error keeps the plugin's traceback as its ``detail``, which the API
    logs with the line reporting the failed request. The calls of a batch
    that failed together share one traceback: ``logged`` (one per worker
    message) gives it to the first; the others' detail names its request.
    """
    call.settle()
    if ok:
        call.future.set_result(value)
        return
    detail = value.traceback
    if detail and logged is not None:
        first = logged.setdefault(detail, call)
        if first is not call:
            detail = _logged_with(first)
    call.future.set_exception(DeepaasError(value.status, value.message, detail=detail))


def unanswered(
    model: str, call: Call | None, ok: bool, value: Any, logged: Logged
) -> None:
    """A worker's answer to a call nobody waits for any more (its client
    left, its deadline passed, or it was taken back): a result's file is
    removed; a failure is logged with its traceback, as no answer will
    report it."""
    if ok or type(value) is not RemoteError:
        discard_value(value)
        return
    error: RemoteError = value
    if not error.traceback or error.traceback in logged:
        return
    logged[error.traceback] = call
    level = logging.WARNING if error.status >= 500 else logging.INFO
    summary = (
        f"model {model}: a call nobody waits for any more failed "
        f"({error.status}): {error.message}"
    )
    extra = {"request_id": call.request_id} if call is not None else None
    LOG.log(level, "%s", with_detail(summary, error.traceback), extra=extra)


def _logged_with(first: Call | None) -> str:
    if first is not None and first.request_id:
        return f"(its traceback is logged with request {first.request_id})"
    return "(its traceback is logged above)"


def fail(call: Call, error: BaseException) -> None:
    """End ``call`` with ``error``, unless it has ended already."""
    call.settle()
    if not call.future.done():
        call.future.set_exception(error)


def did_not_start(model: str, seconds: float, ready: bool = True) -> DeepaasError:
    """The deadline passed before any worker started the call; ``ready``:
    whether any worker of the model was ready to take calls."""
    why = (
        "all its workers were busy"
        if ready
        else "no worker of it was ready: they were starting or being "
        "replaced; if this lasts, its warm() may be slow or stuck"
    )
    return DeepaasError(
        504, f"model {model!r} did not start this request within {seconds:g} s ({why})"
    )


def did_not_answer(model: str, seconds: float) -> DeepaasError:
    """The deadline passed while a worker ran the call."""
    return DeepaasError(
        504,
        f"model {model!r} did not answer within {seconds:g} s; "
        "its worker is being replaced",
    )


def unsendable(exc: Exception) -> DeepaasError:
    """The call's arguments could not be pickled for the worker."""
    return DeepaasError(500, f"the arguments could not be sent to the worker: {exc}")


def discard_value(value: Any) -> None:
    """Remove the temporary file of a result no one will send."""
    path = getattr(value, "path", None)
    if path and getattr(value, "delete", False):
        with contextlib.suppress(OSError):
            os.unlink(path)


INLINE_UNLINKS = 4  # more than this go to the executor: the loop stays free


def unpin(calls: Iterable[Call]) -> None:
    """A message carrying ``calls`` can no longer be read by its worker
    (answered, or the worker is gone): remove the files of the calls that
    no other message pins and whose caller left them behind."""
    paths: list[str] = []
    for call in calls:
        call.pins = max(0, call.pins - 1)
        if not call.pins and call.files:
            paths.extend(call.files)
            call.files.clear()
    if paths:
        remove_files(paths)


def remove_files(paths: list[str]) -> None:
    """Remove ``paths``: a few here, many in the executor (not awaited)."""
    if len(paths) > INLINE_UNLINKS:
        try:
            asyncio.get_running_loop().run_in_executor(None, _unlink_all, paths)
            return
        except RuntimeError:  # no loop, or its executor is shut down (stopping)
            pass
    _unlink_all(paths)


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
