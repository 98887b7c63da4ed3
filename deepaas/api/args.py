"""Request -> plugin kwargs: per-field locations, uploads streamed to disk.

Each field is read from where it says (``metadata["location"]``): a header,
the query string, the form body or the JSON body; a field that names no
location is looked up in the query string, then the form body, then the JSON
body. A structured argument (``Dict``, ``Nested``, a list of them, a list
of lists) found in the query string or a form field is JSON text there,
parsed before loading (:mod:`deepaas.api.json_text`). The collected values
are loaded with a marshmallow Schema of the plugin's own fields, so
defaults, validators and custom fields behave as in DEEPaaS 2.x and a
failure is a 422 with marshmallow's messages.

The body itself is read by :class:`deepaas.api.body.BodyReader`, within the
request limits (size, form parts, part headers, JSON depth, pace); uploaded
files are streamed to temporary files and handed over as
:class:`UploadedFile`; :class:`ParsedArgs` removes them when the request
ends. The arguments of a JSON or urlencoded body over ``OFFLOAD_LOAD_SIZE``
are loaded in the executor (and the parsed body freed there), since their
values may be millions long. A compressed body of zero bytes is refused.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import marshmallow
from aiohttp import hdrs, web
from multidict import MultiDict

from deepaas.api.body import OFFLOAD_PARSE_SIZE, BodyReader, Part, arrived_json
from deepaas.api.errors import ValidationFailed
from deepaas.api.json_text import JSON_PART_HINT, from_form, from_texts
from deepaas.api.json_text import MISSING as _MISSING
from deepaas.api.limits import BodyLimits, held_in_memory
from deepaas.model.v2.fields import ArgSpec, build_schema, load_args
from deepaas.model.v2.wrapper import UploadedFile

__all__ = ["ArgParser", "BodyLimits", "ParsedArgs"]


class ArgParser:
    """Parses the arguments of one plugin method from requests."""

    def __init__(
        self,
        specs: Mapping[str, ArgSpec],
        schema_name: str,
        reserved: str | None = None,
    ) -> None:
        """``reserved``: a key prefix of deepaas's own arguments (the
        training route's ``deepaas_``): a key with it that is no argument is
        a 422, not ignored as other unknown keys are (DEEPaaS 2.x): a typo
        such as ``deepaas_gpu=2`` would have trained on other devices."""
        self.reserved = reserved
        self.specs = dict(specs)
        self.schema = build_schema(self.specs, schema_name)
        self.by_key = {spec.key: spec for spec in self.specs.values()}
        self.file_keys = {s.key for s in self.specs.values() if s.is_file}
        # Structured values (mappings, lists of them, lists of lists) read
        # from a query string or a form field: JSON text there.
        self.json_text_keys = {
            s.key
            for s in self.specs.values()
            if s.structured and not s.is_file and s.location in (None, "query", "form")
        }
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

    def parse_at_once(
        self, request: web.BaseRequest, limits: BodyLimits
    ) -> dict[str, Any] | None:
        """The arguments of a request without a body, or with a small JSON
        body that came whole (:func:`~deepaas.api.body.arrived_json`),
        parsed at once; None for any other: :meth:`parse` then.

        The usual prediction (query arguments, or a JSON body of a few
        hundred bytes) then costs no coroutine and no :class:`ParsedArgs`;
        it has no uploads to remove. What it answers is what :meth:`parse`
        would.
        """
        body_json = None
        if request.body_exists:
            if not self.wants_body:
                return None
            body_json = arrived_json(request, limits)
            if body_json is None:
                return None
        elif self.wants_body and hdrs.CONTENT_ENCODING in request.headers:
            return None
        data, not_files = self.collect(request, None, body_json)
        return self.load(data, not_files)

    def collect(
        self,
        request: web.BaseRequest,
        form: MultiDict[Any] | None,
        body_json: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """The values sent for each argument, by its key; and the file
        arguments sent as something else, with their 422 message."""
        data: dict[str, Any] = {}
        not_files: dict[str, list[str]] = {}
        query = request.query
        for spec in self.specs.values():
            value = self._lookup(spec, request, query, form, body_json)
            if value is _MISSING:
                if spec.location == "json" and spec.required:
                    where = _misplaced(spec.key, query, form)
                    if where is not None:  # else marshmallow's "Missing data"
                        not_files[spec.key] = [where]
                continue
            if spec.is_file and not _are_files(spec, value):
                not_files[spec.key] = [NOT_A_FILE]
            data[spec.key] = value
        if self.reserved is not None:
            for key in (*query, *(form or ()), *(body_json or ())):
                if key.startswith(self.reserved) and key not in self.by_key:
                    not_files[key] = [self._unknown_reserved(key)]
        return data, not_files

    def _unknown_reserved(self, key: str) -> str:
        own = sorted(k for k in self.by_key if k.startswith(self.reserved or ""))
        close = difflib.get_close_matches(key, own, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return (
            f"Unknown field: {hint}the keys starting with {self.reserved!r} are "
            f"deepaas's own: {', '.join(own) or 'none'}."
        )

    def load(
        self, data: dict[str, Any], not_files: dict[str, list[str]]
    ) -> dict[str, Any]:
        """``data`` loaded with the plugin's schema; a 422 for invalid ones."""
        try:
            kwargs = load_args(self.schema, data)
        except marshmallow.ValidationError as exc:
            raise ValidationFailed({**_as_dict(exc.messages), **not_files}) from None
        if not_files:
            raise ValidationFailed(not_files)
        return kwargs

    def _lookup(
        self,
        spec: ArgSpec,
        request: web.BaseRequest,
        query: Mapping[str, Any],
        form: Any,
        body_json: dict[str, Any] | None,
    ) -> Any:
        location = spec.location
        key = spec.key
        if location == "headers":
            if spec is self.accept_from_header:
                return _negotiate_accept(spec, request)
            return request.headers.get(key, _MISSING)
        if location in (None, "query") and key in query:
            value = _from_multidict(spec, query)
            if key in self.json_text_keys:
                return from_texts(spec, value)
            return value
        if location in (None, "form") and form is not None and key in form:
            value = _from_multidict(spec, form)
            if key in self.json_text_keys:
                return from_texts(spec, value)
            return value
        if location in (None, "json") and body_json is not None and key in body_json:
            return body_json[key]
        if (
            location == "json"
            and form is not None
            and key in form
            and request.content_type == "multipart/form-data"
        ):
            # Sent beside files: a multipart part holding the value as JSON
            # text (as OpenAPI 3 clients send an object in a multipart body).
            # An urlencoded field of that name is ignored, as in DEEPaaS 2.x.
            return from_form(key, form.getone(key), JSON_PART_HINT)
        return _MISSING


class ParsedArgs:
    """``async with parser.parse(request, ...) as kwargs``: uploads removed after.

    ``files`` lists the uploads' temporary files; a caller that takes them
    over (a training job) clears it before the block ends.
    """

    def __init__(
        self, parser: ArgParser, request: web.Request, tmp_dir: str, limits: BodyLimits
    ) -> None:
        self.parser = parser
        self.request = request
        self.tmp_dir = tmp_dir
        self.limits = limits
        self._body: BodyReader | None = None  # made for a request with a body

    @property
    def body(self) -> BodyReader:
        if self._body is None:
            self._body = BodyReader(self.request, self.tmp_dir, self.limits)
        return self._body

    @property
    def files(self) -> list[str]:
        return [] if self._body is None else self._body.files

    @property
    def big(self) -> bool:
        """The arguments came from a big JSON or urlencoded body (loaded off
        the loop, and sent to a worker with ``protocol.pack_tree``)."""
        return self._body is not None and self._body.size > OFFLOAD_LOAD_SIZE

    async def __aenter__(self) -> dict[str, Any]:
        try:
            return await self._parse()
        except BaseException:
            if self._body is not None:
                await self._body.remove_files()
            raise

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._body is not None and self._body.files:
            await self._body.remove_files()

    def cleanup(self) -> None:
        """Remove the uploads now, without the executor."""
        if self._body is not None:
            self._body.remove_files_now()

    # -- reading the request ------------------------------------------------

    async def _parse(self) -> dict[str, Any]:
        parser = self.parser
        request = self.request
        if request.body_exists:  # one declared over its limit: not read at all
            error = self.limits.declared_over(
                request, held_in_memory(request.content_type)
            )
            if error is not None:
                raise error
        form: MultiDict[Any] | None = None
        body_json: dict[str, Any] | None = None
        if parser.wants_body and request.body_exists:
            form, body_json = await self.body.read(self._route)
        elif parser.wants_body and hdrs.CONTENT_ENCODING in request.headers:
            self.body.check_empty()
        data, not_files = parser.collect(request, form, body_json)
        if not self.big:
            return parser.load(data, not_files)
        # A big body's values may be big too (millions of strings in a list
        # field): loading and validating them takes seconds of Python, which
        # must not run on the loop. The body, not needed any more, is dropped
        # in the worker too: freeing millions of objects also takes a while.
        held = [data, form, body_json]
        data, form, body_json = {}, None, None
        try:
            kwargs = await self.body.offload(_load_and_drop, parser.schema, held)
        except marshmallow.ValidationError as exc:
            raise ValidationFailed({**_as_dict(exc.messages), **not_files}) from None
        if not_files:
            raise ValidationFailed(not_files)
        return kwargs

    def _route(self, name: str, form: Any) -> Part:
        """What to do with a multipart part named ``name``.

        Parts for unknown fields are read to the void. Only the first value
        of a single-valued field is used (as the lookup takes the first), so
        later ones are not even written to disk.
        """
        spec = self.parser.by_key.get(name)
        if spec is None or (not spec.is_list and name in form):
            return Part.SKIP
        return Part.FILE if spec.is_file else Part.FIELD


#: Arguments from a JSON or urlencoded body larger than this are loaded
#: (converted and validated) in the default executor, as the body was parsed.
OFFLOAD_LOAD_SIZE = OFFLOAD_PARSE_SIZE


def _load_and_drop(schema: marshmallow.Schema, held: list[Any]) -> dict[str, Any]:
    """``load_args`` of ``held[0]`` (the collected values); then ``held``
    (those, the form and the JSON body: their last references) is cleared,
    so that what the arguments do not keep is freed in this worker thread."""
    try:
        return load_args(schema, held[0])
    finally:
        held.clear()


NOT_A_FILE = "Not a file: send it as a file part of a multipart/form-data body."


def _as_dict(messages: Any) -> dict[str, Any]:
    return messages if isinstance(messages, dict) else {"_schema": messages}


def _from_multidict(spec: ArgSpec, values: Any) -> Any:
    if spec.is_list:
        found = values.getall(spec.key)
        if spec.is_file:  # a list of files: empty inputs (see below) left out
            found = [value for value in found if value != ""]
            return found or _MISSING
        return found
    value = values.get(spec.key)
    if spec.is_file and value == "":
        return _MISSING  # Swagger UI sends an empty part for an empty file input
    return value


def _are_files(spec: ArgSpec, value: Any) -> bool:
    """Whether ``value`` is what a file argument takes: an upload, or for a
    list of files, a list of uploads."""
    if spec.is_list:
        return isinstance(value, list) and all(
            isinstance(item, UploadedFile) for item in value
        )
    return isinstance(value, UploadedFile)


def _negotiate_accept(spec: ArgSpec, request: web.BaseRequest) -> Any:
    """Pick from the Accept header the best type the model can produce.

    Browsers and HTTP libraries send lists such as ``text/html, */*;q=0.8``;
    DEEPaaS 2.x rejected those with a 422. A header naming nothing the
    model produces is passed on as is, so the 422 says what is allowed.
    """
    # Several Accept lines are one list (RFC 9110, 5.3).
    header = ", ".join(request.headers.getall("Accept", ()))
    if not header:
        return _MISSING
    choices = [str(c) for c in spec.choices or [] if str(c) != "*/*"]
    ranges = _parse_accept(header)
    if not ranges:  # only empty elements (RFC 9110, 5.6.1: ignored)
        return _MISSING
    default = str(spec.default)
    # Each choice's quality is that of the most specific range matching
    # it (RFC 9110, 12.5.1: "image/png;q=0, */*" is anything but PNG).
    # Among equals: a type named, then a family, then the wildcard (the
    # plugin's default first), in the header's order.
    best: tuple[float, int, int] | None = None
    chosen = ""
    for position, choice in enumerate(choices):
        family = choice.split("/")[0] + "/*"
        for rank, media_range in enumerate((choice, family, "*/*")):
            if media_range in ranges:
                quality, index = ranges[media_range]
                if rank == 2:  # via the wildcard: the default first
                    index = -1 if choice == default else position
                key = (-quality, rank, index)
                if quality > 0 and (best is None or key < best):
                    best, chosen = key, choice
                break
    if best is None:
        return header  # nothing it produces: the 422 says what is
    if best[1] == 2 and all(q > 0 for q, _ in ranges.values()):
        return "*/*"  # the plugin gets its own choice for it, as always
    return chosen


def _parse_accept(header: str) -> dict[str, tuple[float, int]]:
    """Media ranges of an Accept header: ``{range: (quality, position)}``
    (the first occurrence of a range counts; ``q=0`` refuses it)."""
    ranges: dict[str, tuple[float, int]] = {}
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
        ranges.setdefault(media_type.lower(), (quality, index))
    return ranges


def _misplaced(key: str, query: Mapping[str, Any], form: Any) -> str | None:
    """The 422 message for a required JSON-body argument ``key`` sent in the
    query or an urlencoded form (not read there); None if not sent at all."""
    if key in query:
        sent = "in the query string"
    elif form is not None and key in form:
        sent = "as a form field"
    else:
        return None
    return (
        f"Missing data for required field: sent {sent}, but it is read from a "
        "JSON body (Content-Type: application/json), or a multipart part of "
        "JSON text beside files."
    )
