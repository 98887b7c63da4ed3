"""Request bodies read within limits: size, form parts, part headers, pace.

:class:`BodyReader` reads one request's body the way its Content-Type says
(JSON, urlencoded or multipart form) and refuses, with a JSON answer that
says what to change, every body that is too big, too many-parted, too deep,
wrongly encoded or too slow. Nothing here holds the event loop for long:

- a multipart body is counted part by part and refused when part
  ``max_parts + 1`` starts; each part is read in pieces that start small
  (``FIRST_CHUNK``), so a body of thousands of tiny parts costs little per
  part, and the reader yields to the loop at least every ``SLICE_S``;
- uploads are written to temporary files **in the default executor**: the
  file is created (with the first piece) and every further piece appended
  by a worker thread, never on the loop; uploads that fit in one piece are
  held back (at most ``BATCH_FILES`` files or ``BATCH_BYTES``) and created
  together in one job. Removing them is done in the executor too when there
  are more than ``INLINE_UNLINKS`` (a few unlinks are cheaper inline than a
  thread hop, and bounded);
- a compressed body is decoded here, a step at a time, as it is read
  (:class:`deepaas.api.guards.Decoded`; aiohttp's own decoding, when the app
  is served with it on, is only counted): the decoded size is capped
  (``--client-max-decoded-size``) as it grows, never after inflating it all,
  and a stream cut short is refused;
- JSON and urlencoded bodies, held in memory whole, are capped by
  ``--client-max-decoded-size`` too; those larger than
  ``OFFLOAD_PARSE_SIZE`` are parsed in the executor (JSON cooperatively:
  json's C parser would hold the GIL, and so the loop's thread, until it is
  done; see ``parse_json``);
- a client that stops sending for ``client_timeout`` seconds gets a 408 and
  its connection is closed (see :class:`deepaas.api.guards.Pace`).

aiohttp's own limits still apply underneath (in recent versions, a part
header line longer than 8190 bytes, more than 128 header lines); its errors
are mapped to the same JSON answers. The part-header and preamble caps are
enforced as the lines arrive (:class:`deepaas.api.guards.LineBudget`),
whatever the aiohttp version.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import re
import secrets
import zlib
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from multidict import MultiDict

from deepaas.api.guards import Decoded, LineBudget, Pace, aiohttp_decodes
from deepaas.api.limits import (
    DECODED_ENCODINGS,
    FORM_TEXT_LIMIT,
    MAX_PART_HEADER_LINES,
    MAX_PART_HEADER_SIZE,
    BodyLimits,
    bad_request,
    count_form_fields,
    parse_json,
    parse_urlencoded,
    part_headers_too_large,
    timed_out,
    too_large,
    too_many_parts,
    undecodable,
)
from deepaas.exceptions import DeepaasError
from deepaas.model.v2.wrapper import UploadedFile

T = TypeVar("T")

#: Largest piece read from a part at once (and written to an upload file).
CHUNK_SIZE = 1 << 18
#: First piece read from a part; pieces double up to ``CHUNK_SIZE``. aiohttp
#: reads up to twice the asked size ahead to find the boundary and pushes
#: the rest back, so a small first piece keeps tiny parts cheap.
FIRST_CHUNK = 8 << 10
#: JSON and urlencoded bodies larger than this are parsed in the executor.
OFFLOAD_PARSE_SIZE = 64 << 10
#: The multipart reader yields to the event loop after this much work.
SLICE_S = 0.005
#: More temporary files than this are removed in the executor.
INLINE_UNLINKS = 4
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


class BodyReader:
    """Reads one request's body within its limits; owns the files it wrote.

    ``files`` lists the temporary files written so far (each is listed
    before it is created, so a failure at any point leaves nothing that
    :meth:`remove_files` does not know about).
    """

    def __init__(self, request: web.Request, tmp_dir: str, limits: BodyLimits) -> None:
        self.request = request
        self.tmp_dir = tmp_dir
        self.limits = limits
        self.files: list[str] = []
        self._received = 0
        self._small: list[tuple[str, bytes]] = []  # small uploads to write
        self._small_size = 0
        self._pace: Pace | None = None
        self._slice_start = 0.0
        self._content: Any = request.content  # decoded, as it is read
        self._cap, self._cap_option = limits.max_size, "--client-max-size"

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async def read(
        self, route: Router
    ) -> tuple[MultiDict[Any] | None, dict[str, Any] | None]:
        """(form, JSON object) of the body; both None for other content types."""
        request = self.request
        content_type = request.content_type
        if content_type == "multipart/form-data":
            kind = "multipart"
        elif content_type == "application/x-www-form-urlencoded":
            kind = "urlencoded"
        elif content_type == "application/json" or content_type.endswith("+json"):
            kind = "json"
        else:
            return None, None  # not a body we read (as DEEPaaS 2.x)
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding and encoding not in DECODED_ENCODINGS:
            raise bad_request(
                f"Content-Encoding {encoding!r} is not supported: send the body "
                "uncompressed, or compressed with gzip or deflate"
            )
        self._slice_start = self._loop.time()
        compressed = encoding not in ("", "identity")
        self._cap, self._cap_option = self.limits.cap(compressed, kind != "multipart")
        if not request.content.is_eof():
            self._pace = Pace(request.content, self.limits.client_timeout)
        try:
            if compressed and not aiohttp_decodes(request.content):
                self._content = Decoded(
                    request, encoding, self.limits.max_size, self._breathe
                )
            if kind == "multipart":
                return await self._multipart(route), None
            raw = await self._read_all()
            if kind == "urlencoded":
                return await self._urlencoded(raw), None
            return None, await self._json(raw)
        except asyncio.CancelledError:
            if self._pace is not None and self._pace.ours():
                raise timed_out(request, self.limits.client_timeout) from None
            raise
        except (web.HTTPException, DeepaasError):
            raise
        except web.RequestPayloadError as exc:
            raise undecodable(request, encoding, exc) from None
        except HttpProcessingError as exc:
            if exc.code == 413:
                raise DeepaasError(413, f"request too large: {exc.message}") from None
            raise bad_request(f"malformed request body: {exc.message}") from None
        finally:
            if self._pace is not None:
                self._pace.stop()

    async def remove_files(self) -> None:
        """Remove the temporary files (in the executor when there are many)."""
        if not self.files:
            return
        paths = self.files[:]
        self.files.clear()  # in place: callers may hold this list
        if len(paths) <= INLINE_UNLINKS:
            _unlink_all(paths)
            return
        try:
            removal = self._loop.run_in_executor(None, _unlink_all, paths)
        except RuntimeError:  # the executor is shut down: the server is stopping
            _unlink_all(paths)
            return
        # shield: a cancelled wait must not cancel the removal itself.
        await asyncio.shield(removal)

    def remove_files_now(self) -> None:
        """Remove the temporary files here and now (no loop needed)."""
        paths = self.files[:]
        self.files.clear()
        _unlink_all(paths)

    # -- whole bodies --------------------------------------------------------

    async def _read_all(self) -> bytes:
        content = self._content
        limit = self._cap
        chunks = []
        size = 0
        while chunk := await content.readany():
            size += len(chunk)
            if limit and size > limit:
                raise too_large(limit, self._cap_option, self.request)
            chunks.append(chunk)
            if self._pace is not None:
                self._pace.pieces += 1
            # aiohttp hands over (and decodes) what it has buffered without
            # a pause: a compressed body would be inflated in one go.
            await self._breathe()
        return b"".join(chunks)

    async def _json(self, raw: bytes) -> dict[str, Any]:
        if not raw or raw.isspace():
            return {}
        if len(raw) > OFFLOAD_PARSE_SIZE:
            return await self._offload(parse_json, raw, True)
        return parse_json(raw)

    async def _urlencoded(self, raw: bytes) -> MultiDict[str]:
        raw = raw.rstrip()
        limit = self.limits.max_parts
        # Counting '&' is cheap and an upper bound: count exactly only above.
        if raw.count(b"&") >= limit and count_form_fields(raw) > limit:
            raise too_many_parts(limit, "fields")
        charset = self.request.charset or "utf-8"
        if len(raw) > OFFLOAD_PARSE_SIZE:
            return await self._offload(parse_urlencoded, raw, charset)
        return parse_urlencoded(raw, charset)

    # -- multipart -----------------------------------------------------------

    async def _multipart(self, route: Router) -> MultiDict[Any]:
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
            raise bad_request(f"malformed multipart body: {exc}") from None
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

    async def _breathe(self) -> None:
        """Let the loop run other work after ``SLICE_S`` of ours: a body held
        whole in the buffer would otherwise be parsed without a pause."""
        now = self._loop.time()
        if now - self._slice_start >= SLICE_S:
            await asyncio.sleep(0)
            self._slice_start = self._loop.time()

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
                    f"form field {part.name!r} is larger than {FORM_TEXT_LIMIT} "
                    "bytes: send it as a file",
                )
            chunks.append(chunk)
        try:
            data = part.decode(b"".join(chunks))
            return bytes(data).decode(part.get_charset(default="utf-8"))
        except (ValueError, LookupError, RuntimeError, zlib.error) as exc:
            raise bad_request(
                f"form field {part.name!r} is not valid text: {exc}"
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

    async def _offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the default executor. If the wait is cancelled, wait
        for ``fn`` to finish before passing the cancellation on, so a file is
        never created after it was removed."""
        future = self._loop.run_in_executor(None, fn, *args)
        pace = self._pace
        if pace is not None:
            pace.busy += 1
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await asyncio.wait([future])
            raise
        finally:
            if pace is not None:
                pace.busy -= 1
            self._slice_start = self._loop.time()


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


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
