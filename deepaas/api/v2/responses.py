"""Rendered predict results -> HTTP responses.

Bodies come ready-made from the worker; large ones arrive as a file, which is
streamed in chunks and then removed.

The result's content type (from the plugin's ``ReturnedFile.content_type``
or the client's ``accept`` argument) and file name (``original_filename`` or
the returned file's name) are the only plugin- or client-chosen values that
reach response headers; :func:`result_headers` makes them safe, here, in one
place. A CR or LF in a header value makes aiohttp refuse to send the
response, which dropped the connection with no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import unicodedata
import urllib.parse
import weakref
from typing import BinaryIO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from deepaas.exceptions import DeepaasError
from deepaas.model.v2.results import PredictResult

CHUNK = 1 << 20
FALLBACK_CONTENT_TYPE = "application/octet-stream"
MAX_FILENAME = 255  # characters of a file name sent in Content-Disposition

# RFC 9110 media type: type "/" subtype *( OWS ";" OWS name "=" value ), value
# a token or a quoted string, all in visible ASCII.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_MEDIA_TYPE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*"
)
# Replaced in file names: controls (C0, DEL, C1), format characters (such as
# bidi overrides, which disguise an extension), line/paragraph separators and
# surrogates (no encoding takes a lone one).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# RFC 8187 attr-char, less ALPHA / DIGIT, which quote() keeps anyway.
_ATTR_CHARS = "!#$&+-.^_`|~"


def safe_content_type(value: object) -> str:
    """``value`` if it is a well-formed media type, else application/octet-stream."""
    if isinstance(value, str):
        return _checked_content_type(value)
    return FALLBACK_CONTENT_TYPE


@functools.lru_cache(maxsize=256)  # a handful of types, sent on every answer
def _checked_content_type(value: str) -> str:
    if value and _MEDIA_TYPE.fullmatch(value):
        return value
    return FALLBACK_CONTENT_TYPE


def safe_filename(name: object) -> str:
    """``name`` as text that any header can carry: unsafe characters
    replaced by ``_``, at most 255 long (its extension kept).

    A plugin names its file as it likes: bytes (decoded as UTF-8, invalid
    bytes replaced), a path object, or a str with lone surrogates (what
    Python makes of a file name that is not valid UTF-8), which cannot be
    encoded: each is replaced too.
    """
    if isinstance(name, (bytes, bytearray, memoryview)):
        text = bytes(name).decode("utf-8", "replace")
    elif isinstance(name, os.PathLike):
        text = os.fsdecode(name)
    else:
        text = str(name)
    cleaned = "".join(
        "_" if unicodedata.category(char) in _UNSAFE_CATEGORIES else char
        for char in text
    )
    if len(cleaned) > MAX_FILENAME:
        stem, ext = os.path.splitext(cleaned)
        ext = ext if len(ext) <= 16 else ""
        cleaned = stem[: MAX_FILENAME - len(ext)] + ext
    return cleaned


def content_disposition(filename: object) -> str:
    """``attachment`` naming ``filename``: an ASCII ``filename`` for old
    clients and the exact name, percent-encoded, in ``filename*``."""
    name = safe_filename(filename)
    quoted = urllib.parse.quote(name, safe=_ATTR_CHARS)
    ascii_name = (
        name.encode("ascii", "replace").decode().replace('"', "").replace("\\", "")
    )
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


def result_headers(result: PredictResult) -> dict[str, str]:
    """The headers of a result's answer, from values that are made safe."""
    headers = {"Content-Type": safe_content_type(result.content_type)}
    if result.filename:
        headers["Content-Disposition"] = content_disposition(result.filename)
    return headers


async def send_result(
    request: web.Request, result: PredictResult
) -> web.StreamResponse:
    """Answer with a rendered result; a temporary result file is removed
    after, whatever happens: headers that cannot be made, a file that
    cannot be read, a send that fails, a client gone, an answer dropped."""
    try:
        headers = result_headers(result)
        if result.path is None:
            return web.Response(body=result.body, headers=headers)
        try:
            stream = open(result.path, "rb")  # noqa: SIM115 - closed once sent
        except OSError as exc:
            raise DeepaasError(
                500, f"the model's result file cannot be read: {exc.strerror}"
            ) from None
    except BaseException:
        remove_result(result)
        raise
    return _ResultFileResponse(stream, result, headers)


def remove_result(result: PredictResult) -> None:
    """Remove a temporary result file (one the worker made for this answer)."""
    if result.delete and result.path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(result.path)


def _close_and_remove(stream: BinaryIO, result: PredictResult) -> None:
    try:
        stream.close()
    finally:
        remove_result(result)


class _ResultFileResponse(web.StreamResponse):
    """Streams a result file, always whole; a temporary one is removed after.

    Not a ``FileResponse``: that honours ``Range`` and conditional headers
    (206, 304, 412 answers), which mean nothing for the freshly computed
    answer to a POST. aiohttp calls :meth:`prepare` once the handler has
    returned, so the file is sent outside the handler, as FileResponse does.
    An answer that is never sent (cancelled on its way out of the handler)
    closes and removes its file when it is dropped: ``_done`` runs once,
    whichever comes first.
    """

    def __init__(
        self, stream: BinaryIO, result: PredictResult, headers: dict[str, str]
    ) -> None:
        self._done = weakref.finalize(self, _close_and_remove, stream, result)
        try:
            super().__init__(headers=headers)
            self._size = os.fstat(stream.fileno()).st_size
        except BaseException:
            self._done()
            raise
        self._stream = stream
        self.content_length = self._size

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        loop = asyncio.get_running_loop()
        stream = self._stream
        try:
            writer = await super().prepare(request)
            left = self._size  # never more than Content-Length said
            while left > 0:
                chunk = await loop.run_in_executor(None, stream.read, min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                await self.write(chunk)
            return writer
        finally:
            self._done()
