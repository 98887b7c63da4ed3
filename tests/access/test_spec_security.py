"""Both API documents declare the bearer scheme when tokens are on, each
operation with the scope its route needs; with tokens off they are as they
were (DEEPaaS compatibility)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deepaas.api import SPEC
from deepaas.config import Settings
from deepaas.model.loading import PluginSpec
from deepaas.server import build_app
from tests.needs import needs
from tests.support import DEMO, plugin_spec


def documents(
    specs: list[PluginSpec] | None = None, **settings: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    app = build_app(Settings(debug_endpoint=True, **settings), specs or [DEMO])
    return app[SPEC].swagger(), app[SPEC].openapi()


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_without_tokens_the_documents_say_nothing_of_security() -> None:
    for document in documents():
        text = json.dumps(document)
        assert '"security' not in text
        assert "401" not in json.dumps(
            [op["responses"] for op in operations(document).values()]
        )


def test_swagger_2_declares_an_authorization_api_key() -> None:
    swagger, _ = documents(auth_tokens="t")
    scheme = swagger["securityDefinitions"]["bearer"]
    assert scheme["type"] == "apiKey"
    assert (scheme["in"], scheme["name"]) == ("header", "Authorization")
    ops = operations(swagger)
    predict = ops[("post", "/v2/models/demo/predict/")]
    assert predict["security"] == [{"bearer": []}]  # 2.0: no scopes but OAuth2's
    assert {"401", "403"} <= set(predict["responses"])
    assert predict["responses"]["401"]["schema"] == {"$ref": "#/definitions/Failure"}
    for open_route in ("/healthz", "/readyz", "/", "/v2/"):
        assert "security" not in ops[("get", open_route)]
    assert "security" not in swagger  # per operation, none for the whole API


def test_openapi_3_declares_http_bearer_with_each_routes_scope() -> None:
    _, openapi = documents(auth_tokens="t")
    scheme = openapi["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    ops = operations(openapi)
    expected = {
        ("post", "/v2/models/demo/predict/"): "predict",
        ("post", "/v2/models/demo/infer"): "predict",  # written as is by OIP
        ("get", "/v2/models/"): "predict",
        ("get", "/v2"): "predict",
        ("post", "/v2/models/demo/train/"): "train",
        ("delete", "/v2/models/demo/train/{uuid}"): "train",
        ("get", "/v2/debug/"): "admin",
        ("get", "/v2/system/"): "admin",
    }
    for key, scope in expected.items():
        assert ops[key]["security"] == [{"bearer": [scope]}], key
        error = ops[key]["responses"]["403"]["content"]["application/json"]
        assert error["schema"] == {"$ref": "#/components/schemas/Failure"}
    assert "security" not in ops[("get", "/v2/health/ready")]


@pytest.mark.parametrize("metrics_public", [False, True])
def test_both_documents_stay_valid(metrics_public: bool) -> None:
    validator = needs("openapi_spec_validator")
    # (the validator stops at the demo's file fields: "type": "file")
    swagger, openapi = documents(
        [plugin_spec("echo")], auth_tokens="t", metrics_public=metrics_public
    )
    errors = validator.OpenAPIV2SpecValidator(swagger).iter_errors()
    # DEEPaaS 2.6.0's "default": null with x-nullable: see test_mapping_args
    assert [e.message for e in errors if e.instance is not None] == []
    assert list(validator.OpenAPIV31SpecValidator(openapi).iter_errors()) == []
