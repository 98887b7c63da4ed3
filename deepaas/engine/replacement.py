"""When a worker must be replaced, why, and how soon its replacement starts.

The policy only; the :class:`~deepaas.engine.pool.WorkerPool` carries it out
(warm before retire, respawn timers). Kept apart because these are the
decisions an operator tunes and reads about (``--worker-max-requests``,
``--worker-max-memory``, the ``reason`` label of
``deepaas_worker_restarts_total``), while the pool's mechanics are not.

- **Recycling** a healthy worker: once it answered its request limit
  (``max_requests`` plus up to a tenth, at random, so that workers started
  together do not all recycle at once: :func:`request_limit`), or when the
  worker itself says so in its results (:func:`recycle_reason`): its memory
  passed ``max_memory`` (``MAX_MEMORY``), or its model raised
  ``MemoryError`` (``OUT_OF_MEMORY``: its heap is likely exhausted, so it
  must stop taking calls at once). Both are measured in the worker, where
  the memory is (:mod:`deepaas.engine.worker`).
- **Reloading** a healthy worker (``RELOAD``) because the model's files
  changed: a training of this model ended ``done``, or ``--reload`` saw its
  plugin saved (:mod:`deepaas.engine.reload` decides which worker and when).
- **Respawning** a worker that died or failed to start: at once the first
  time; repeated failures are spaced by a backoff that doubles from
  ``RESPAWN_BACKOFF_S`` up to ``RESPAWN_BACKOFF_MAX_S``
  (:func:`respawn_delay`); the pool resets the count once a worker answers.
"""

from __future__ import annotations

import random

from deepaas.engine.worker import MAX_MEMORY, OUT_OF_MEMORY

RESPAWN_BACKOFF_S = 0.25
RESPAWN_BACKOFF_MAX_S = 30.0

# Why a worker was replaced (the ``reason`` label of deepaas_worker_restarts_total).
CRASHED = "crashed"
START_FAILED = "start_failed"
TIMED_OUT = "timeout"
MAX_REQUESTS = "max_requests"
RELOAD = "reload"  # the model's files changed (a training ended, or --reload)
# Why a starting worker was killed: --worker-start-timeout (its restart is
# counted as START_FAILED).
START_TIMEOUT = "start_timeout"
REASONS = (
    CRASHED,
    START_FAILED,
    TIMED_OUT,
    MAX_REQUESTS,
    MAX_MEMORY,
    OUT_OF_MEMORY,
    RELOAD,
)


def request_limit(max_requests: int) -> int:
    """How many calls one worker answers before it is recycled; 0: no limit."""
    if not max_requests:
        return 0
    return max_requests + random.randint(0, max_requests // 10)


def recycle_reason(retire: str | None, answered: int, limit: int) -> str | None:
    """Why a worker must be recycled after its latest results, or None.

    ``retire`` is what the worker said in those results (``MAX_MEMORY``,
    ``OUT_OF_MEMORY``); ``answered`` and ``limit`` are its calls answered so
    far and its :func:`request_limit`.
    """
    if retire:
        return retire
    if limit and answered >= limit:
        return MAX_REQUESTS
    return None


def respawn_delay(failures_in_a_row: int) -> float:
    """Seconds before a worker that failed this many times in a row is
    started again."""
    n = failures_in_a_row
    if n <= 1:
        return 0.0
    return min(RESPAWN_BACKOFF_MAX_S, RESPAWN_BACKOFF_S * 2 ** (n - 2))
