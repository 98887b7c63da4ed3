"""How a call ends: its answer, or the error its caller gets instead.

A call's future is settled once, by whoever comes first: its worker's
answer, its deadline, its worker's death, the server stopping, the model
failing to start. The dispatcher and the pool end calls through these
helpers, so that every path settles a call the same way (its deadline timer
cancelled; :func:`fail` leaves a call that already ended alone) and each
error keeps one wording. An answer nobody waits for any more may name a
temporary file (a large result); :func:`discard_value` deletes it.
"""

from __future__ import annotations

import contextlib
import os
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
