"""One interface over module- and class-based v2 plugins.

``UploadedFile`` and ``ReturnedFile`` live here because published plugins
import them from ``deepaas.model.v2.wrapper``: keep the names and fields.
"""

from __future__ import annotations

import collections
import copy
import inspect
import logging
from collections.abc import Sequence
from typing import Any

import marshmallow
from marshmallow import validate as ma_validate

from deepaas.exceptions import TensorError
from deepaas.model import stacking
from deepaas.model.signature import (
    InferSignature,
    SignatureError,
    check_outputs,
    parse_signature,
)
from deepaas.model.v2.fields import ArgSpec, InvalidArgsError, arg_specs
from deepaas.model.v2.plugin_calls import call_optional
from deepaas.options import MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE

LOG = logging.getLogger(__name__)

UploadedFile = collections.namedtuple(
    "UploadedFile",
    ("name", "filename", "content_type", "original_filename"),
    defaults=(None, None, None, None),
)
UploadedFile.__doc__ = """A file sent by the client, handed to the plugin.

``name`` is the argument name, ``filename`` the path of a temporary file
holding the upload (deleted when the request ends), ``content_type`` what
the client said it is, ``original_filename`` what the client called it.
"""

ReturnedFile = collections.namedtuple(
    "ReturnedFile",
    ("name", "filename", "content_type", "original_filename"),
    defaults=(None, None, None, None),
)
ReturnedFile.__doc__ = """A file a plugin returns: ``filename`` is its path.

The client receives its bytes with ``content_type`` and a
``Content-Disposition`` naming ``original_filename`` (or the file's name).
"""

JSON_TYPES = ("application/json", "*/*")


class ModelError(Exception):
    """A plugin is unusable as written; the message says what to fix.

    ``detail`` is the message less its ``model 'NAME': `` prefix;
    ``source`` the plugin's function at fault (``get_predict_args``, say),
    when there is one, so that a report can name its file and line.
    """

    def __init__(self, name: str, detail: str, source: Any = None) -> None:
        super().__init__(f"model {name!r}: {detail}")
        self.detail = detail
        self.source = source


def _fallback_metadata(name: str) -> dict[str, Any]:
    return {
        "id": "0",
        "name": name,
        "description": (
            f"Could not load description from underlying model (loaded '{name}')"
        ),
    }


def _response_schema(name: str, schema: Any) -> type[marshmallow.Schema] | None:
    """Validate the plugin's ``schema`` attribute and return a Schema class."""
    if schema is None:
        return None
    if isinstance(schema, dict):
        try:
            return marshmallow.Schema.from_dict(schema, name="ModelPredictionResponse")
        except Exception as exc:
            raise ModelError(
                name, f"schema dict is invalid: {type(exc).__name__}: {exc}"
            ) from exc
    if isinstance(schema, type) and issubclass(schema, marshmallow.Schema):
        return schema
    raise ModelError(
        name,
        "schema must be None, a dict of marshmallow fields or "
        f"a marshmallow.Schema subclass, got {schema!r}",
    )


class ModelWrapper:
    """A loaded plugin: its metadata, arguments, schema and callables.

    The wrapper never runs model code in the API process except the cheap
    introspection calls; ``predict``/``warm`` are called in worker processes.
    """

    def __init__(self, name: str, plugin: Any) -> None:
        self.name = name
        self.plugin = plugin
        self.response_schema = _response_schema(name, getattr(plugin, "schema", None))
        try:
            self.predict_args = self._predict_arg_specs()
        except InvalidArgsError as exc:
            source = getattr(plugin, "get_predict_args", None)
            raise ModelError(name, str(exc), source) from exc
        try:
            self.train_args = arg_specs(
                self._call_optional("get_train_args", {}), f"{name}.get_train_args()"
            )
        except InvalidArgsError as exc:
            source = getattr(plugin, "get_train_args", None)
            raise ModelError(name, str(exc), source) from exc
        self.accept_choices = self._accept_choices()
        self.accept_for_any = self._accept_for_any()
        self.batching = _batching(name, getattr(plugin, "batching", None))
        self.infer_signature = self._infer_signature()

    # -- introspection (API process) --------------------------------------

    def _call_optional(self, method: str, default: Any) -> Any:
        """The plugin's ``method()`` (:func:`plugin_calls.call_optional`)."""
        func = getattr(self.plugin, method, None)
        return call_optional(method, func, default)

    def _infer_signature(self) -> InferSignature | None:
        """The plugin's ``get_infer_signature()``, checked (see
        :mod:`deepaas.model.signature`); None when it has none. A plugin's
        ``infer`` alone is not a declaration (it may be a helper of its
        own); a signature without ``infer`` is an error."""
        func = getattr(self.plugin, "get_infer_signature", None)
        if func is None:
            return None
        if not callable(getattr(self.plugin, "infer", None)):
            raise ModelError(
                self.name,
                "get_infer_signature() is defined but infer() is not: define "
                "infer(**arrays) returning a dict of output arrays, or remove "
                "get_infer_signature()",
                func,
            )
        declared = self._call_optional("get_infer_signature", None)
        if declared is None:
            return None
        try:
            return parse_signature(declared)
        except SignatureError as exc:
            raise ModelError(self.name, str(exc), func) from None

    def get_metadata(self) -> dict[str, Any]:
        meta = self._call_optional("get_metadata", None)
        if meta is None:
            return _fallback_metadata(self.name)
        if not isinstance(meta, dict):
            raise ModelError(
                self.name,
                f"get_metadata() must return a dict, got {type(meta).__name__}",
                self.plugin.get_metadata,
            )
        return meta

    def _predict_arg_specs(self) -> dict[str, ArgSpec]:
        declared = self._call_optional("get_predict_args", {})
        specs = arg_specs(declared, f"{self.name}.get_predict_args()")
        accept = specs.get("accept")
        self._declared_accept: list[str] | None = None
        if accept is not None:
            choices = accept.choices
            self._declared_accept = [str(c) for c in choices] if choices else None
            specs["accept"] = self._with_accept_defaults(accept)
        return specs

    @staticmethod
    def _with_accept_defaults(spec: ArgSpec) -> ArgSpec:
        """Add ``*/*`` to the accept choices and default to the first one.

        As DEEPaaS 2.x did (it appended ``*/*`` to the validator's choices
        after the validator was made), the validation message still lists
        the plugin's own choices only, in its own words: the plugin's
        ``OneOf`` is copied with ``*/*`` added to what it accepts, and its
        message (``choices_text``, labels, ``error``) is kept.

        Works on copies: the plugin's own field objects are left untouched.
        """
        choices = spec.choices
        if not choices:
            return spec
        field = copy.copy(spec.field)
        validators = _validators_of(field)
        one_of = next((v for v in validators if isinstance(v, ma_validate.OneOf)), None)
        if one_of is None:  # the choices came from metadata["enum"]
            one_of = ma_validate.OneOf(choices)
            validators.append(one_of)
        extended = copy.copy(one_of)
        if "*/*" not in choices:
            extended.choices = [*choices, "*/*"]
        field.validators = [extended if v is one_of else v for v in validators]
        if field.load_default is marshmallow.missing:
            field.load_default = choices[0]
        return ArgSpec(
            name=spec.name,
            field=field,
            key=spec.key,
            location=spec.location,
            is_file=spec.is_file,
            is_list=spec.is_list,
        )

    def _accept_for_any(self) -> str | None:
        """What a plugin gets for an ``accept`` of ``*/*``: the field's
        default when it is one of the plugin's own choices (so ``*/*`` and
        no preference at all get the same answer), else its first choice.

        ``*/*`` is added by deepaas, so the plugin may not know it (one that
        looks its formats up in a dict failed with ``KeyError: '*/*'``).
        None when the plugin declared no choices, or ``*/*`` itself.
        """
        declared = self._declared_accept
        if not declared or "*/*" in declared:
            return None
        default = self.accept_default
        return default if default in declared else declared[0]

    def resolve_accept(self, kwargs: dict[str, Any]) -> None:
        """Replace a wildcard ``accept`` in ``kwargs`` by the plugin's own
        choice for it (:meth:`_accept_for_any`), in place."""
        if self.accept_for_any is not None and kwargs.get("accept") == "*/*":
            kwargs["accept"] = self.accept_for_any

    def _accept_choices(self) -> list[str] | None:
        spec = self.predict_args.get("accept")
        if spec is None or not spec.choices:
            return None
        return [str(c) for c in spec.choices]

    @property
    def accept_default(self) -> str | None:
        spec = self.predict_args.get("accept")
        if spec is None or spec.default is marshmallow.missing:
            return None
        return str(spec.default)

    def produces(self) -> list[str]:
        """Content types predict can answer with (for the spec documents)."""
        return self.accept_choices or ["application/json"]

    @property
    def has_predict(self) -> bool:
        """predict, or predict_batch alone (called with a batch of one)."""
        return callable(getattr(self.plugin, "predict", None)) or self.has_predict_batch

    @property
    def has_predict_batch(self) -> bool:
        return callable(getattr(self.plugin, "predict_batch", None))

    @property
    def has_infer(self) -> bool:
        """Tensor-native: ``get_infer_signature()`` and ``infer(**arrays)``."""
        return self.infer_signature is not None

    @property
    def has_train(self) -> bool:
        return callable(getattr(self.plugin, "train", None))

    # -- model code (worker processes) ------------------------------------

    def warm(self) -> bool:
        """Call the plugin's ``warm()``; False when it has none."""
        func = getattr(self.plugin, "warm", None)
        if func is None:
            return False
        try:
            func()
        except NotImplementedError:
            return False
        return True

    def predict_batch(self, batch: list[dict[str, Any]]) -> list[Any]:
        """Call ``predict_batch`` and check it answered every request."""
        outputs = self.plugin.predict_batch(batch)
        if not isinstance(outputs, (list, tuple)) or len(outputs) != len(batch):
            got = (
                f"{len(outputs)} results"
                if isinstance(outputs, (list, tuple))
                else f"a value of type {type(outputs).__name__}"
            )
            raise TypeError(
                f"predict_batch of model {self.name!r} returned {got} for "
                f"{len(batch)} requests; it must return a list with one result "
                "per request, in order"
            )
        return list(outputs)

    def predict(self, kwargs: dict[str, Any]) -> Any:
        func = getattr(self.plugin, "predict", None)
        if func is None and self.has_predict_batch:
            (output,) = self.predict_batch([kwargs])
            if isinstance(output, BaseException):
                raise output
            return output
        if func is None:
            raise NotImplementedError(f"model {self.name!r} does not implement predict")
        return func(**kwargs)

    def infer(self, arrays: dict[str, Any]) -> dict[str, Any]:
        """Call ``infer(**arrays)``; its outputs checked against the
        signature (:class:`~deepaas.model.signature.InferOutputError`).

        Arrays the plugin could not write to (small ones, unpickled from a
        read-only request body) are copied first: it gets writable arrays,
        as from the numpy code it was written with.
        """
        signature = self.infer_signature
        if signature is None:
            raise NotImplementedError(f"model {self.name!r} does not implement infer")
        given = {
            name: array if array.flags.writeable else array.copy()
            for name, array in arrays.items()
        }
        rows = stacking.rows_of(given) if signature.batched else 0
        outputs = self.plugin.infer(**given)
        return check_outputs(self.name, signature, outputs, rows)

    def infer_batch(
        self, calls: list[dict[str, Any]]
    ) -> Sequence[dict[str, Any] | TensorError]:
        """Several calls of one group (:mod:`deepaas.model.stacking`) as one
        ``infer`` call: inputs stacked along axis 0, outputs split back.
        Where the batch is refused with a :class:`TensorError`, each call
        is run alone, and the item of one refused again is its error."""
        counts = [stacking.rows_of(call) for call in calls]
        try:
            outputs = self.infer(stacking.concatenate(calls))
        except TensorError:
            if len(calls) == 1:
                raise
            return stacking.each_alone(self.infer, calls)
        return stacking.split(outputs, counts)


def _batching(name: str, value: Any) -> dict[str, Any] | None:
    """Check a plugin's ``batching = {"max_batch_size": N, "max_delay_ms": T}``:
    both optional; without a delay, the adaptive window (docs/batching.md)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"max_batch_size", "max_delay_ms"}:
        raise ModelError(
            name,
            "batching must be a dict with max_batch_size and/or "
            f"max_delay_ms, got {value!r}",
        )
    size = value.get("max_batch_size", 1)
    delay = value.get("max_delay_ms", 0)
    if not _number(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
        raise ModelError(
            name,
            f"batching max_batch_size must be an integer from 1 to "
            f"{MAX_BATCH_SIZE}, got {size!r}",
        )
    if not _number(delay, (int, float)) or not 0 <= delay <= MAX_BATCH_DELAY_MS:
        raise ModelError(  # NaN too: it is in no range
            name,
            f"batching max_delay_ms must be from 0 (no wait) to "
            f"{MAX_BATCH_DELAY_MS} milliseconds, or left out (the adaptive "
            f"window), got {delay!r}",
        )
    return dict(value)


def _number(value: Any, kinds: type | tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


def _validators_of(field: Any) -> list[Any]:
    return list(getattr(field, "validators", []) or [])


def instantiate(obj: Any) -> Any:
    """Use a class entry point as an instance (upstream used the class itself)."""
    if inspect.isclass(obj):
        return obj()
    return obj
