"""``GET .../train/{uuid}/logs``: a training's output (stdout and stderr).

``?offset=N`` resumes from a byte offset (the answer's ``X-Log-Offset`` is
the next one); ``?follow=true`` streams the log as it grows until the
training ends or the server starts to drain. The log is read in chunks off
the event loop (a log can be large, a disk slow).
"""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Any

from aiohttp import web
from marshmallow import fields, validate

from deepaas.api import front
from deepaas.api.v2.query import query_int, query_one
from deepaas.exceptions import DeepaasError, echoed
from deepaas.lifecycle import Lifecycle
from deepaas.model.v2.fields import arg_specs
from deepaas.training.jobs import JobManager

LOG_CHUNK = 1 << 16
FOLLOW_POLL_S = 0.2  # a followed log of a job we run is read again this often
FOREIGN_POLL_S = 1.0  # ... of a job another server runs (its record is read too)
OFFSET_HEADER = "X-Log-Offset"
MAX_OFFSET = 2**63 - 1  # the largest file offset (off_t)

LOG_ARGS = arg_specs(
    {
        "offset": fields.Int(
            load_default=0,
            validate=validate.Range(min=0),
            metadata={"location": "query", "description": "Byte offset to start at"},
        ),
        "follow": fields.Bool(
            load_default=False,
            metadata={
                "location": "query",
                "description": "Stream the output until the training ends",
            },
        ),
    },
    "deepaas",
)


class LogRoutes:
    """The handler of one model's ``.../train/{uuid}/logs``."""

    def __init__(self, model: str, manager: JobManager, lifecycle: Lifecycle) -> None:
        self.model = model
        self.manager = manager
        self.lifecycle = lifecycle

    async def get(self, request: web.Request) -> web.StreamResponse:
        uuid = request.match_info["uuid"]
        record = await self.manager.get(uuid, self.model)
        if record is None:
            raise DeepaasError(
                404, f"model {self.model!r} has no training {echoed(uuid)}"
            )
        offset = query_int(request.query, "offset", 0, 0, MAX_OFFSET)
        follow = (query_one(request.query, "follow") or "false").strip().lower()
        if follow not in ("true", "false", "1", "0", "yes", "no"):
            raise DeepaasError(422, "follow must be true or false")
        if follow in ("true", "1", "yes"):
            return await self._follow(request, uuid, record.log_path, offset)
        return await self._send_log(request, record.log_path, offset)

    async def _send_log(
        self, request: web.Request, path: str, offset: int
    ) -> web.StreamResponse:
        """The log from ``offset`` to its current end, read in chunks off
        the loop (a log can be large)."""
        loop = asyncio.get_running_loop()
        size = await loop.run_in_executor(None, _size, path)
        end = max(offset, size)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/plain; charset=utf-8",
                OFFSET_HEADER: str(end),
            }
        )
        response.content_length = end - offset
        await front.prepare(request, response)  # CORS headers too
        while offset < end:
            data = await loop.run_in_executor(
                None, _read, path, offset, min(LOG_CHUNK, end - offset)
            )
            if not data:
                # Truncated meanwhile (logrotate's copytruncate, a clean-up):
                # the promised length cannot be kept. The connection is
                # closed, so the client sees a short answer rather than wait
                # for the rest for ever; asked again, it gets the log as it
                # is now.
                response.force_close()
                if request.transport is not None:
                    request.transport.close()
                return response
            offset += len(data)
            await response.write(data)
        await response.write_eof()
        return response

    async def _follow(
        self, request: web.Request, uuid: str, path: str, offset: int
    ) -> web.StreamResponse:
        """Stream the log as it grows, until the training ends or the
        server starts to drain."""
        loop = asyncio.get_running_loop()
        response = web.StreamResponse(
            headers={"Content-Type": "text/plain; charset=utf-8"}
        )
        response.enable_chunked_encoding()
        await front.prepare(request, response)  # CORS headers too
        draining = asyncio.ensure_future(self.lifecycle.wait_draining())
        finished = False  # once it is, it stays so
        try:
            while not self.lifecycle.draining:
                job = self.manager.active(uuid)
                if job is None and not finished:  # asked before the read: the
                    finished = await self._finished(uuid)  # tail is not missed
                data = await loop.run_in_executor(None, _read, path, offset, LOG_CHUNK)
                if data:
                    offset += len(data)
                    await response.write(data)
                    continue
                if finished:  # and everything is sent
                    break
                waiters: set[asyncio.Future[Any]] = {draining}
                if job is not None:
                    waiters.add(asyncio.ensure_future(job.done.wait()))
                try:
                    await asyncio.wait(
                        waiters,
                        timeout=FOLLOW_POLL_S if job is not None else FOREIGN_POLL_S,
                    )
                finally:
                    for waiter in waiters - {draining}:
                        waiter.cancel()
        finally:
            draining.cancel()
        await response.write_eof()
        return response

    async def _finished(self, uuid: str) -> bool:
        """Whether a training this server does not run has ended (it may run
        on another server sharing the state directory)."""
        record = await self.manager.get(uuid)
        return record is None or record.finished


def _read(path: str, offset: int, size: int) -> bytes:
    """At most ``size`` bytes of the log from ``offset`` (in the executor)."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return log.read(size)
    except (OSError, OverflowError, ValueError):  # no log yet, or a huge offset
        return b""


def _size(path: str) -> int:
    """The log's size; 0 when it is missing or no regular file (a folder's
    size is no length of text to send)."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0
