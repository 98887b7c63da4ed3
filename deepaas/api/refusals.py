"""What to tell a client whose request aiohttp's HTTP parser refused.

aiohttp's parser refuses a bad request line, method or URL, a line over
``max_line_size``/``max_field_size``, too many headers, a chunked body it
cannot follow... before any route or the front door sees the request.
:func:`explain` turns what it raised into the message of the JSON answer
``{"message": ...}`` that :mod:`deepaas.api.connections` sends instead of
aiohttp's plain text: what was wrong, and what to change.
"""

from __future__ import annotations

from aiohttp import http_exceptions as hx

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
