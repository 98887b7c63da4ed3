"""The bearer token scheme in the API documents, when tokens are on.

``/swagger.json`` (Swagger 2.0, which has no bearer scheme) declares an
``apiKey`` in the ``Authorization`` header, the usual way: Swagger UI's
Authorize button then sends what is typed there, and the UI page adds the
``Bearer `` a user leaves out (:mod:`deepaas.api.swagger_ui`).
``/openapi.json`` (3.1) declares ``http`` ``bearer``, and lists each
operation's scope as the role it needs (3.1 allows role names for schemes
other than OAuth2; 2.0 requires an empty list). Operations that need a
token also document the 401 and 403 answers; open ones (probes,
documents) carry no ``security``.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec

from deepaas.api.response_schemas import FAILURE, ref

SCHEME = "bearer"
DESCRIPTION = (
    "A token given by the server's operator, sent as `Authorization: Bearer "
    "<token>`. Each token holds scopes: predict (predictions, inference, "
    "metadata), train (trainings), admin (debug output, system, metrics)."
)
SWAGGER2_DESCRIPTION = DESCRIPTION + " In Swagger UI, paste the token alone."
ANSWERS = {
    401: "No token, or not a valid one (see WWW-Authenticate)",
    403: "The token does not hold the scope this route needs",
}


def add_scheme(spec: APISpec, swagger2: bool) -> None:
    """Declare the bearer scheme in ``spec``."""
    if swagger2:
        scheme = {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": SWAGGER2_DESCRIPTION,
        }
    else:
        scheme = {"type": "http", "scheme": "bearer", "description": DESCRIPTION}
    spec.components.security_scheme(SCHEME, scheme)


def secure(operation: dict[str, Any], scope: str, swagger2: bool) -> None:
    """Say in ``operation`` (a written operation object) that it needs a
    token holding ``scope``, and what it answers without one."""
    operation["security"] = [{SCHEME: [] if swagger2 else [scope]}]
    responses = operation.setdefault("responses", {})
    for status, description in ANSWERS.items():
        answer: dict[str, Any] = {
            "description": f"{description} (scope {scope})"
            if status == 403
            else description
        }
        error = ref(FAILURE, swagger2)
        if swagger2:
            answer["schema"] = error
        else:
            answer["content"] = {"application/json": {"schema": error}}
        responses.setdefault(str(status), answer)
