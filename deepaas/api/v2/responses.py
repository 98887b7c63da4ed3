"""Rendered predict results -> HTTP responses.

Bodies come ready-made from the worker; large ones arrive as a file, which is
streamed in chunks and then removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.parse
from typing import BinaryIO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from deepaas.exceptions import DeepaasError
from deepaas.model.v2.results import PredictResult

CHUNK = 1 << 20


def _disposition(filename: str) -> str:
    quoted = urllib.parse.quote(filename)
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


async def send_result(
    request: web.Request, result: PredictResult
) -> web.StreamResponse:
    """Answer with a rendered result; a temporary result file is removed after."""
    headers = {"Content-Type": result.content_type}
    if result.filename:
        headers["Content-Disposition"] = _disposition(result.filename)
    if result.path is None:
        return web.Response(body=result.body, headers=headers)
    try:
        stream = open(result.path, "rb")  # noqa: SIM115 - closed once sent
    except OSError as exc:
        _remove(result)
        raise DeepaasError(
            500, f"the model's result file cannot be read: {exc.strerror}"
        ) from None
    return _ResultFileResponse(stream, result, headers)


def _remove(result: PredictResult) -> None:
    if result.delete and result.path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(result.path)


class _ResultFileResponse(web.StreamResponse):
    """Streams a result file, always whole; a temporary one is removed after.

    Not a ``FileResponse``: that honours ``Range`` and conditional headers
    (206, 304, 412 answers), which mean nothing for the freshly computed
    answer to a POST. aiohttp calls :meth:`prepare` once the handler has
    returned, so the file is sent outside the handler, as FileResponse does.
    """

    def __init__(
        self, stream: BinaryIO, result: PredictResult, headers: dict[str, str]
    ) -> None:
        super().__init__(headers=headers)
        self._stream = stream
        self._result = result
        self._size = os.fstat(stream.fileno()).st_size
        self.content_length = self._size

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        loop = asyncio.get_running_loop()
        try:
            with self._stream as stream:
                writer = await super().prepare(request)
                left = self._size  # never more than Content-Length said
                while left > 0:
                    chunk = await loop.run_in_executor(
                        None, stream.read, min(CHUNK, left)
                    )
                    if not chunk:
                        break
                    left -= len(chunk)
                    await self.write(chunk)
            return writer
        finally:
            _remove(self._result)
