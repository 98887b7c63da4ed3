"""Request bodies: arguments as form fields, query pairs or JSON; files as
multipart parts streamed from disk (never read whole into memory)."""

from __future__ import annotations

import asyncio
import io
import json
import mimetypes
import os
import stat
from collections.abc import Mapping
from typing import IO, Any

import aiohttp
from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

#: What one file can be: a path, the bytes themselves, or a binary file
#: object (read from its current position, never closed by the client).
FileContent = str | os.PathLike[str] | bytes | IO[bytes]
#: One file, optionally with the name the server sees and a content type:
#: ``content``, ``(filename, content)`` or ``(filename, content, type)``.
FileSpec = FileContent | tuple[str, FileContent] | tuple[str, FileContent, str]
#: ``{argument name: one file, or a list of files}``.
Files = Mapping[str, FileSpec | list[FileSpec]]

CHUNK = 1 << 16


def pairs(args: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """``args`` as (name, text) pairs for a query string or a form.

    Booleans are ``true``/``false``; numbers as Python writes them; a list
    or tuple repeats its name once per item (what a ``fields.List``
    reads); ``None`` leaves the argument out (the model's default applies);
    numpy arrays and scalars are converted with ``tolist()``. A dict cannot
    be written this way: ``TypeError`` (send it with ``json=``).
    """
    out: list[tuple[str, str]] = []
    for name, value in (args or {}).items():
        if hasattr(value, "tolist"):  # numpy arrays and scalars
            value = value.tolist()
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if item is None:
                continue
            out.append((name, _text(name, item)))
    return out


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if hasattr(value, "tolist"):
        return _text(name, value.tolist())
    kind = type(value).__name__
    hint = "files=" if isinstance(value, (bytes, bytearray)) else "json="
    raise TypeError(
        f"argument {name!r}: a {kind} cannot be sent as a form field or in the "
        f"query string; send it with {hint}"
    )


def json_body(value: Mapping[str, Any]) -> bytes:
    """``value`` as strict JSON (numpy arrays and scalars become lists and
    numbers; NaN and infinities are a ``ValueError``, as the server would
    refuse them)."""
    if not isinstance(value, Mapping):
        raise TypeError("json= must be a mapping (the server reads a JSON object)")
    return json.dumps(value, allow_nan=False, default=_jsonable).encode()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def form(
    args: Mapping[str, Any] | None, files: Files | None, opened: list[IO[bytes]]
) -> aiohttp.FormData | None:
    """The form body: urlencoded, or multipart when there are files.

    Files given as paths are opened here and appended to ``opened``: the
    caller closes them when the request is over.
    """
    fields = pairs(args)
    if not fields and not files:
        return None
    data = aiohttp.FormData()
    for name, text in fields:
        data.add_field(name, text)
    for name, spec in (files or {}).items():
        for one in spec if isinstance(spec, list) else [spec]:
            _add_file(data, name, one, opened)
    return data


def _add_file(
    data: aiohttp.FormData, name: str, spec: Any, opened: list[IO[bytes]]
) -> None:
    filename: str | None = None
    content_type: str | None = None
    content = spec
    if isinstance(spec, tuple):
        if len(spec) not in (2, 3):
            raise TypeError(
                f"file {name!r}: a tuple is (filename, content) or "
                "(filename, content, content_type)"
            )
        filename, content = spec[0], spec[1]
        content_type = spec[2] if len(spec) == 3 else None
    if isinstance(content, (str, os.PathLike)):
        path = os.fspath(content)
        fileobj: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed by the caller)
        opened.append(fileobj)
        filename = filename or os.path.basename(path)
    elif isinstance(content, (bytes, bytearray, memoryview)):
        fileobj = io.BytesIO(bytes(content))
    elif hasattr(content, "read"):
        if isinstance(content, io.TextIOBase):
            raise TypeError(f"file {name!r}: open it in binary mode ('rb')")
        fileobj = content
        own = getattr(content, "name", None)
        if filename is None and isinstance(own, str):
            filename = os.path.basename(own)
    else:
        raise TypeError(
            f"file {name!r}: expected a path, bytes or a binary file object, "
            f"not {type(content).__name__}"
        )
    filename = filename or name
    content_type = (
        content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    )
    part = FilePart(fileobj, content_type=content_type, filename=filename)
    data.add_field(name, part, filename=filename, content_type=content_type)


class FilePart(payload.Payload):
    """A binary file sent from its current position, read in the default
    executor in 64 KiB pieces. It is never closed here: aiohttp's own file
    payloads close the file, which would surprise a caller who passed it."""

    _autoclose = True  # nothing of ours to close

    def __init__(self, value: IO[bytes], **kwargs: Any) -> None:
        super().__init__(value, **kwargs)
        self._size = _remaining(value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file part is streamed, not decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        loop = asyncio.get_running_loop()
        left = content_length if content_length is not None else self._size
        while left is None or left > 0:
            size = CHUNK if left is None else min(CHUNK, left)
            chunk = await loop.run_in_executor(None, self._value.read, size)
            if not chunk:
                break
            if not isinstance(chunk, (bytes, bytearray)):
                raise TypeError("a file to upload must be opened in binary mode")
            await writer.write(chunk)
            if left is not None:
                left -= len(chunk)
        if left:  # announced in Content-Length: the server would wait for it
            raise OSError(f"{self._filename}: the file shrank while it was sent")


def _remaining(fileobj: IO[bytes]) -> int | None:
    """Bytes from the current position to the end, or None if unknown (a
    pipe): the body is then sent chunked."""
    try:
        position = fileobj.tell()
        try:
            st = os.fstat(fileobj.fileno())
            if stat.S_ISREG(st.st_mode):
                return max(0, st.st_size - position)
        except (OSError, AttributeError, ValueError):
            pass
        end = fileobj.seek(0, io.SEEK_END)
        fileobj.seek(position)
        return max(0, end - position)
    except (OSError, AttributeError, ValueError):
        return None


def no_files_with_json(
    json_value: Any, args: Mapping[str, Any] | None, files: Files | None
) -> None:
    """A request has one body: JSON, or a (multipart) form."""
    if json_value is not None and (args or files):
        raise ValueError(
            "json= cannot be combined with args or files (a request has one "
            "body): put the arguments in json=, or send files with the other "
            "arguments as form fields (args=)"
        )
