"""The result files a worker wrote but never handed to the API process.

A large result travels as a file the worker writes in the scratch directory
(:class:`~deepaas.model.v2.results.ResultRenderer`); from the moment its
path arrives here, the API process owns it: it streams it, then removes it,
or removes it when nobody waits for the answer any more
(:func:`~deepaas.engine.outcomes.discard_value`). A worker that dies (an
``os._exit``, a SIGKILL, its deadline passed) after writing a file but
before its answer arrived leaves a file nobody knows about; without this it
stayed until the server stopped.

Each worker process gets a prefix of its own (:func:`new_prefix`) and
numbers its files in the order it makes them, which is the order it sends
them. The pool notes the highest number it received (:func:`last_received`);
when the worker has ended and its last messages are read, the files of its
prefix numbered higher were never sent: :func:`remove_unsent` removes them,
and leaves those received alone (a client may still be downloading one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Iterable
from typing import Any

from deepaas.model.v2.results import PredictResult

LOG = logging.getLogger(__name__)


def new_prefix() -> str:
    """The result-file prefix of one worker process (unique per spawn, so
    a pid reused by a later worker cannot mix their files)."""
    return f"result-{secrets.token_hex(6)}-"


def number(path: str, prefix: str) -> int:
    """The number of the result file at ``path`` if it is one of
    ``prefix``'s (``<prefix><n>-<random>``), else 0."""
    name = os.path.basename(path)
    if not name.startswith(prefix):
        return 0
    digits = name[len(prefix) :].partition("-")[0]
    return int(digits) if digits.isdigit() else 0


def last_received(
    items: Iterable[tuple[int, bool, Any]], prefix: str, seen: int
) -> int:
    """The highest result-file number in ``items`` (a Results message's)
    and ``seen``: cheap for answers that carry no file."""
    for _, ok, value in items:
        if ok and type(value) is PredictResult and value.delete and value.path:
            seen = max(seen, number(value.path, prefix))
    return seen


def remove_unsent(tmp_dir: str, prefix: str, received: int) -> list[str]:
    """Remove the files of ``prefix`` numbered above ``received`` in
    ``tmp_dir``; the paths removed. Blocking: call it in the executor, once
    the worker has ended and its last messages are read."""
    removed = []
    try:
        entries = list(os.scandir(tmp_dir))
    except OSError:  # gone: the server stops
        return []
    for entry in entries:
        if number(entry.name, prefix) > received:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(entry.path)
    return removed


async def sweep(where: str, tmp_dir: str, prefix: str, received: int) -> None:
    """:func:`remove_unsent` in the executor, for the ended worker
    ``where`` names in the log line that says what was removed."""
    loop = asyncio.get_running_loop()
    try:
        removed = await loop.run_in_executor(
            None, remove_unsent, tmp_dir, prefix, received
        )
    except RuntimeError:  # the executor is shut down: the scratch dir goes too
        return
    if removed:
        LOG.info(
            "%s: removed %d result file(s) it wrote but never sent (it ended first)",
            where,
            len(removed),
        )
