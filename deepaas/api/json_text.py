"""Structured argument values sent as JSON text.

A query string and a form carry strings; a structured argument (a mapping,
a ``Nested``, a list of them, a list of lists: :attr:`ArgSpec.structured`)
sent there is JSON text, parsed here before the plugin's fields load it.
A JSON body's values are JSON already and never come here.

That is what makes such an argument callable beside files: a multipart
body has no room for a JSON object, but a part of JSON text is what OpenAPI
3 clients send for an object property of a form (``/openapi.json``
describes it so), and what ``curl -F 'matrix=[[1,2],[3,4]]'`` sends.

Each failure is a 422 naming the argument, never a 500: text that is not
JSON, JSON that breaks a JSON body's rules (depth, ``NaN``), or a file
where text belongs.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields as ma_fields

from deepaas.api.errors import ValidationFailed
from deepaas.api.parsing import parse_json_text
from deepaas.exceptions import DeepaasError
from deepaas.model.v2.fields import ArgSpec, fits, takes_structure


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


#: No value: the argument is left out (its default applies).
MISSING: Any = _Missing()


#: Ends the 422 for a JSON-body argument's multipart part that is not JSON:
#: ``curl -F name=abc`` sends bare text, which is JSON only once quoted.
JSON_PART_HINT = (
    " (this argument is read from the JSON body: as a multipart part its value"
    ' is JSON text, so a string goes in double quotes: "text")'
)


def from_form(key: str, text: Any, hint: str = "") -> Any:
    """The value of one JSON text (a form field or query value) of the
    argument ``key``; a 422 naming it when the text is not JSON, or is a
    file. ``hint`` ends the not-JSON message: where the sender could not
    know the value had to be JSON text (a JSON-body argument sent as a
    multipart part), "Not valid JSON" alone does not say what to send."""
    if not isinstance(text, str):
        raise ValidationFailed(
            {key: ["Not JSON text: send this argument as a form field, not a file"]}
        )
    try:
        return parse_json_text(text)
    except DeepaasError as exc:
        # parse_json_text words its errors for a body: say them of this text
        reason = exc.message.removeprefix("invalid JSON: ")
        reason = reason.replace("the JSON body", "this JSON text")
        raise ValidationFailed({key: [f"Not valid JSON: {reason}{hint}"]}) from None


def from_texts(spec: ArgSpec, value: Any) -> Any:
    """The value of a structured argument sent in a query string or a form:
    ``value`` is its text (a list of them for a list argument).

    For a list, each repeated text is one item or an array of items, told
    apart by the item's shape (:func:`~deepaas.model.v2.fields.fits`):
    ``?dl={..}&dl={..}`` and ``?dl=[{..},{..}]`` are the same list of
    mappings, ``?m=[1,2]&m=[3,4]`` and ``?m=[[1,2],[3,4]]`` the same matrix
    (and ``?m=1,2&m=3,4``: :func:`_item_text`). One text of the whole array
    is what generated clients send. A tuple
    takes one text of all its elements, or one text per element. An empty
    text is no value (an empty form input).
    """
    if not spec.is_list:
        return MISSING if value == "" else from_form(spec.key, value)
    texts = [text for text in value if text != ""]
    if not texts:
        return MISSING
    item = getattr(spec.field, "inner", None)
    parsed = [_item_text(spec.key, item, text) for text in texts]
    if item is None:  # a Tuple: one text of it all, or one text per element
        return parsed[0] if len(parsed) == 1 and isinstance(parsed[0], list) else parsed
    items: list[Any] = []
    for one in parsed:
        if isinstance(one, list) and all(fits(item, each) for each in one):
            items.extend(one)  # an array of items (maybe all of them)
        else:
            items.append(one)  # one item (marshmallow checks it)
    return items


def _item_text(key: str, item: Any, text: Any) -> Any:
    """One text of a list argument: JSON, or, for a row of scalars
    (``List(List(Float()))``), the row's values separated by commas when
    it does not start as JSON structure does: ``?m=1,2&m=3,4``.

    That is how ``/swagger.json`` (Swagger 2.0, kept as DEEPaaS 2.6.0
    wrote it) describes such an argument (an array of arrays, the inner
    ones ``csv``, the default), and what Swagger UI and Swagger 2.0
    clients send.
    """
    if (
        isinstance(text, str)  # not an upload (a 422 below)
        and isinstance(item, ma_fields.List)
        and not takes_structure(item)
        and not text.lstrip().startswith(("[", "{"))  # meant as JSON
    ):
        return text.split(",")
    return from_form(key, text)
