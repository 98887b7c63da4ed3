"""Rendered predict results -> HTTP responses.

Bodies come ready-made from the worker; large ones arrive as a file, which is
streamed (sendfile) and then removed.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse

from aiohttp import web

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
    try:
        response = web.FileResponse(
            result.path, headers={"Content-Type": result.content_type, **headers}
        )
        await response.prepare(request)  # sends the whole file
        return response
    finally:
        if result.delete:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(result.path)
