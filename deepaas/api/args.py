"""Request -> plugin kwargs: per-field locations, uploads streamed to disk.

Each field is read from where it says (``metadata["location"]``): a header,
the query string, the form body or the JSON body; a field that names no
location is looked up in the query string, then the form body, then the JSON
body. The collected values are loaded with a marshmallow Schema of the
plugin's own fields, so defaults, validators and custom fields behave as in
DEEPaaS 2.x and a failure is a 422 with marshmallow's messages.

Uploaded files are written to a temporary file chunk by chunk (never held in
memory) and handed over as :class:`UploadedFile`; :class:`ParsedArgs` removes
them when the request ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Any

import marshmallow
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict, MultiDictProxy

from deepaas.api.errors import ValidationFailed
from deepaas.exceptions import DeepaasError
from deepaas.model.v2.fields import ArgSpec, build_schema, load_args
from deepaas.model.v2.wrapper import UploadedFile

CHUNK_SIZE = 1 << 18
FORM_TEXT_LIMIT = 16 << 20  # a non-file form field larger than this is refused
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9_-]{1,16}$")


@dataclasses.dataclass(frozen=True)
class BodyLimits:
    """What a request body may be: its size, its form parts, its pace."""

    max_size: int = 0  # bytes, 0: no limit (--client-max-size)
    max_parts: int = 1000  # parts of a multipart or urlencoded form
    client_timeout: float = 60.0  # seconds between two pieces of a body


def _too_large(limit: int) -> DeepaasError:
    return DeepaasError(413, f"request body is larger than the limit of {limit} bytes")


def _bad_request(message: str) -> DeepaasError:
    return DeepaasError(400, message)


class ArgParser:
    """Parses the arguments of one plugin method from requests."""

    def __init__(self, specs: Mapping[str, ArgSpec], schema_name: str) -> None:
        self.specs = dict(specs)
        self.schema = build_schema(self.specs, schema_name)
        self.by_key = {spec.key: spec for spec in self.specs.values()}
        self.file_keys = {s.key for s in self.specs.values() if s.is_file}
        self.wants_body = any(
            s.location in (None, "form", "json") for s in self.specs.values()
        )
        accept = self.specs.get("accept")
        self.accept_from_header = (
            accept if (accept is not None and accept.location == "headers") else None
        )

    def parse(
        self, request: web.Request, tmp_dir: str, limits: BodyLimits
    ) -> ParsedArgs:
        return ParsedArgs(self, request, tmp_dir, limits)


class ParsedArgs:
    """``async with parser.parse(request, ...) as kwargs``: uploads removed after."""

    def __init__(
        self, parser: ArgParser, request: web.Request, tmp_dir: str, limits: BodyLimits
    ) -> None:
        self.parser = parser
        self.request = request
        self.tmp_dir = tmp_dir
        self.limits = limits
        self.max_size = limits.max_size
        self.files: list[str] = []

    async def __aenter__(self) -> dict[str, Any]:
        try:
            return await self._parse()
        except BaseException:
            self.cleanup()
            raise

    async def __aexit__(self, *exc_info: Any) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        for path in self.files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.files.clear()

    # -- reading the request ------------------------------------------------

    async def _parse(self) -> dict[str, Any]:
        parser = self.parser
        request = self.request
        if self.max_size and (request.content_length or 0) > self.max_size:
            raise _too_large(self.max_size)
        form: MultiDictProxy[Any] | MultiDict[Any] | None = None
        body_json: dict[str, Any] | None = None
        if parser.wants_body and request.body_exists:
            content_type = request.content_type
            if content_type == "multipart/form-data":
                form = await self._read_multipart()
            elif content_type == "application/x-www-form-urlencoded":
                form = await self._read_urlencoded()
            elif content_type == "application/json" or content_type.endswith("+json"):
                body_json = await self._read_json()
        data: dict[str, Any] = {}
        not_files: dict[str, list[str]] = {}
        query = request.query
        for spec in parser.specs.values():
            value = self._lookup(spec, query, form, body_json)
            if value is _MISSING:
                continue
            if spec.is_file and not isinstance(value, UploadedFile):
                not_files[spec.key] = [NOT_A_FILE]
            data[spec.key] = value
        try:
            kwargs = load_args(parser.schema, data)
        except marshmallow.ValidationError as exc:
            raise ValidationFailed({**_as_dict(exc.messages), **not_files}) from None
        if not_files:
            raise ValidationFailed(not_files)
        return kwargs

    def _lookup(
        self,
        spec: ArgSpec,
        query: Mapping[str, Any],
        form: Any,
        body_json: dict[str, Any] | None,
    ) -> Any:
        location = spec.location
        key = spec.key
        if location == "headers":
            if spec is self.parser.accept_from_header:
                return self._negotiate_accept(spec)
            return self.request.headers.get(key, _MISSING)
        if location in (None, "query") and key in query:
            return _from_multidict(spec, query)
        if location in (None, "form") and form is not None and key in form:
            return _from_multidict(spec, form)
        if location in (None, "json") and body_json is not None and key in body_json:
            return body_json[key]
        return _MISSING

    def _negotiate_accept(self, spec: ArgSpec) -> Any:
        """Pick from the Accept header the best type the model can produce.

        Browsers and HTTP libraries send lists such as ``text/html, */*;q=0.8``;
        DEEPaaS 2.x rejected those with a 422. A header naming nothing the
        model produces is passed on as is, so the 422 says what is allowed.
        """
        header = self.request.headers.get("Accept")
        if not header:
            return _MISSING
        choices = [str(c) for c in spec.choices or []]
        ranked = _parse_accept(header)
        for media_type in ranked:
            if media_type in choices:
                return media_type
            if media_type.endswith("/*") and media_type != "*/*":
                family = media_type[:-1]
                for choice in choices:
                    if choice.startswith(family):
                        return choice
        if "*/*" in ranked:
            return "*/*"  # as DEEPaaS 2.x passed it; predict's JSON path
        return header

    async def _read_json(self) -> dict[str, Any]:
        raw = await self._read_body()
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad_request(f"invalid JSON body: {exc}") from None
        if not isinstance(value, dict):
            raise _bad_request(
                f"the JSON body must be an object, got {type(value).__name__}"
            )
        return value

    async def _read_urlencoded(self) -> MultiDictProxy[Any]:
        await self._read_body()  # enforces the size limit with a clear 413
        try:
            return await self.request.post()
        except ValueError as exc:
            raise _bad_request(f"malformed form body: {exc}") from None

    async def _read_body(self) -> bytes:
        try:
            return await self.request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(self.max_size) from None

    async def _read_multipart(self) -> MultiDict[Any]:
        form: MultiDict[Any] = MultiDict()
        received = 0
        try:
            reader = await self.request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise _bad_request("nested multipart bodies are not supported")
                name = part.name
                if name is None or name not in self.parser.by_key:
                    received += await self._discard(part, received)
                    continue
                if name in self.parser.file_keys or part.filename is not None:
                    uploaded, size = await self._save_upload(part, name, received)
                    received += size
                    if size == 0 and not part.filename:
                        # An empty file input (browsers, Swagger UI): not sent.
                        self._discard_upload(uploaded)
                        continue
                    form.add(name, uploaded)
                else:
                    text, size = await self._read_text(part, received)
                    received += size
                    form.add(name, text)
        except (web.HTTPException, DeepaasError):
            raise
        except (
            ValueError,
            AssertionError,
            LookupError,
            TypeError,
            HttpProcessingError,
        ) as exc:
            raise _bad_request(f"malformed multipart body: {exc}") from None
        return form

    def _check_size(self, received: int) -> None:
        if self.max_size and received > self.max_size:
            raise _too_large(self.max_size)

    async def _discard(self, part: BodyPartReader, received: int) -> int:
        size = 0
        while chunk := await part.read_chunk(CHUNK_SIZE):
            size += len(chunk)
            self._check_size(received + size)
        return size

    async def _read_text(self, part: BodyPartReader, received: int) -> tuple[str, int]:
        chunks = []
        size = 0
        while chunk := await part.read_chunk(CHUNK_SIZE):
            size += len(chunk)
            self._check_size(received + size)
            if size > FORM_TEXT_LIMIT:
                raise _too_large(FORM_TEXT_LIMIT)
            chunks.append(chunk)
        data = part.decode(b"".join(chunks))
        charset = part.get_charset(default="utf-8")
        try:
            return data.decode(charset), size
        except (UnicodeDecodeError, LookupError) as exc:
            raise _bad_request(
                f"form field {part.name!r} is not valid text: {exc}"
            ) from None

    def _discard_upload(self, uploaded: UploadedFile) -> None:
        self.files.remove(uploaded.filename)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(uploaded.filename)

    async def _save_upload(
        self, part: BodyPartReader, name: str, received: int
    ) -> tuple[UploadedFile, int]:
        original = part.filename
        suffix = os.path.splitext(original or "")[1]
        fd, path = tempfile.mkstemp(
            prefix="upload-",
            suffix=suffix if _SAFE_SUFFIX.match(suffix) else "",
            dir=self.tmp_dir,
        )
        self.files.append(path)
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := await part.read_chunk(CHUNK_SIZE):
                size += len(chunk)
                self._check_size(received + size)
                out.write(chunk)
        content_type = part.headers.get("Content-Type", "application/octet-stream")
        return (
            UploadedFile(
                name=name,
                filename=path,
                content_type=content_type,
                original_filename=original,
            ),
            size,
        )


NOT_A_FILE = "Not a file: send it as a file part of a multipart/form-data body."


def _as_dict(messages: Any) -> dict[str, Any]:
    return messages if isinstance(messages, dict) else {"_schema": messages}


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _from_multidict(spec: ArgSpec, values: Any) -> Any:
    if spec.is_list:
        return values.getall(spec.key)
    value = values.get(spec.key)
    if spec.is_file and value == "":
        return _MISSING  # Swagger UI sends an empty part for an empty file input
    return value


def _parse_accept(header: str) -> list[str]:
    """Media ranges of an Accept header, best first (stable for equal q)."""
    ranked = []
    for index, item in enumerate(header.split(",")):
        media_type, *params = (p.strip() for p in item.split(";"))
        if not media_type:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, media_type.lower()))
    return [media_type for _, _, media_type in sorted(ranked)]
