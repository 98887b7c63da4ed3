"""Request bodies read within limits: size, form parts, part headers, pace.

:class:`BodyReader` reads one request's body the way its Content-Type says
(JSON, urlencoded or multipart form) and refuses, with a JSON answer that
says what to change, every body that is too big, too many-parted, too deep,
wrongly encoded or too slow. Nothing here holds the event loop for long:

- a multipart body is read part by part by
  :class:`deepaas.api.multipart.FormReader` (part count, part headers,
  uploads written to temporary files in the default executor), which this
  reader owns the files of. Removing them is done in the executor too when
  there are more than ``INLINE_UNLINKS`` (a few unlinks are cheaper inline
  than a thread hop, and bounded);
- the readers yield to the loop at least every ``SLICE_S``
  (:meth:`BodyReader.breathe`);
- a compressed body is decoded here, a step at a time, as it is read
  (:class:`deepaas.api.guards.Decoded`; aiohttp's own decoding, when the app
  is served with it on, is only counted): the decoded size is capped
  (``--client-max-decoded-size``) as it grows, never after inflating it all,
  and a stream cut short is refused;
- JSON and urlencoded bodies, held in memory whole, are capped by
  ``--client-max-decoded-size`` too; those larger than
  ``OFFLOAD_PARSE_SIZE`` are parsed in the executor (JSON cooperatively:
  json's C parser would hold the GIL, and so the loop's thread, until it is
  done; see :func:`deepaas.api.parsing.parse_json`);
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
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict

from deepaas.api.guards import Decoded, Pace, aiohttp_decodes
from deepaas.api.limits import (
    DECODED_ENCODINGS,
    BodyLimits,
    ClosingError,
    bad_request,
    empty_encoded,
    timed_out,
    too_large,
    too_many_parts,
    undecodable,
    unsupported,
)
from deepaas.api.multipart import FormReader, Part, Router
from deepaas.api.parsing import (
    count_form_fields,
    is_json,
    parse_json,
    parse_urlencoded,
)
from deepaas.exceptions import LIBRARY_TEXT, DeepaasError, elided

# Part and Router are the multipart module's; importable from here as before.
__all__ = ["BodyReader", "Part", "Router"]

T = TypeVar("T")

#: Bodies of these types (text/plain, or none given) are looked at, to tell
#: a client that sent JSON without saying so, and so are JSON's unofficial
#: types (text/json...), which would otherwise be ignored just as silently.
_UNTYPED = frozenset(
    {
        "text/plain",
        "application/octet-stream",
        "text/json",
        "text/x-json",
        "application/x-json",
    }
)

#: JSON and urlencoded bodies larger than this are parsed in the executor.
OFFLOAD_PARSE_SIZE = 64 << 10
#: A body reader yields to the event loop after this much work.
SLICE_S = 0.005
#: More temporary files than this are removed in the executor.
INLINE_UNLINKS = 4
#: A body of this size or more is read into one buffer when asked
#: (:meth:`BodyReader.read_bytes`); smaller ones cost nothing to join.
INTO_ONE_MIN = 64 << 10


class BodyReader:
    """Reads one request's body within its limits; owns the files it wrote.

    ``files`` lists the temporary files written so far (each is listed
    before it is created, so a failure at any point leaves nothing that
    :meth:`remove_files` does not know about). Once :meth:`read` started,
    ``content`` is the stream to read (decoded), ``cap`` and ``cap_option``
    the size it may reach and the option that sets it, ``pace`` the body's
    :class:`Pace` (None for a body already received): what the
    :class:`deepaas.api.multipart.FormReader` of a multipart body uses;
    ``size`` the bytes of a JSON or urlencoded body (whose arguments the
    caller loads off the loop when it is big).
    """

    def __init__(self, request: web.Request, tmp_dir: str, limits: BodyLimits) -> None:
        self.request = request
        self.tmp_dir = tmp_dir
        self.limits = limits
        self.files: list[str] = []
        self.pace: Pace | None = None
        self._slice_start = 0.0
        self.content: Any = request.content  # decoded, as it is read
        self.cap, self.cap_option = limits.max_size, "--client-max-size"
        self.size = 0  # bytes of a JSON or urlencoded body, once read

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
            await self._refuse_untyped_json(content_type)
            return None, None  # not a body we read (as DEEPaaS 2.x)

        async def parse() -> tuple[MultiDict[Any] | None, dict[str, Any] | None]:
            if kind == "multipart":
                return await FormReader(self).read(route), None
            raw = await self._read_all()
            if kind == "urlencoded":
                return await self._urlencoded(raw), None
            return None, await self._json(raw)

        return await self._reading(parse, in_memory=kind != "multipart")

    async def _refuse_untyped_json(self, content_type: str) -> None:
        """A 400 for a body that is a JSON object or array sent without its
        type: as ``text/plain``, or with no ``Content-Type`` at all
        (aiohttp's ``application/octet-stream``; what ``requests.post(url,
        data=json.dumps(...))`` sends). Its arguments would be ignored, as
        DEEPaaS 2.x ignored any body it does not read, and the model would
        run on its defaults without a word. Such a body is read within the
        limits of a JSON body; bodies of other types are left unread."""
        length = self.request.content_length
        if content_type not in _UNTYPED or not length:
            return
        raw = await self._reading(self._read_all, in_memory=True)
        if raw.lstrip()[:1] not in (b"{", b"["):
            return
        if len(raw) > OFFLOAD_PARSE_SIZE:
            json_body = await self.offload(is_json, raw)
        else:
            json_body = is_json(raw)
        if json_body:
            named = (
                "with no Content-Type"
                if hdrs.CONTENT_TYPE not in self.request.headers
                else f"as {content_type}"
            )
            raise bad_request(
                f"the body is JSON but was sent {named}: send it with "
                "'Content-Type: application/json'"
            )

    async def read_bytes(self, into_one: bool = False) -> bytes | bytearray:
        """The whole body (decoded, whatever its content type), held in
        memory: within ``--client-max-size`` and ``--client-max-decoded-size``
        (an Open Inference Protocol infer request).

        ``into_one``: a body that says its length (``Content-Length``, at
        least ``INTO_ONE_MIN`` bytes, not compressed) is read straight into
        one buffer of that size, rather than in pieces joined at the end: it
        is then held once, not twice for a moment (big binary tensors).
        """
        length = self.request.content_length
        if (
            into_one
            and length is not None
            and length >= INTO_ONE_MIN
            and self._encoding() in ("", "identity")
        ):
            return await self._reading(lambda: self._read_into(length), in_memory=True)
        return await self._reading(self._read_all, in_memory=True)

    async def _reading(self, read: Callable[[], Awaitable[T]], in_memory: bool) -> T:
        """``read()`` the body within the limits; its errors as JSON answers."""
        request = self.request
        encoding = self._encoding()
        self._slice_start = self._loop.time()
        compressed = encoding not in ("", "identity")
        self.cap, self.cap_option = self.limits.cap(compressed, in_memory)
        if not request.content.is_eof():
            self.pace = Pace(request.content, self.limits.client_timeout)
        try:
            if compressed and not aiohttp_decodes(request.content):
                self.content = Decoded(
                    request,
                    encoding,
                    self.limits.max_size,
                    self.breathe,
                    self.cap,
                    self.cap_option,
                )
            return await read()
        except asyncio.CancelledError:
            if self.pace is not None and self.pace.ours():
                raise timed_out(request, self.limits.client_timeout) from None
            raise
        except (web.HTTPException, DeepaasError):
            raise
        except web.RequestPayloadError as exc:
            raise undecodable(request, encoding, exc) from None
        except HttpProcessingError as exc:
            if exc.code == 413:
                raise DeepaasError(413, f"request too large: {exc.message}") from None
            raise bad_request(
                "malformed request body: " + elided(exc.message, LIBRARY_TEXT)
            ) from None
        finally:
            if self.pace is not None:
                self.pace.stop()

    def check_empty(self) -> None:
        """For a request without a body (``Content-Length: 0``): refuse it
        if it says it is compressed, as its decoding would (zero bytes are no
        compressed data; DEEPaaS would otherwise run the model on defaults)."""
        encoding = self._encoding()
        if encoding not in ("", "identity"):
            raise empty_encoded(self.request, encoding)

    def _encoding(self) -> str:
        """The body's Content-Encoding, refused unless it is one we decode."""
        header = self.request.headers.get("Content-Encoding", "")
        encoding = header.strip().lower()
        if encoding and encoding not in DECODED_ENCODINGS:
            raise unsupported(encoding)
        return encoding

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
        content = self.content
        limit = self.cap
        chunks = []
        size = 0
        while chunk := await content.readany():
            size += len(chunk)
            if limit and size > limit:
                raise too_large(limit, self.cap_option, self.request)
            chunks.append(chunk)
            self.size = size
            if self.pace is not None:
                self.pace.pieces += 1
            # aiohttp hands over (and decodes) what it has buffered without
            # a pause: a compressed body would be inflated in one go.
            await self.breathe()
        return b"".join(chunks)

    async def _read_into(self, length: int) -> bytes | bytearray:
        """The body of ``length`` bytes, read into one buffer (within the cap:
        a longer one is refused by :meth:`_read_all`)."""
        if self.cap and length > self.cap:
            return await self._read_all()
        content = self.content
        try:
            buffer = bytearray(length)
        except MemoryError:  # no cap (0), and a length past the memory there is
            raise ClosingError(
                413,
                f"the request body's Content-Length is {length} bytes, more than "
                "this server can hold in memory: send less (the server's "
                "operator can set a limit, --client-max-decoded-size)",
                self.request,
            ) from None
        size = 0
        with memoryview(buffer) as view:
            # readchunk: each piece as aiohttp received it (readany joins
            # the pieces it holds first: one more copy).
            while chunk := (await content.readchunk())[0]:
                end = size + len(chunk)
                if end > length:  # aiohttp stops at Content-Length: never here
                    raise bad_request("the body is longer than its Content-Length")
                view[size:end] = chunk
                size = self.size = end
                if self.pace is not None:
                    self.pace.pieces += 1
                await self.breathe()
        if size != length:
            raise bad_request(
                f"the body ended after {size} of the {length} bytes its "
                "Content-Length says"
            )
        return buffer

    async def _json(self, raw: bytes) -> dict[str, Any]:
        if not raw or raw.isspace():
            return {}
        if len(raw) > OFFLOAD_PARSE_SIZE:
            return await self.offload(parse_json, raw, True)
        return parse_json(raw)

    async def _urlencoded(self, raw: bytes) -> MultiDict[str]:
        raw = raw.rstrip()
        limit = self.limits.max_parts
        # Counting '&' is cheap and an upper bound: count exactly only above.
        if raw.count(b"&") >= limit and count_form_fields(raw) > limit:
            raise too_many_parts(limit, "fields")
        charset = self.request.charset or "utf-8"
        if len(raw) > OFFLOAD_PARSE_SIZE:
            return await self.offload(parse_urlencoded, raw, charset)
        return parse_urlencoded(raw, charset)

    # -- the loop's share (also used by FormReader and the stream guards) -----

    async def breathe(self) -> None:
        """Let the loop run other work after ``SLICE_S`` of ours: a body held
        whole in the buffer would otherwise be parsed without a pause."""
        now = self._loop.time()
        if now - self._slice_start >= SLICE_S:
            await asyncio.sleep(0)
            self._slice_start = self._loop.time()

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the default executor. If the wait is cancelled, wait
        for ``fn`` to finish before passing the cancellation on, so a file is
        never created after it was removed."""
        future = self._loop.run_in_executor(None, fn, *args)
        pace = self.pace
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


def arrived_json(request: web.BaseRequest, limits: BodyLimits) -> dict[str, Any] | None:
    """The JSON object of a small body that came whole with its head, parsed
    at once; None when :meth:`BodyReader.read` must read it (not JSON,
    compressed, not all here yet, over ``OFFLOAD_PARSE_SIZE`` or a limit).

    The usual JSON prediction (a few hundred bytes in the packet of its
    head) then costs no coroutine, no pace guard and no read loop: aiohttp
    has fed the whole body to ``request.content`` before the handler runs.
    What this raises (a 400 for a body that is not a JSON object) is what
    :meth:`BodyReader.read` would.
    """
    content = request.content
    if not content.is_eof() or hdrs.CONTENT_ENCODING in request.headers:
        return None
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        return None
    size = content.total_bytes
    cap, _ = limits.cap(False, True)
    if size > OFFLOAD_PARSE_SIZE or (cap and size > cap):
        return None
    if limits.declared_over(request, True) is not None:
        return None  # BodyReader refuses it, in its words
    raw = content.read_nowait()
    if not raw or raw.isspace():
        return {}
    return parse_json(raw)


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
