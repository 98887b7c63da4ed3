"""What travels: results of calls, and the translation of answers and
aiohttp failures into values and the client's exceptions."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from deepaas.client.errors import ClientError, ConnectionFailed, Timeout

JSON = Any  #: a parsed JSON value (dict, list, str, int, float, bool, None)


@dataclass(frozen=True)
class RawResult:
    """A prediction that is not JSON (the model returned bytes, a file, text).

    Attributes:
        content: the answer's bytes, whole.
        content_type: its media type without parameters, e.g. ``image/png``.
        charset: the ``charset`` parameter of its Content-Type, if any.
        filename: the name in its ``Content-Disposition``, if any (a file the
            model returned).
    """

    content: bytes
    content_type: str
    charset: str | None = None
    filename: str | None = None

    @property
    def text(self) -> str:
        """The content decoded with its charset (UTF-8 when none is given;
        undecodable bytes replaced)."""
        return self.content.decode(self.charset or "utf-8", errors="replace")

    def save(self, path: str) -> None:
        """Write the content to ``path``."""
        with open(path, "wb") as out:
            out.write(self.content)


@dataclass(frozen=True)
class LogChunk:
    """A piece of a training's log.

    Attributes:
        text: the output (stdout and stderr) from the offset asked for.
        offset: the byte offset to ask for next (a character cut in two at
            the end is left for the next call).
    """

    text: str
    offset: int


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    charset: str | None
    filename: str | None
    headers: CIMultiDictProxy[str]
    body: bytes


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def parse_json(answer: Answer, method: str, path: str) -> JSON:
    if not is_json(answer.content_type):
        raise ClientError(
            f"{method} {path} answered {answer.content_type or 'no content type'}, "
            "not JSON: is the URL a DEEPaaS server (and its base path right)?"
        )
    if not answer.body:
        return None
    try:
        return json.loads(answer.body)
    except ValueError as exc:
        raise ClientError(f"{method} {path} answered invalid JSON: {exc}") from exc


def error_body(resp: aiohttp.ClientResponse, body: bytes) -> Any:
    text = body.decode(resp.charset or "utf-8", errors="replace")
    if is_json(resp.content_type):
        with contextlib.suppress(ValueError):
            return json.loads(text)
    return text


def failure(
    exc: BaseException, method: str, url: str, timeout: aiohttp.ClientTimeout
) -> ClientError:
    """The client's exception for an aiohttp failure."""
    if isinstance(exc, asyncio.TimeoutError):
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            limit = f"could not connect within {timeout.sock_connect} s"
        elif timeout.total is not None:
            limit = f"no complete answer within {timeout.total} s"
        else:
            limit = "timed out"
        return Timeout(f"{method} {url}: {limit}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectionFailed(f"cannot connect to {url}: {exc}")
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        return ConnectionFailed(
            f"{method} {url}: the connection broke before the answer was "
            f"complete ({type(exc).__name__}: {exc})"
        )
    return ClientError(f"{method} {url}: {type(exc).__name__}: {exc}")


def log_chunk(data: bytes, end: int) -> LogChunk:
    """The log bytes ``data`` that end at byte offset ``end``, as text; a
    UTF-8 character cut in two at the end is left for the next read (the
    returned offset is where it starts)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = decoder.decode(data)
    return LogChunk(text, end - len(decoder.getstate()[0]))
