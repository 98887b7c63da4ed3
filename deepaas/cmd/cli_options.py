"""Plugin argument fields as ``deepaas-cli`` options.

One ``--<key>`` option per field: the metavar and converter come from the
field's type, the help from its description and default, the choices from a
``OneOf`` validator or ``enum``; lists take repeated options or a literal,
dicts a JSON or Python literal, files an existing path. Values stay text
where the API would get text, so the API's own schema validates them
(:func:`validate_args`); a file given is passed on as a temporary copy.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import mimetypes
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import Any

import marshmallow
from marshmallow import fields as ma_fields

from deepaas.cmd.cli_output import EXIT_USAGE, CliError, copy_stream
from deepaas.exceptions import DeepaasError
from deepaas.model.v2.fields import ArgSpec, build_schema, load_args
from deepaas.model.v2.wrapper import ModelWrapper, UploadedFile


class ListValue(list[Any]):
    """Several values given at once as a list literal (``--numbers "[1, 2]"``)."""


def _json_rules(text: str) -> Any:
    """``text`` parsed as the API parses JSON text (a form field's, a JSON
    body's rules: no ``NaN``/``Infinity``, numbers within a float's range
    and of at most ``MAX_NUMBER_DIGITS`` digits, bounded depth); its value.

    ``ValueError`` when it is no JSON at all; ``ArgumentTypeError`` (a
    usage error, exit status 2) with the API's message when it is JSON that
    breaks those rules: the API answers such a value with a 400/422.
    """
    # deepaas.api imports aiohttp: only when such an argument is given
    from deepaas.api.parsing import parse_json_text

    try:
        return parse_json_text(text)
    except DeepaasError as exc:
        if exc.message.startswith("invalid JSON: "):
            raise ValueError(text) from None
        # the API's words for a JSON text sent in a form (deepaas.api.json_text)
        reason = exc.message.replace("the JSON body", "this JSON text")
        raise argparse.ArgumentTypeError(f"not valid JSON: {reason}") from None


def _literal(text: str) -> Any:
    """A JSON value, else a Python literal; ``ValueError`` when neither.

    The JSON is held to the API's rules (:func:`_json_rules`), and so are
    the numbers of a Python literal (``{'a': 1e999}`` is refused as the
    JSON ``1e999`` is): ``ArgumentTypeError`` when they break them."""
    try:
        return _json_rules(text)
    except ValueError:
        pass
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(text) from None
    for node in ast.walk(ast.parse(text.strip(), mode="eval")):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            number = ast.get_source_segment(text.strip(), node)
            if number is not None:
                with contextlib.suppress(ValueError):  # 0x10, 1_000: not JSON
                    _json_rules(number)
    return value


def _mapping(text: str) -> Any:
    try:
        value = _literal(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a JSON object or Python dict literal: {text!r} "
            "(example: '{\"key\": 1}')"
        ) from None
    return value


def _existing_file(text: str) -> str:
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"not a regular file: {text!r}")
    return text


def _list_item(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """One occurrence of a repeated option: a value, or a list literal."""

    def parse(text: str) -> Any:
        if text.lstrip().startswith("["):
            try:
                value = _literal(text)
            except ValueError:
                value = None
            if isinstance(value, list):
                return ListValue(convert(v) if isinstance(v, str) else v for v in value)
        return convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _text(text: str) -> str:
    return text


_text.__name__ = "text"


def _kind(field: ma_fields.Field) -> tuple[str, Callable[[str], Any]]:
    """A word for the help text and how a command-line string becomes a value.

    Scalars stay strings: marshmallow converts them exactly as it converts a
    query string in the API (``"3"`` -> 3, ``"yes"`` -> True).
    """
    if isinstance(field, ma_fields.Boolean):
        return "BOOL", _text
    if isinstance(field, ma_fields.Integer):
        return "INT", _text
    if isinstance(field, ma_fields.Number):
        return "FLOAT", _text
    if isinstance(field, (ma_fields.Mapping, ma_fields.Nested)):
        return "JSON", _mapping
    if isinstance(field, (ma_fields.List, ma_fields.Tuple)):
        return "LIST", _text  # a delimited list ("1,2") given as one string
    return "TEXT", _text


def shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _help(spec: ArgSpec, extra: str, choices_shown: bool) -> str:
    details = [extra] if extra else []
    choices = spec.choices
    if choices and not choices_shown:
        details.append("one of: " + ", ".join(shown(c) for c in choices))
    default = spec.default
    if spec.required:
        details.append("required")
    elif default is not marshmallow.missing and default is not None:
        details.append(f"default: {shown(default)}")
    text = (spec.description or "").strip()
    if details:
        text = f"{text} ({'; '.join(details)})" if text else "; ".join(details)
    return text.replace("%", "%%")


def add_field(parser: argparse.ArgumentParser, spec: ArgSpec, dest: str) -> None:
    field = spec.field
    extra = ""
    convert: Callable[[str], Any]
    if spec.is_file:
        metavar, convert = "PATH", _existing_file
        extra = "a file path"
    elif spec.is_list:
        inner = getattr(field, "inner", None)
        inner_kind = _kind(inner) if isinstance(inner, ma_fields.Field) else None
        metavar, convert = inner_kind or ("TEXT", _text)
    else:
        metavar, convert = _kind(field)
    if spec.is_list:
        extra = "repeat the option, or give a list literal"
        if spec.is_file:
            extra = "file paths: repeat the option"
    choices = spec.choices
    choices_shown = bool(choices) and all(
        isinstance(c, (str, int, float)) for c in choices or []
    )
    if choices_shown:
        metavar = "{" + ",".join(str(c) for c in choices or []) + "}"
    elif metavar == "BOOL":
        metavar = "{true,false}"
    parser.add_argument(
        f"--{spec.key}",
        dest=dest,
        metavar=metavar,
        type=_list_item(convert) if spec.is_list else convert,
        action="append" if spec.is_list else "store",
        default=None,
        required=spec.required,
        help=_help(spec, extra, choices_shown),
    )


# -- the values given -------------------------------------------------------


def copy_upload(
    spec: ArgSpec, path: str, tmp_dir: str, stop: threading.Event | None = None
) -> UploadedFile:
    """A temporary copy of ``path`` in ``tmp_dir``, as the file argument
    ``spec`` (the plugin may move or delete it), named and typed after it.

    Raises OSError when ``path`` cannot be read or the copy written, and
    :class:`~deepaas.cmd.cli_output.Stopped` when ``stop`` is set before
    the copy's next 1 MiB chunk (batch mode's interrupted run: a copy on a
    thread cannot be interrupted otherwise); no partial copy is left.
    """
    suffix = os.path.splitext(path)[1]
    fd, copy = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            copy_stream(src, out, stop)
    except BaseException:  # Stopped, Ctrl-C in the main thread too
        with contextlib.suppress(OSError):
            os.unlink(copy)
        raise
    return UploadedFile(
        name=spec.key,
        filename=copy,
        content_type=mimetypes.guess_type(path)[0] or "application/octet-stream",
        original_filename=os.path.basename(path),
    )


def _upload(spec: ArgSpec, path: str, tmp_dir: str) -> UploadedFile:
    """:func:`copy_upload`, a usage error when ``path`` cannot be read."""
    try:
        return copy_upload(spec, path, tmp_dir)
    except OSError as exc:
        raise CliError(f"cannot read {path!r}: {exc.strerror}", EXIT_USAGE) from None


def collect_args(
    namespace: argparse.Namespace, specs: Mapping[str, ArgSpec], tmp_dir: str
) -> dict[str, Any]:
    """The wire-keyed data the API would have read from a request."""
    data: dict[str, Any] = {}
    for dest, spec in specs.items():
        value: Any = getattr(namespace, dest, None)
        if value is None:
            continue
        if spec.is_list:
            flat: list[Any] = []
            for item in value:
                flat.extend(item if isinstance(item, ListValue) else [item])
            value = flat
        if spec.is_file:
            if spec.is_list:
                value = [_upload(spec, path, tmp_dir) for path in value]
            else:
                value = _upload(spec, value, tmp_dir)
        data[spec.key] = value
    return data


def _format_errors(messages: Any) -> str:
    if not isinstance(messages, dict):
        return f"invalid arguments: {shown(messages)}"
    lines = []
    for key, value in messages.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            text = " ".join(value)
        else:
            text = json.dumps(value, default=str)
        lines.append(f"argument --{key}: {text}")
    return "\n".join(lines)


def validate_args(
    model: ModelWrapper, command: str, specs: Mapping[str, ArgSpec], data: Any
) -> dict[str, Any]:
    schema = build_schema(
        {spec.name: spec for spec in specs.values()},
        f"{model.name}{command.capitalize()}Args",
    )
    try:
        return load_args(schema, data)
    except marshmallow.ValidationError as exc:
        raise CliError(_format_errors(exc.messages), EXIT_USAGE) from None
