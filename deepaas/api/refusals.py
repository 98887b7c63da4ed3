"""What to tell a client whose request aiohttp's HTTP parser refused, or
whose request's head did not arrive in time.

aiohttp's parser refuses a bad request line, method or URL, a line over
``max_line_size``/``max_field_size``, too many headers, a chunked body it
cannot follow... before any route or the front door sees the request.
:func:`explain` turns what it raised into the message of the JSON answer
``{"message": ...}`` that :mod:`deepaas.api.connections` sends instead of
aiohttp's plain text: what was wrong, and what to change.
"""

from __future__ import annotations

import json

from aiohttp import http_exceptions as hx

from deepaas import tracing

# What to tell a client whose request aiohttp's parser refused: by a word of
# its description ({detail}, without the bytes it quotes), else by the class
# of what it raised (the nearest in its MRO; some are newer than aiohttp 3.9).
LONG_LINE = (
    "the request line (method, URL and version) is longer than {limit} bytes: "
    "shorten the URL; send long arguments in the request body, not the query"
)
LONG_HEADER = (
    "a request header is longer than {limit} bytes: send shorter headers "
    "(large values belong in the request body)"
)
BY_WORD = {
    "HTTPS": "this port speaks HTTP, not HTTPS: use an http:// URL",
    "chunk": "the chunked request body is not valid ({detail}): send each chunk "
    "as its size in hex, CRLF, its bytes, CRLF; end with 0 CRLF CRLF",
    "Too many headers": "the request has more than {headers} headers: send fewer",
}
BY_CLASS = {
    "BadHttpMethod": "the request method is not valid ({detail}): start the "
    "request with a method such as GET or POST, as in 'POST /path HTTP/1.1'",
    "InvalidURLError": "the URL is not valid ({detail}): percent-encode spaces, "
    "non-ASCII and control characters in its path and query (é as %C3%A9)",
    "BadStatusLine": "the request line is not valid ({detail}): send "
    "'METHOD /path HTTP/1.1'",
    "ContentEncodingError": "the request body is not valid data of its "
    "Content-Encoding (corrupt or cut short): send it uncompressed, or "
    "compressed as the header says",
    "PayloadEncodingError": "the request body cannot be read ({detail}): send "
    "it as its Content-Length or Transfer-Encoding header says",
    "HttpProcessingError": "the request is not valid HTTP/1.1 ({detail}): fix "
    "its request line and headers",
}


def explain(exc: BaseException, line_len: int, max_headers: int) -> str:
    """What was wrong with the request, and what to change.

    ``line_len``: the length of the request line seen so far, which tells a
    request line over the limit from a header over it (aiohttp says only
    "line too long"); ``max_headers``: the server's limit on headers.
    """
    raw = getattr(exc, "message", "") or str(exc)
    detail = " ".join(raw.split("\n\n", 1)[0].split()).rstrip(":")[:200]
    if isinstance(exc, hx.LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "the limit of"
        line = isinstance(limit, int) and line_len > limit
        return (LONG_LINE if line else LONG_HEADER).format(limit=limit)
    advice = next((v for k, v in BY_WORD.items() if k in detail), None)
    for cls in type(exc).__mro__:
        advice = advice or BY_CLASS.get(cls.__name__)
    advice = advice or BY_CLASS["HttpProcessingError"]
    return advice.format(detail=detail, headers=max_headers)


def request_target(head: bytes, start: int) -> str | None:
    """The path (no query) of the request line that begins at ``head[start:]``,
    as far as it came; None when it did not come that far."""
    words = head[start:].split(b"\n", 1)[0].split(b" ")
    if len(words) < 2:
        return None
    return words[1].split(b"?", 1)[0].decode("latin-1")


def late_head_answer(timeout: float, oip: bool) -> bytes:
    """The whole 408 response (head and JSON body, ``{"error": ...}`` for an
    OIP path) to a request whose head did not arrive within ``timeout``
    seconds: written by the connection's guard, before aiohttp has a request
    to answer, and followed by the connection's close."""
    text = (
        f"the request's line and headers did not arrive within {timeout:g} s "
        "(--client-timeout): send them at once"
    )
    body = json.dumps({"error" if oip else "message": text}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        f"{tracing.HEADER}: {tracing.new_id()}\r\n\r\n"
    )
    return head.encode() + body
