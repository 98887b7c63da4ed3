"""Multipart forms read part by part, uploads streamed to temporary files.

:class:`FormReader` reads the multipart body of one request for its
:class:`deepaas.api.body.BodyReader`, which routes each part (``Router``:
skip it, save it as a file, or keep it as a field) and owns the files:

- parts are counted and the form refused when part ``max_parts + 1``
  starts; each part is read in pieces that start small (``FIRST_CHUNK``),
  so a body of thousands of tiny parts costs little per part, and the
  reader lets the loop run (``BodyReader.breathe``) between parts and
  between big pieces;
- a part's headers and the preamble are capped as their lines arrive
  (:class:`deepaas.api.guards.LineBudget`), whatever the aiohttp version;
- uploads are written to temporary files **in the default executor**: the
  file is created (with the first piece) and every further piece appended
  by a worker thread, never on the loop; uploads that fit in one piece are
  held back (at most ``BATCH_FILES`` files or ``BATCH_BYTES``) and created
  together in one job.
"""

from __future__ import annotations

import codecs
import enum
import os
import re
import secrets
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from multidict import MultiDict

from deepaas.api.guards import LineBudget
from deepaas.api.limits import (
    FORM_TEXT_LIMIT,
    MAX_PART_HEADER_LINES,
    MAX_PART_HEADER_SIZE,
    bad_request,
    multipart_cut_short,
    part_headers_too_large,
    too_large,
    too_many_parts,
)
from deepaas.exceptions import LIBRARY_TEXT, DeepaasError, echoed, elided
from deepaas.model.v2.wrapper import UploadedFile

if TYPE_CHECKING:
    from deepaas.api.body import BodyReader

#: Largest piece read from a part at once (and written to an upload file).
CHUNK_SIZE = 1 << 18
#: First piece read from a part; pieces double up to ``CHUNK_SIZE``. aiohttp
#: reads up to twice the asked size ahead to find the boundary and pushes
#: the rest back, so a small first piece keeps tiny parts cheap.
FIRST_CHUNK = 8 << 10
#: Uploads that fit in their first piece are held back and written in
#: batches of up to this many files or bytes (one executor job each). Most
#: often the whole form is read before the first batch, so a form refused
#: for its part count has written nothing (creating a file costs 0.1 to
#: 1 ms of disk time).
BATCH_FILES = 1024
BATCH_BYTES = 1 << 20

#: Room for the boundary lines read with a part's headers.
BOUNDARY_SLACK = 256

_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9_-]{1,16}$")


class Part(enum.Enum):
    """What to do with a multipart part (decided by the caller's router)."""

    SKIP = "skip"  # read to the void
    FILE = "file"  # stream to a temporary file -> UploadedFile
    FIELD = "field"  # a file if the part has a file name, else a str


#: ``route(name, form_so_far) -> Part``. The file name is not asked for:
#: aiohttp parses Content-Disposition afresh for it (~30 us a time), and most
#: parts of a hostile body are skipped.
Router = Callable[[str, MultiDict[Any]], Part]


class FormReader:
    """Reads one multipart body for its :class:`BodyReader`, once.

    Each temporary file is listed in the body reader's ``files`` before it
    is created, so that :meth:`BodyReader.remove_files` removes it whatever
    happens. Errors are mapped to answers by :meth:`BodyReader.read`.
    """

    def __init__(self, body: BodyReader) -> None:
        self.request = body.request
        self.tmp_dir = body.tmp_dir
        self.limits = body.limits
        self.files = body.files  # the body reader's list: it removes them
        self._content = body.content  # decoded, as it is read
        self._cap, self._cap_option = body.cap, body.cap_option
        self._pace = body.pace
        self._breathe = body.breathe
        self._offload = body.offload
        self._received = 0
        self._small: list[tuple[str, bytes]] = []  # small uploads to write
        self._small_size = 0

    async def read(self, route: Router) -> MultiDict[Any]:
        """The form: its fields, and its uploads as :class:`UploadedFile`."""
        form: MultiDict[Any] = MultiDict()
        limit = self.limits.max_parts
        parts = 0
        try:
            stream = LineBudget(self._content, self._breathe)
            reader = MultipartReader(self.request.headers, cast(StreamReader, stream))
            while True:
                part = await self._next_part(reader, stream)
                if part is None:
                    break
                parts += 1
                if parts > limit:
                    raise too_many_parts(limit, "parts")
                if _headers_size(part.headers) > MAX_PART_HEADER_SIZE:
                    raise part_headers_too_large()
                if not isinstance(part, BodyPartReader):
                    raise bad_request("nested multipart bodies are not supported")
                name = part.name
                action = Part.SKIP if name is None else route(name, form)
                if action is Part.FIELD and part.filename is not None:
                    action = Part.FILE
                if name is None or action is Part.SKIP:
                    await self._discard(part)
                elif action is Part.FILE:
                    uploaded = await self._save_upload(part, name)
                    if uploaded is not None:
                        form.add(name, uploaded)
                else:
                    form.add(name, await self._read_text(part))
                await self._breathe()
            await self._write_small()
        except (
            web.HTTPException,
            DeepaasError,
            web.RequestPayloadError,
            HttpProcessingError,
        ):
            raise  # mapped by read()
        except (
            ValueError,
            AssertionError,
            LookupError,
            TypeError,
            RuntimeError,
        ) as exc:
            if self._content.at_eof() and str(exc) == "Reading after EOF":
                # The body ended inside a part (its headers or data), in
                # aiohttp's words, which tell a client nothing. (A body with
                # no starting boundary keeps aiohttp's own message, which
                # names the boundary it looked for.)
                raise multipart_cut_short() from None
            raise bad_request(
                "malformed multipart body: " + elided(str(exc), LIBRARY_TEXT)
            ) from None
        return form

    async def _next_part(self, reader: MultipartReader, stream: LineBudget) -> Any:
        stream.budget = MAX_PART_HEADER_SIZE + BOUNDARY_SLACK
        # the boundary, the headers, the blank line (+ an epilogue's two)
        stream.lines = MAX_PART_HEADER_LINES + 4
        try:
            part = await reader.next()
        except LineTooLong:
            raise part_headers_too_large() from None
        except HttpProcessingError as exc:
            if "too many headers" in str(exc.message).lower():
                raise part_headers_too_large() from None
            raise
        finally:
            stream.budget = None
        if self._pace is not None:
            self._pace.pieces += 1
        return part

    async def _chunks_of(self, part: BodyPartReader) -> Any:
        """The part's pieces, ``FIRST_CHUNK`` first, doubling to ``CHUNK_SIZE``;
        the total body size is checked as they come."""
        size = FIRST_CHUNK
        limit = self._cap
        pace = self._pace
        while chunk := await part.read_chunk(size):
            self._received += len(chunk)
            if limit and self._received > limit:
                raise too_large(limit, self._cap_option, self.request)
            if pace is not None:
                pace.pieces += 1
            yield chunk
            if size < CHUNK_SIZE:
                size *= 2
            else:
                await self._breathe()

    async def _discard(self, part: BodyPartReader) -> None:
        async for _ in self._chunks_of(part):
            pass

    async def _read_text(self, part: BodyPartReader) -> str:
        chunks = []
        size = 0
        async for chunk in self._chunks_of(part):
            size += len(chunk)
            if size > FORM_TEXT_LIMIT:
                raise DeepaasError(
                    413,
                    f"form field {echoed(part.name)} is larger than {FORM_TEXT_LIMIT} "
                    "bytes: send it as a file",
                )
            chunks.append(chunk)
        charset = part.get_charset(default="utf-8")
        try:
            codecs.lookup(charset)
        except (LookupError, ValueError):  # ValueError: a name no codec has
            raise bad_request(
                f"form field {echoed(part.name)} is in an unknown charset "
                f"{echoed(charset)}: send it as UTF-8"
            ) from None
        try:
            data = part.decode(b"".join(chunks))
            return bytes(data).decode(charset)
        except (ValueError, LookupError, RuntimeError, zlib.error) as exc:
            raise bad_request(
                f"form field {echoed(part.name)} is not valid text: "
                + elided(str(exc), LIBRARY_TEXT)
            ) from None

    async def _save_upload(
        self, part: BodyPartReader, name: str
    ) -> UploadedFile | None:
        """Stream a file part to a new temporary file (written in the
        executor); None for an empty file input (browsers and Swagger UI send
        one, with no file name, when no file was chosen)."""
        original = part.filename
        chunks = self._chunks_of(part)
        first = await anext(chunks, b"")
        if not first and not original:
            return None
        suffix = os.path.splitext(original or "")[1]
        path = os.path.join(
            self.tmp_dir,
            f"upload-{secrets.token_hex(8)}"
            + (suffix if _SAFE_SUFFIX.match(suffix) else ""),
        )
        self.files.append(path)  # before it exists: removed whatever happens
        second = await anext(chunks, None)
        if second is None:  # the whole part came in one piece: write it later
            self._small.append((path, first))
            self._small_size += len(first)
            if len(self._small) >= BATCH_FILES or self._small_size >= BATCH_BYTES:
                await self._write_small()
        else:
            await self._offload(_write_new, path, first)
            await self._offload(_append, path, second)
            async for chunk in chunks:
                await self._offload(_append, path, chunk)
        return UploadedFile(
            name=name,
            filename=path,
            content_type=part.headers.get("Content-Type", "application/octet-stream"),
            original_filename=original,
        )

    async def _write_small(self) -> None:
        """Create the small files held back, in one executor job."""
        if self._small:
            batch, self._small, self._small_size = self._small, [], 0
            await self._offload(_write_all, batch)


def _headers_size(headers: Any) -> int:
    return sum(len(name) + len(value) + 4 for name, value in headers.items())


def _write_new(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_all(batch: list[tuple[str, bytes]]) -> None:
    for path, data in batch:
        _write_new(path, data)


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as out:
        out.write(data)
