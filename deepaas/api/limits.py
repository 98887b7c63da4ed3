"""What a request body may be, and the JSON answer when it is not.

The limits a server applies to request bodies (:class:`BodyLimits`, from
``--client-max-size``, ``--client-max-decoded-size``, ``--max-form-parts``
and ``--client-timeout``, and the fixed caps below), and the errors that
say which limit was passed and what to change. The bodies themselves are
read by :mod:`deepaas.api.body` and parsed by :mod:`deepaas.api.parsing`.
``docs/limits.md`` lists every limit for users.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion11, hdrs, web

from deepaas.config import Settings
from deepaas.exceptions import DeepaasError, echoed


def _knows_zstd() -> bool:
    """Whether aiohttp's request parser handles Content-Encoding: zstd."""
    try:
        from aiohttp import compression_utils
    except ImportError:  # pragma: no cover - every supported aiohttp has it
        return False
    return hasattr(compression_utils, "HAS_ZSTD")


#: Largest header block of one multipart part (names, values, separators).
#: Browsers send a Content-Disposition and a Content-Type: a few hundred
#: bytes, even with a long file name. Larger is refused with 413.
MAX_PART_HEADER_SIZE = 8 << 10
#: Most bytes before the first part of a multipart body (its preamble, which
#: RFC 2046 allows and clients leave empty). Larger is refused with 413.
MAX_PREAMBLE_SIZE = 8 << 10
#: Deepest nesting of arrays and objects accepted in a JSON body; deeper is
#: refused with 400 before it is parsed (Python's parser would otherwise
#: recurse until RecursionError).
MAX_JSON_DEPTH = 100
#: Most digits of an integer (characters of any number) in a JSON body;
#: more is refused with 400. Python's own limit on converting digits to an
#: int (3.11+), applied on every Python: converting is quadratic in them.
MAX_NUMBER_DIGITS = 4300
#: A non-file form field larger than this is refused (413).
FORM_TEXT_LIMIT = 16 << 20
#: Most lines in the header block of one multipart part (aiohttp's own
#: default for parts, where it has one). More are refused with 413.
MAX_PART_HEADER_LINES = 128
#: Content-Encodings aiohttp decodes: br (and zstd, from aiohttp 3.12) when
#: their libraries are installed; without them aiohttp itself answers 400
#: before any handler. Any other encoding would reach us undecoded.
DECODED_ENCODINGS = frozenset(
    {"identity", "gzip", "deflate", "br"} | ({"zstd"} if _knows_zstd() else set())
)

#: Default of ``--client-max-decoded-size``: the largest body once decoded,
#: for a compressed body (1 MB of gzip can inflate to 1 GB) and for a JSON
#: or urlencoded body, which is held in memory whole and parsed.
MAX_DECODED_SIZE: int = Settings.client_max_decoded_size

#: How to send a large value to a DEEPaaS route: the end of the 413 for a
#: body over ``--client-max-decoded-size``. Routes that take no multipart
#: body (OIP infer) replace it (:func:`deepaas.api.errors.as_oip_error`).
MULTIPART_ADVICE = "send large data as multipart file parts"

_STATUS_PREFIX = re.compile(r"^\d{3}, message:\s*")


@dataclasses.dataclass(frozen=True)
class BodyLimits:
    """What a request body may be: its size, its form parts, its pace."""

    max_size: int = 0  # bytes, 0: no limit (--client-max-size)
    # bytes once decoded, of compressed, JSON and urlencoded bodies, 0: no
    # limit (--client-max-decoded-size)
    max_decoded_size: int = MAX_DECODED_SIZE
    max_parts: int = 1000  # parts of a multipart or urlencoded form
    client_timeout: float = 60.0  # seconds between two pieces of a body

    def cap(self, compressed: bool, in_memory: bool) -> tuple[int, str]:
        """(bytes, the option that sets it) a body may take as it is read;
        0: no limit. The decoded-size cap applies to bodies sent compressed
        and to those held in memory whole; an uncompressed multipart body is
        written to disk as it comes, and only ``--client-max-size`` caps it.
        """
        size, decoded = self.max_size, self.max_decoded_size
        if not (compressed or in_memory) or not decoded:
            return size, "--client-max-size"
        if size and size <= decoded:
            return size, "--client-max-size"
        return decoded, "--client-max-decoded-size"

    def declared_over(
        self, request: web.BaseRequest, in_memory: bool
    ) -> DeepaasError | ClosingError | None:
        """The 413 for a body whose ``Content-Length`` already says it is over
        its limit (:meth:`cap`; a compressed one: ``--client-max-size``), to
        raise before a byte of it is read; None when it is within, or does
        not say. ``in_memory``: the body is held whole (JSON, urlencoded)."""
        length = request.content_length
        if not length:
            return None
        encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
        if encoding not in ("", "identity"):  # its decoded size is unknown yet
            limit, option = self.max_size, "--client-max-size"
        else:
            limit, option = self.cap(False, in_memory)
        if limit and length > limit:
            return too_large(limit, option, request)
        return None


def held_in_memory(content_type: str) -> bool:
    """Whether a DEEPaaS route reads a body of ``content_type`` whole into
    memory (JSON, urlencoded) rather than part by part to disk (multipart)."""
    return (
        content_type == "application/x-www-form-urlencoded"
        or content_type == "application/json"
        or content_type.endswith("+json")
    )


def expect_within(
    limits: BodyLimits, in_memory: bool | None = None
) -> Callable[[web.Request], Awaitable[None]]:
    """A route's ``expect_handler``: ``Expect: 100-continue`` gets the 413 a
    body declared over its limit will get instead of ``100 Continue``, so
    the client does not send it (aiohttp's own handler says 100 Continue to
    any size). ``in_memory``: the route holds every body whole (None: by
    its content type, :func:`held_in_memory`)."""

    async def expect(request: web.Request) -> None:
        if request.version != HttpVersion11:
            return
        expectation = request.headers.get(hdrs.EXPECT, "")
        if expectation.lower() != "100-continue":
            raise web.HTTPExpectationFailed(
                text=f"Unknown Expect: {echoed(expectation)}"
            )
        whole = held_in_memory(request.content_type) if in_memory is None else in_memory
        error = limits.declared_over(request, whole)
        if error is not None:
            raise error
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer's own size starts now

    return expect


def too_large(
    limit: int,
    option: str = "--client-max-size",
    request: web.BaseRequest | None = None,
) -> DeepaasError | ClosingError:
    """413 for a body over ``limit``. With the ``request`` whose body is
    being read, the connection is closed after the answer: aiohttp would
    otherwise read (and decode: a bomb) the rest of the body first."""
    if option == "--client-max-decoded-size":
        message = (
            f"the request body is larger than the limit of {limit} bytes once "
            "decompressed, or for a JSON or form body held in memory "
            f"({option}): send less, or {MULTIPART_ADVICE}"
        )
    else:
        message = (
            f"request body is larger than the limit of {limit} bytes "
            f"({option}): send less"
        )
    if request is not None:
        return ClosingError(413, message, request)
    return DeepaasError(413, message)


def truncated(request: web.BaseRequest, encoding: str) -> ClosingError:
    """400 for a compressed body that ends before its compressed stream does."""
    return ClosingError(
        400,
        f"the request body is marked Content-Encoding: {encoding} but its "
        f"{encoding} stream is truncated or corrupt (it ends before the end of "
        "the compressed data): send the whole compressed body",
        request,
    )


def empty_encoded(request: web.BaseRequest, encoding: str) -> ClosingError:
    """400 for an empty body marked compressed: zero bytes are no gzip,
    deflate, br or zstd data (each has at least a header or end marker)."""
    return ClosingError(
        400,
        f"the request body is marked Content-Encoding: {encoding} but is empty, "
        f"which is not valid {encoding} data: send the compressed body, or no "
        "Content-Encoding header",
        request,
    )


def decodable() -> str:
    """The Content-Encodings this server decodes, as a message says them
    ("gzip, deflate, br or zstd"): br and zstd only where aiohttp found
    their libraries (Brotli, ``compression.zstd`` or ``backports.zstd``),
    which deepaas does not require, so that a client told what to send is
    told all it may, and nothing it may not."""
    from aiohttp import compression_utils as codecs

    names = ["gzip", "deflate"]
    if getattr(codecs, "HAS_BROTLI", False):
        names.append("br")
    if "zstd" in DECODED_ENCODINGS and getattr(codecs, "HAS_ZSTD", False):
        names.append("zstd")
    return ", ".join(names[:-1]) + " or " + names[-1]


def not_installed(encoding: str) -> DeepaasError:
    return DeepaasError(
        400,
        f"Content-Encoding {echoed(encoding)} is not supported by this server (the "
        "library that decodes it is not installed): send the body "
        f"uncompressed, or compressed with {decodable()}",
    )


def unsupported(encoding: str) -> DeepaasError:
    """An encoding no library here decodes (``compress``, ``x-gzip``, a
    list of several, as in ``gzip, gzip``)."""
    return DeepaasError(
        400,
        f"Content-Encoding {echoed(encoding)} is not supported: send the body "
        f"uncompressed, or compressed with {decodable()}",
    )


def bad_request(message: str) -> DeepaasError:
    return DeepaasError(400, message)


def too_many_parts(limit: int, what: str) -> DeepaasError:
    return DeepaasError(
        413,
        f"the form has more than {limit} {what}, the limit (--max-form-parts): "
        f"send at most {limit}",
    )


def multipart_cut_short() -> DeepaasError:
    """A multipart body that ends inside a part, before the closing
    boundary line: cut short by the client (or a proxy), or sent with
    another boundary than its Content-Type names."""
    return DeepaasError(
        400,
        "the multipart body ends before its closing boundary line (--BOUNDARY--, "
        "BOUNDARY as its Content-Type names it): it was cut short; send the "
        "whole body",
    )


def part_headers_too_large() -> DeepaasError:
    return DeepaasError(
        413,
        f"the headers of a multipart part are larger than {MAX_PART_HEADER_SIZE} "
        f"bytes or {MAX_PART_HEADER_LINES} lines: keep each part's headers "
        "(Content-Disposition, Content-Type, file name) short",
    )


def preamble_too_large() -> DeepaasError:
    return DeepaasError(
        413,
        f"the multipart body has more than {MAX_PREAMBLE_SIZE} bytes before its "
        "first boundary (a preamble): start the body with the boundary",
    )


def too_deep() -> DeepaasError:
    return bad_request(
        f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels: "
        "send a flatter document"
    )


class ClosingError(web.HTTPError):
    """A JSON error answer after which the connection is closed.

    For bodies the connection cannot go on after: one that stopped arriving
    (408), or that aiohttp could not decode (400). aiohttp would otherwise
    keep the connection open after the answer for its lingering time (10 s),
    reading what the client still sends, and re-raise a decoding error there
    (logged as an unhandled exception). As an HTTPException with a JSON body
    it passes the front door as it is, so the metrics count its status
    and aiohttp sends this very object.
    """

    def __init__(self, status: int, message: str, request: web.BaseRequest) -> None:
        self.status_code = status
        super().__init__(
            text=json.dumps({"message": message}), content_type="application/json"
        )
        self.force_close()
        self._closing = request

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)
        # The answer is in the transport's buffer, which is flushed first.
        self._closing.protocol.force_close()


def timed_out(request: web.BaseRequest, timeout: float) -> ClosingError:
    return ClosingError(
        408,
        f"the request body stopped arriving for more than {timeout:g} s "
        "(--client-timeout): send it without pauses",
        request,
    )


def undecodable(
    request: web.BaseRequest, encoding: str, exc: Exception
) -> ClosingError:
    """400 for a body aiohttp could not decode (bad gzip, bad chunking...)."""
    if encoding and encoding != "identity":
        message = (
            f"the request body is marked Content-Encoding: {encoding} but is not "
            f"valid {encoding} data: send it uncompressed, or compressed as the "
            "header says"
        )
    else:
        reason = _STATUS_PREFIX.sub("", " ".join(str(exc).split()))
        message = f"the request body cannot be read: {reason}"
    return ClosingError(400, message, request)
