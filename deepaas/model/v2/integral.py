"""Integer arguments refuse numbers that are not whole.

marshmallow 3's ``fields.Int`` (not ``strict``) loads a value with
``int(value)``: ``{"deepaas_gpus": 1.5}`` in a JSON body became 1, and
``1e300`` a 301-digit integer, with no error; the model got another value
than the client sent. ``strict=True`` is no answer: it refuses the string
``"2"`` that DEEPaaS 2.x clients send in query strings and forms.

:func:`refuse_fractions` makes each Integer field of a plugin's arguments,
also inside a ``List``, ``Tuple``, ``Dict`` or ``Nested`` schema, refuse a
float that is not a whole number a float holds exactly (at most 2**53),
with the field's own "Not a valid integer." (422, as every invalid
argument). ``2`` and ``2.0`` still load as 2, the string ``"2"`` too;
booleans are refused by marshmallow itself. Only a float value pays for a
check: the wrapper is one type test before marshmallow's own code, on
every path that loads the field (``schema.load`` and the plain-field fast
path of :func:`deepaas.model.v2.fields.load_args`, which both reach
``_validated``).
"""

from __future__ import annotations

import types
from typing import Any

import marshmallow
from marshmallow import fields as ma_fields

#: The largest magnitude below which every whole float is exactly the
#: integer the client wrote (2**53: a double's 53-bit significand).
EXACT_FLOAT_MAX = float(2**53)

_MARK = "_deepaas_integral"


def _validated(self: ma_fields.Integer, value: Any) -> Any:
    """The field's own ``_validated``, after refusing a fractional float."""
    if type(value) is float and not (
        value.is_integer() and -EXACT_FLOAT_MAX <= value <= EXACT_FLOAT_MAX
    ):
        raise self.make_error("invalid", input=value)
    return type(self)._validated(self, value)


def refuse_fractions(field: ma_fields.Field) -> None:
    """Make every Integer field in ``field`` (itself, or the fields it
    holds) refuse a float that is not a whole number. Done once per field
    object, in place: a bound method in the instance's ``__dict__``. The
    copies marshmallow makes of a field for each Schema instance are
    shallow (``Field.__deepcopy__`` is ``copy.copy``): they share the
    method, bound to this field, whose settings they share too (``strict``,
    error messages); a Nested field's schema is made here, once, and
    shared by its copies likewise."""
    _walk(field, set())


def _walk(field: Any, seen: set[int]) -> None:
    if not isinstance(field, ma_fields.Field) or id(field) in seen:
        return
    seen.add(id(field))
    if isinstance(field, ma_fields.Integer):
        if not field.__dict__.get(_MARK):
            field._validated = types.MethodType(_validated, field)  # type: ignore[method-assign]
            setattr(field, _MARK, True)
        return
    if isinstance(field, ma_fields.List):
        _walk(field.inner, seen)
    elif isinstance(field, ma_fields.Tuple):
        for inner in field.tuple_fields:
            _walk(inner, seen)
    elif isinstance(field, ma_fields.Mapping):
        _walk(field.key_field, seen)
        _walk(field.value_field, seen)
    elif isinstance(field, ma_fields.Nested):
        try:
            schema = field.schema
        except (
            AttributeError,
            TypeError,
            ValueError,
            marshmallow.exceptions.RegistryError,
        ):
            return  # a schema that cannot be found yet: loaded as it is
        for inner in schema.fields.values():
            _walk(inner, seen)
