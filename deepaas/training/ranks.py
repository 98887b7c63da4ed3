"""The rank processes of :func:`deepaas.training.distributed.run` on this host:
collecting their results, noticing the one that failed, stopping the rest.

Kept apart from the helper's API so that each file answers one question:
``distributed.py`` what a rank runs, this module how the processes are
watched.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
import traceback
from typing import Any

# How long a rank that is being stopped gets before it is killed.
_TERMINATE_GRACE_S = 5.0


class DistributedError(RuntimeError):
    """A rank failed: raised in the caller of :func:`run`.

    ``rank`` is the rank that failed first; ``remote_traceback`` its traceback
    as text (exceptions cannot always be pickled, their text always can).
    """

    def __init__(self, rank: int, message: str, remote_traceback: str = "") -> None:
        self.rank = rank
        self.remote_traceback = remote_traceback
        text = f"rank {rank} failed: {message}"
        if remote_traceback:
            text += f"\n\nTraceback in rank {rank}:\n{remote_traceback}"
        super().__init__(text)


def collect(processes: list[Any], messages: Any, first_rank: int = 0) -> list[Any]:
    """Wait for every rank's result; raise as soon as one rank fails.

    Polls instead of blocking in ``join()``, so a rank that raised (while the
    others wait for it in a collective and would wait forever) or died without
    a word (killed, out of memory) is noticed. ``processes[i]`` is rank
    ``first_rank + i`` (not 0 when this host holds part of a larger group),
    which is how errors name it; its messages carry ``i``.
    """
    results: dict[int, Any] = {}

    def drain() -> None:
        while not messages.empty():
            rank, ok, payload, remote_traceback = messages.get()
            if not ok:
                # A rank that died without a word (killed) makes the others
                # fail in their next collective: name the cause, not them.
                silent = died_silently(besides=rank)
                if silent is not None:
                    raise DistributedError(first_rank + silent, exit_message(silent))
                raise DistributedError(first_rank + rank, payload, remote_traceback)
            results[rank] = pickle.loads(payload)

    def died_silently(besides: int) -> int | None:
        for rank, process in enumerate(processes):
            if rank in results or rank == besides:
                continue
            if process.exitcode not in (None, 0):
                return rank
        return None

    def exit_message(rank: int) -> str:
        code = processes[rank].exitcode
        if code is not None and code < 0:
            return f"its process was killed by signal {-code}"
        return f"its process exited with code {code} without a result"

    while len(results) < len(processes):
        drain()
        for rank, process in enumerate(processes):
            if rank in results or process.exitcode is None:
                continue
            drain()  # it exited, so whatever it sent is in the pipe by now
            if rank not in results:
                raise DistributedError(first_rank + rank, exit_message(rank))
        time.sleep(0.05)
    for process in processes:
        process.join()
    return [results[rank] for rank in range(len(processes))]


def stop(processes: list[Any]) -> None:
    """Terminate ranks still running (after a failure), then kill stragglers."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + _TERMINATE_GRACE_S
    for process in processes:
        if process.pid is None:  # never started
            continue
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def free_port() -> int:
    """A TCP port free right now, for rank 0's rendezvous store."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
