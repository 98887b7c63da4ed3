"""What a request body may be, and the JSON answer when it is not.

The limits a server applies to request bodies (:class:`BodyLimits`, from
``--client-max-size``, ``--client-max-decoded-size``, ``--max-form-parts``
and ``--client-timeout``, and the fixed caps below), the errors that say
which limit was passed and what to change, and the pure functions that
check and parse whole bodies: every JSON body of every route is parsed by
:func:`parse_json`. They hold no state and touch no loop, so
:mod:`deepaas.api.body` may run them in the executor. ``docs/limits.md``
lists every limit for users.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import re
import urllib.parse
from typing import Any

from aiohttp import web
from multidict import MultiDict

from deepaas.exceptions import DeepaasError


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
MAX_DECODED_SIZE = 128 << 20
#: Big JSON bodies are decoded and scanned for their depth this many
#: characters at a time (one C call each), so that a worker thread doing it
#: lets go of the GIL, and the event loop runs, between two slices.
PARSE_SLICE = 256 << 10

_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_JSON_SPECIAL = re.compile(r'[\[\]{}"\\]')
# A JSON string, escapes included; one left open runs to the end of the text
# (so that no match is tried again from inside it: linear time).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\[\s\S]?[^"\\]*)*(?:"|\Z)')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_CURLY_TO_SQUARE = str.maketrans("{}", "[]")
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
            f"({option}): send less, or send large data as multipart file parts"
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


def not_installed(encoding: str) -> DeepaasError:
    return DeepaasError(
        400,
        f"Content-Encoding {encoding!r} is not supported by this server (the "
        "library that decodes it is not installed): send the body "
        "uncompressed, or compressed with gzip or deflate",
    )


def bad_request(message: str) -> DeepaasError:
    return DeepaasError(400, message)


def too_many_parts(limit: int, what: str) -> DeepaasError:
    return DeepaasError(
        413,
        f"the form has more than {limit} {what}, the limit (--max-form-parts): "
        f"send at most {limit}",
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
    it passes the error middleware as it is, so the metrics count its status
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


# -- parsing (pure functions; big bodies run them in the executor) ----------


def parse_json(raw: bytes, cooperative: bool = False) -> dict[str, Any]:
    """The JSON object of a request body: every JSON body is parsed here.

    Anything but an object is refused before it is parsed (a 50 MB array
    costs a glance at its first character). ``NaN``, ``Infinity`` and
    ``-Infinity``, which Python's parser takes but standard JSON does not
    have, are refused. The nesting depth is checked before parsing: a
    document of 100,000 nested arrays would make the parser recurse until
    RecursionError (a 500 before this check), or overflow a small thread
    stack.

    ``cooperative`` (for big bodies, parsed in a worker thread): the text is
    decoded and scanned in slices, and objects and numbers are built through
    Python-level hooks, so the thread lets go of the GIL every few
    milliseconds; json's C parser would hold it throughout, and the event
    loop's thread could not run until it is done (0.5 s for 50 MB of
    numbers). Only a run of strings inside an array is still parsed in one
    go (no hook is called for them): ``docs/limits.md`` gives the bound.
    """
    try:
        text = _decode(raw, json.detect_encoding(raw), cooperative)
    except UnicodeDecodeError as exc:
        raise bad_request(f"invalid JSON body: {exc}") from None
    match = _JSON_SPACE.match(text)
    first = text[match.end() if match else 0 :][:1]
    if first != "{":
        raise bad_request(
            f"the JSON body must be an object ({{...}}), got {_kind_of(first)}: "
            "send the arguments as the members of an object"
        )
    if json_too_deep(text, MAX_JSON_DEPTH, PARSE_SLICE if cooperative else 0):
        raise too_deep()
    try:
        if cooperative:
            value = json.loads(
                text,
                object_pairs_hook=_as_dict,
                parse_int=_as_int,
                parse_float=_as_float,
                parse_constant=_no_constant,
            )
        else:
            value = json.loads(text, parse_constant=_no_constant)
    except DeepaasError:
        raise
    except RecursionError:  # not reached after the check above; kept as a guard
        raise too_deep() from None
    except ValueError as exc:
        raise bad_request(f"invalid JSON body: {exc}") from None
    if not isinstance(value, dict):  # "{" starts nothing else; kept as a guard
        raise bad_request(
            f"the JSON body must be an object, got {type(value).__name__}"
        )
    return value


def _decode(raw: bytes, encoding: str, sliced: bool) -> str:
    if not sliced or len(raw) <= PARSE_SLICE:
        return raw.decode(encoding, "surrogatepass")
    decoder = codecs.getincrementaldecoder(encoding)("surrogatepass")
    step = PARSE_SLICE
    parts = [decoder.decode(raw[i : i + step]) for i in range(0, len(raw), step)]
    parts.append(decoder.decode(b"", True))
    return "".join(parts)


def _kind_of(first: str) -> str:
    if first == "[":
        return "an array"
    if first == '"':
        return "a string"
    if not first:
        return "nothing"
    if first in "-0123456789":
        return "a number"
    return {"t": "true", "f": "false", "n": "null"}.get(first, "no JSON value")


def _no_constant(name: str) -> Any:
    raise bad_request(
        f"the JSON body contains {name}, which standard JSON does not have: "
        "send a number, or null"
    )


# Python-level hooks: calling them lets a parsing thread give up the GIL.
def _as_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return dict(pairs)


def _as_int(text: str) -> int:
    return int(text)


def _as_float(text: str) -> float:
    return float(text)


def json_too_deep(text: str, limit: int, slice_size: int = 0) -> bool:
    """Whether arrays and objects in ``text`` nest deeper than ``limit``.

    In C-speed passes rather than a Python loop over the characters: the
    strings are cut out (a linear regex: a string left open runs to the end),
    only the brackets kept, and the innermost pairs peeled off, one level a
    pass. Brackets that do not pair up (not JSON) are counted exactly by
    :func:`json_depth`, which stops as soon as the limit is passed. With
    ``slice_size``, the text is cut out in slices of about that many
    characters (see :func:`_brackets`).
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _brackets(text, slice_size or len(text))
    brackets = brackets.translate(_CURLY_TO_SQUARE)
    if "[" * (limit + 1) in brackets:
        return True
    for _ in range(limit):
        peeled = brackets.replace("[]", "")
        if not peeled:
            return False
        if len(peeled) == len(brackets):
            return json_depth(text, limit) > limit
        brackets = peeled
    return True


def _brackets(text: str, size: int) -> str:
    """The brackets of ``text`` that are outside its strings.

    A slice at a time, each ending outside a string: from a point outside
    strings, an odd number of unescaped quotes means the slice ends inside
    one, and it is lengthened (doubling: linear in all). A backslash outside
    a string is not JSON; the parser stops there, before anything this scan
    could miscount after it.
    """
    parts = []
    start, length = 0, len(text)
    while start < length:
        step = size
        end = min(start + step, length)
        while end < length and _ends_in_string(text[start:end]):
            step *= 2
            end = min(start + step, length)
        piece = text[start:end]
        parts.append(_NOT_BRACKET.sub("", _JSON_STRING.sub("", piece)))
        start = end
    return "".join(parts)


def _ends_in_string(piece: str) -> bool:
    """Whether ``piece``, starting outside a string, ends inside one (or
    after a backslash, whose next character it escapes)."""
    unpaired = piece.replace("\\\\", "")
    if unpaired.endswith("\\"):
        return True
    return (unpaired.count('"') - unpaired.count('\\"')) % 2 == 1


def json_depth(text: str, stop_above: int) -> int:
    """Deepest nesting of ``[``/``{`` outside strings, counted up to
    ``stop_above + 1`` (one pass in Python, stopping as soon as it is past)."""
    depth = deepest = 0
    in_string = False
    skip_to = -1
    for match in _JSON_SPECIAL.finditer(text):
        pos = match.start()
        if pos < skip_to:
            continue  # the character after a backslash
        char = text[pos]
        if in_string:
            if char == "\\":
                skip_to = pos + 2
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


def count_form_fields(raw: bytes) -> int:
    """The fields of an urlencoded body, as ``parse_qsl`` will see them
    (empty pairs, as in ``a=1&&b=2``, are dropped)."""
    pairs = raw.split(b"&")
    return len(pairs) - pairs.count(b"")


def parse_urlencoded(raw: bytes, charset: str) -> MultiDict[str]:
    """An urlencoded body as aiohttp's ``request.post()`` reads it."""
    try:
        text = raw.decode(charset)
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=charset)
    except (ValueError, LookupError) as exc:
        raise bad_request(f"malformed form body: {exc}") from None
    return MultiDict(pairs)
