"""Turn what ``predict()`` returned into bytes the API process can send.

This runs in the worker process, next to the model: JSON encoding and schema
validation cost the API process nothing, and whatever a plugin returns
(an open file, a numpy array, an object that cannot be pickled) becomes a
plain :class:`PredictResult` or a clear error, never a hang.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import sys
import tempfile
from typing import Any, NamedTuple

import marshmallow

from deepaas.model.v2.wrapper import JSON_TYPES, ModelWrapper, ReturnedFile

# Bodies larger than this travel as a temporary file rather than through the
# worker's pipe, so the API process streams them without holding them.
INLINE_LIMIT = 1 << 20


class OutputError(Exception):
    """The model's output cannot be sent: the message says why (a 500)."""


class PredictResult(NamedTuple):
    """A rendered answer: either ``body`` bytes or a file at ``path``."""

    content_type: str
    body: bytes | None = None
    path: str | None = None
    delete: bool = False  # the path is ours (a temporary file) to remove
    filename: str | None = None  # for Content-Disposition


def _json_default(obj: Any) -> Any:
    """Encode numpy arrays and scalars, sets and tuples-like objects."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(obj, numpy.ndarray):
            return obj.tolist()
        if isinstance(obj, numpy.generic):
            return obj.item()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# One encoder for every result: json.dumps with options builds a new one per
# call, a few microseconds of each prediction. Encoding keeps no state in it.
_ENCODER = json.JSONEncoder(default=_json_default, allow_nan=False)


def dumps(value: Any) -> bytes:
    """JSON bytes as aiohttp's json_response would send them, except that
    NaN, Infinity and -Infinity (floats, numpy scalars and arrays, anywhere
    in the value) are sent as ``null``: JSON has no such numbers, and
    browsers, jq, Go and Java refuse a body holding the bare tokens.

    The common case costs what it did: the value is encoded once, with
    ``allow_nan=False``; only when that fails is it walked and encoded again.
    """
    try:
        return _ENCODER.encode(value).encode()
    except ValueError:
        pass  # a non-finite float somewhere (or a circular reference)
    return _ENCODER.encode(_finite(value, set())).encode()


def _finite(value: Any, path: set[int]) -> Any:
    """``value`` with every non-finite float replaced by None (a copy of the
    containers that hold one; the rest as is). ``path`` holds the ids of the
    containers being walked: a cycle is the encoder's ValueError."""
    if isinstance(value, float):  # numpy.float64 is one too
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, type(None))):
        return value
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            return _finite(value.tolist(), path)
        if isinstance(value, numpy.generic):
            return _finite(value.item(), path)
    if not isinstance(value, (dict, list, tuple, set, frozenset)):
        return value  # the encoder's default() turns it into JSON, or fails
    if id(value) in path:
        raise ValueError("Circular reference detected")
    path.add(id(value))
    try:
        if isinstance(value, dict):
            return {_finite_key(k): _finite(v, path) for k, v in value.items()}
        return [_finite(item, path) for item in value]
    finally:
        path.discard(id(value))


def _finite_key(key: Any) -> Any:
    """A non-finite float key as the encoder wrote it ("NaN": a string)."""
    if isinstance(key, float) and not math.isfinite(key):
        return "NaN" if key != key else ("Infinity" if key > 0 else "-Infinity")
    return key


def _stream(value: Any) -> Any:
    """``value`` if it is a file object: an ``io`` stream, or a wrapper of
    one such as ``tempfile.NamedTemporaryFile()``; else None."""
    if isinstance(value, io.IOBase):
        return value
    if isinstance(getattr(value, "file", None), io.IOBase) and hasattr(value, "read"):
        return value
    return None


def file_name(stream: Any) -> str | None:
    """The base name of a returned file object's ``name`` (``/tmp/x/out.png``
    -> ``out.png``; both ``/`` and ``\\`` separate path parts), for
    Content-Disposition; None when it has none, or a pseudo name such as
    ``<stdin>`` or a file descriptor number."""
    try:
        name = getattr(stream, "name", None)
        if isinstance(name, (bytes, os.PathLike)):
            name = os.fsdecode(name)
    except Exception:  # a property of the plugin's own class may raise anything
        return None
    if not isinstance(name, str) or (name.startswith("<") and name.endswith(">")):
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base if base not in ("", ".", "..") else None


def _is_binary(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray, memoryview, ReturnedFile)):
        return True
    return _stream(value) is not None


class ResultRenderer:
    """Renders predict outputs of one model into :class:`PredictResult`.

    A result file is named ``<prefix><n>-<random>``, ``n`` counting the
    files this renderer made (1, 2, ...). A worker is given a prefix of its
    own, and sends its results in the order it made their files: so the
    API process, knowing the highest ``n`` it received, can tell the files a
    worker that died wrote but never sent (see
    :mod:`deepaas.engine.leftovers`).
    """

    def __init__(
        self, model: ModelWrapper, tmp_dir: str, prefix: str = "result-"
    ) -> None:
        self.model = model
        self.tmp_dir = tmp_dir
        self.prefix = prefix
        self.files = 0  # result files made so far: the next one's number - 1
        self._schema = model.response_schema() if model.response_schema else None
        choices = model.accept_choices or []
        self._binary_type = next(
            (c for c in choices if c not in JSON_TYPES), "application/octet-stream"
        )

    def render(self, output: Any, accept: str | None) -> PredictResult:
        wants_json = accept is None or accept in JSON_TYPES
        if wants_json and not _is_binary(output):
            return self._json(output)
        if wants_json:
            # JSON was asked for (or anything) but the model produced bytes:
            # send them with the model's own binary type rather than fail.
            accept = self._binary_type
        assert accept is not None
        return self._raw(output, accept)

    def _json(self, output: Any) -> PredictResult:
        if self._schema is not None:
            try:
                self._schema.load(output)
            except marshmallow.ValidationError as exc:
                raise OutputError(
                    "the model's response did not match its schema: "
                    f"{json.dumps(exc.messages, default=str)}"
                ) from exc
            document = output
        else:
            document = {"status": "OK", "predictions": output}
        try:
            body = dumps(document)
        except (TypeError, ValueError) as exc:
            raise OutputError(
                f"the model returned a value that is not JSON serializable: {exc}"
            ) from exc
        return self._bytes(body, "application/json", None)

    def _raw(self, output: Any, content_type: str) -> PredictResult:
        if isinstance(output, ReturnedFile):
            if not output.filename or not os.path.isfile(output.filename):
                raise OutputError(
                    f"the model returned a ReturnedFile whose file does not exist: "
                    f"{output.filename!r}"
                )
            return PredictResult(
                content_type=output.content_type or content_type,
                # The API process reads it from its own working directory:
                # a relative path is this one's (the model may have chdir'ed).
                path=os.path.abspath(output.filename),
                filename=output.original_filename or os.path.basename(output.filename),
            )
        if isinstance(output, str):
            if not content_type.startswith("text/") or "charset" in content_type:
                return self._bytes(output.encode(), content_type, None)
            return self._bytes(output.encode(), f"{content_type}; charset=utf-8", None)
        if isinstance(output, (bytes, bytearray, memoryview)):
            return self._bytes(bytes(output), content_type, None)
        if isinstance(output, io.BytesIO):
            return self._bytes(output.getvalue(), content_type, file_name(output))
        if _stream(output) is not None:
            return self._copy_file(output, content_type)
        # A JSON-able value when raw bytes were asked for: send it as JSON.
        return self._json(output)

    def _bytes(
        self, body: bytes, content_type: str, filename: str | None
    ) -> PredictResult:
        if len(body) <= INLINE_LIMIT:
            return PredictResult(content_type, body=body, filename=filename)
        fd, path = self._new_file()
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
        except BaseException:
            os.unlink(path)  # a full disk must not leave half a result behind
            raise
        return PredictResult(content_type, path=path, delete=True, filename=filename)

    def _copy_file(self, stream: Any, content_type: str) -> PredictResult:
        filename = file_name(stream)
        fd, path = self._new_file()
        try:
            with os.fdopen(fd, "wb") as out, stream:
                if isinstance(getattr(stream, "file", stream), io.TextIOBase):
                    out.write(stream.read().encode())
                else:
                    shutil.copyfileobj(stream, out, 1 << 20)
        except BaseException:
            os.unlink(path)
            raise
        return PredictResult(content_type, path=path, delete=True, filename=filename)

    def _new_file(self) -> tuple[int, str]:
        """A new result file, open: its descriptor and path (numbered)."""
        self.files += 1
        prefix = f"{self.prefix}{self.files}-"
        return tempfile.mkstemp(prefix=prefix, dir=self.tmp_dir)
