"""Which token scope each route family needs (``--auth-token-file``).

A route declares its family once, with its metric labels
(:func:`deepaas.api.metrics.label`), and the family names its scope here
(or the route gives its own). When the app is built,
:func:`deepaas.api.auth.protect` refuses a route that declares no family,
or a family missing from :data:`ENDPOINT_SCOPES`, so no route can be added
without saying who may call it. ``tests/access/test_scopes.py`` pins the
scope of every route of a fully configured app.

A scope is independent of the others: ``admin`` does not imply
``predict``. A token listed without scopes has all three.
"""

from __future__ import annotations

PREDICT = "predict"
TRAIN = "train"
ADMIN = "admin"
#: Every scope a token may hold, in the order messages list them.
SCOPES = (PREDICT, TRAIN, ADMIN)

#: endpoint label -> scope needed; None: open to every client.
ENDPOINT_SCOPES: dict[str, str | None] = {
    # Probes stay open: kubelets and load balancers send no token.
    "health": None,
    # The API documents and the Swagger UI: the UI must load before its
    # Authorize button can take a token. They name the models and their
    # arguments, as the OpenAPI documents of any public API do.
    "docs": None,
    # The versions documents (<bp>/ and <bp>/v2/): fixed links, no model.
    "versions": None,
    # Metadata reads: models, their metadata, OIP server metadata and
    # per-model readiness (not probes: they name models).
    "models": PREDICT,
    "metadata": PREDICT,
    "oip": PREDICT,
    "ready": PREDICT,
    "predict": PREDICT,
    "infer": PREDICT,
    "train": TRAIN,
    "train_logs": TRAIN,
    "train_metrics": TRAIN,
    "debug": ADMIN,
    "system": ADMIN,
    "metrics": ADMIN,  # open with --metrics-public
}


def scope_of(endpoint: str) -> str | None:
    """The scope routes of the family ``endpoint`` need (None: open).

    Raises ValueError for a family this table does not know: a new family
    must say here who may call it.
    """
    try:
        return ENDPOINT_SCOPES[endpoint]
    except KeyError:
        raise ValueError(
            f"route family {endpoint!r} has no scope: add it to "
            "deepaas.api.scopes.ENDPOINT_SCOPES, or give label() a scope"
        ) from None
