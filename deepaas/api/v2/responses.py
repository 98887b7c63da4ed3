"""Rendered predict results -> HTTP responses.

Bodies come ready-made from the worker; large ones arrive as a file, which is
streamed (sendfile) and then removed.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from deepaas.model.v2.results import PredictResult


def _disposition(filename: str) -> str:
    quoted = urllib.parse.quote(filename)
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


async def send_result(
    request: web.Request, result: PredictResult
) -> web.StreamResponse:
    """Answer with a rendered result; a temporary result file is removed after."""
    headers = {}
    if result.filename:
        headers["Content-Disposition"] = _disposition(result.filename)
    if result.path is None:
        return web.Response(
            body=result.body, headers={"Content-Type": result.content_type, **headers}
        )
    return _ResultFileResponse(
        result.path,
        delete=result.delete,
        headers={"Content-Type": result.content_type, **headers},
    )


class _ResultFileResponse(web.FileResponse):
    """Streams a result file; a temporary one is removed once it is sent.

    aiohttp prepares (sends) the response after the handler returns it, once:
    preparing it in the handler too would send the file twice.
    """

    def __init__(self, path: str, *, delete: bool, headers: dict[str, str]) -> None:
        super().__init__(path, headers=headers)
        self._result_path = path
        self._delete = delete

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await super().prepare(request)
        finally:
            if self._delete:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._result_path)
