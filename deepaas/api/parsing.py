"""Request bodies held in memory, parsed: JSON objects and urlencoded forms.

Every JSON body of every route is parsed by :func:`parse_json`: an object
only, without ``NaN``/``Infinity``, and no deeper than ``MAX_JSON_DEPTH``
(checked before parsing, by :func:`json_too_deep`, in C-speed passes), with
numbers of at most ``MAX_NUMBER_DIGITS`` digits, within a float's range.
Urlencoded forms are counted (:func:`count_form_fields`) and parsed
(:func:`parse_urlencoded`) as aiohttp's ``request.post()`` would. These
are pure functions: they hold no state and touch no loop, so
:mod:`deepaas.api.body` may run them in the executor. What they refuse is
answered with the errors of :mod:`deepaas.api.limits`.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import urllib.parse
from typing import Any

import orjson
from multidict import MultiDict

from deepaas.api.limits import (
    MAX_JSON_DEPTH,
    MAX_NUMBER_DIGITS,
    bad_request,
    too_deep,
)
from deepaas.exceptions import DeepaasError

#: Big JSON bodies are decoded and scanned for their depth this many
#: characters at a time (one C call each), so that a worker thread doing it
#: lets go of the GIL, and the event loop runs, between two slices.
PARSE_SLICE = 256 << 10

# 19 digits may not fit in a signed 64-bit integer: see _parse_plain.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_JSON_SPACE_BYTES = re.compile(rb"[ \t\n\r]*")
#: A body that is no object and this short is parsed for a better message.
_SHORT = 4096
_JSON_SPECIAL = re.compile(r'[\[\]{}"\\]')
# A JSON string, escapes included; one left open runs to the end of the text
# (so that no match is tried again from inside it: linear time).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\[\s\S]?[^"\\]*)*(?:"|\Z)')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_CURLY_TO_SQUARE = str.maketrans("{}", "[]")


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
    if not cooperative:
        plain = _parse_plain(raw)
        if plain is not None:
            return plain
    encoding = json.detect_encoding(raw)
    if len(raw) > _SHORT and encoding in ("utf-8", "utf-8-sig"):
        # A big body that is no object is refused at a glance at its first
        # byte, before 50 MB are decoded (and their memory first touched).
        start = 3 if encoding == "utf-8-sig" else 0
        spaces = _JSON_SPACE_BYTES.match(raw, start)
        first_byte = raw[spaces.end() if spaces else start :][:1]
        if first_byte != b"{":
            raise bad_request(_not_an_object(None, first_byte.decode("latin-1")))
    try:
        text = _decode(raw, encoding, cooperative)
    except UnicodeDecodeError as exc:
        raise bad_request(f"invalid JSON body: {exc}") from None
    match = _JSON_SPACE.match(text)
    first = text[match.end() if match else 0 :][:1]
    if first != "{":
        raise bad_request(_not_an_object(text, first))
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
            value = json.loads(
                text,
                parse_int=_as_int,
                parse_float=_as_float,
                parse_constant=_no_constant,
            )
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


def _parse_plain(raw: bytes) -> dict[str, Any] | None:
    """``raw`` parsed by orjson when that gives what :func:`parse_json`
    would, else None (:func:`parse_json` then parses it, or says why not).

    orjson is 10 to 20 times faster on a small body (0.15 us against 3.5 us
    for ``{"x": 1}``) and takes only strict UTF-8 JSON: it refuses ``NaN``,
    ``Infinity``, a number out of a float's range, lone surrogates, other
    encodings and a BOM, all of which the Python path then answers in its
    own words. What it would take differently is left to the Python path
    beforehand: integers of 19 digits or more (orjson reads those past 64
    bits as floats; a run of digits inside a string is sent there too,
    which costs time, not correctness), and documents with more brackets
    than ``MAX_JSON_DEPTH`` (orjson's own depth limit is 1024).
    """
    if _LONG_DIGITS.search(raw) or raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_json_text(text: str) -> Any:
    """One JSON value (any kind) sent as text in a form field: a
    ``location="json"`` argument sent in a multipart form beside files.

    The rules of a JSON body apply (depth, numbers, no ``NaN``); what breaks
    them raises :class:`~deepaas.exceptions.DeepaasError` (400), which the
    caller turns into a 422 naming the field.
    """
    if json_too_deep(text, MAX_JSON_DEPTH):
        raise too_deep()
    try:
        return json.loads(
            text, parse_int=_as_int, parse_float=_as_float, parse_constant=_no_constant
        )
    except DeepaasError:
        raise
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"invalid JSON: {exc}") from None


def _decode(raw: bytes, encoding: str, sliced: bool) -> str:
    if not sliced or len(raw) <= PARSE_SLICE:
        return raw.decode(encoding, "surrogatepass")
    decoder = codecs.getincrementaldecoder(encoding)("surrogatepass")
    step = PARSE_SLICE
    parts = [decoder.decode(raw[i : i + step]) for i in range(0, len(raw), step)]
    parts.append(decoder.decode(b"", True))
    return "".join(parts)


def _not_an_object(text: str | None, first: str) -> str:
    """What to tell a client whose JSON body does not start an object.

    An array or a string is told from its first character (a 50 MB array
    costs a glance); anything else is parsed when short, so that a body
    that is not JSON at all (``text=hi``, sent with a JSON content type) is
    called invalid rather than named after its first letter ("got true").
    """
    kind = _kind_of(first)
    if first not in '["' and text is not None and len(text) <= _SHORT:
        try:
            json.loads(text, parse_constant=_no_constant)
        except DeepaasError:
            raise
        except ValueError as exc:
            return f"invalid JSON body: {exc}"
    elif first not in '["':
        return "invalid JSON body: not a JSON object ({...})"
    return (
        f"the JSON body must be an object ({{...}}), got {kind}: "
        "send the arguments as the members of an object"
    )


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


# They also refuse the numbers Python would answer for in its own words
# (int(): "Exceeds the limit (4300 digits) ... sys.set_int_max_str_digits()")
# or take silently as infinity (1e400): 400s that say what to send instead.
def _as_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_NUMBER_DIGITS:
        raise bad_request(
            f"the JSON body has an integer of {digits} digits, more than the "
            f"{MAX_NUMBER_DIGITS} allowed: send such a number as a string"
        )
    return int(text)


def _as_float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise bad_request(
            f"the JSON body has a number of {len(text)} characters, more than "
            f"the {MAX_NUMBER_DIGITS} allowed: send such a number as a string"
        )
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 24 else text[:24] + "..."
        raise bad_request(
            f"the JSON body has a number out of the range of a float ({shown}): "
            "send one between -1.7e308 and 1.7e308, or send it as a string"
        )
    return value


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
    """An urlencoded body as aiohttp's ``request.post()`` reads it.

    Raises a 400 for a body that is a JSON object or array: ``curl -d
    '{"x": 1}'`` sends JSON as a form, whose only field would be named
    ``{"x": 1}`` and match no argument, so the model would run on its
    defaults without a word.
    """
    if raw.lstrip()[:1] in (b"{", b"[") and is_json(raw):
        raise bad_request(
            "the body is JSON but was sent as a form "
            "(Content-Type: application/x-www-form-urlencoded, what curl -d "
            "and Python's urllib send by default): send it with "
            "'Content-Type: application/json'"
        )
    try:
        text = raw.decode(charset)
        # strict: a percent-encoded byte that is no text in the charset is
        # refused, not replaced by U+FFFD (which aiohttp's request.post()
        # does, as parse_qsl by default): the model never sees a value
        # other than the one sent (a multipart field or JSON is refused too)
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, encoding=charset, errors="strict"
        )
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"malformed form body: a value is not {charset} text once "
            f"percent-decoded ({exc.reason}): send "
            "UTF-8, percent-encoded"
        ) from None
    except (ValueError, LookupError) as exc:
        raise bad_request(f"malformed form body: {exc}") from None
    return MultiDict(pairs)


def is_json(raw: bytes) -> bool:
    """Whether ``raw`` is one JSON document (any value)."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True
