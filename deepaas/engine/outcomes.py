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
import os
from collections.abc import Iterable
from typing import Any

from deepaas.engine.batching import Call
from deepaas.exceptions import DeepaasError


def answer(call: Call, ok: bool, value: Any) -> None:
    """Hand a worker's answer to the caller: the result, or its error."""
    call.settle()
    if ok:
        call.future.set_result(value)
    else:
        call.future.set_exception(DeepaasError(value.status, value.message))


def fail(call: Call, error: BaseException) -> None:
    """End ``call`` with ``error``, unless it has ended already."""
    call.settle()
    if not call.future.done():
        call.future.set_exception(error)


def did_not_start(model: str, seconds: float) -> DeepaasError:
    """The deadline passed before any worker started the call."""
    return DeepaasError(
        504,
        f"model {model!r} did not start this request within {seconds:g} s "
        "(all its workers were busy)",
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
