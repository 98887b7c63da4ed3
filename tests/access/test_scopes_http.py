"""Each route family answers 401 without a token, 403 to a token without
its scope, and as usual to one with it; malformed headers are clear answers,
never a 500."""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio
from multidict import CIMultiDict

from deepaas.api.errors import OIP_PATHS
from tests.access.test_scopes import TOKENS
from tests.support import DEMO, Client, MakeClient

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

BEARER = {
    scope: {"Authorization": f"Bearer {scope[0]}-secret"}
    for scope in ("predict", "train", "admin")
}
ALL = {"Authorization": "Bearer all-secret"}
INVALID_REQUEST = 'Bearer realm="deepaas", error="invalid_request"'

#: One request per route family: (method, path, body, scope needed).
REQUESTS = [
    ("GET", "/v2/models/", None, "predict"),
    ("GET", "/v2/models/demo/", None, "predict"),
    ("GET", "/v2/models/unknown/", None, "predict"),
    ("POST", "/v2/models/demo/predict/?number=3", None, "predict"),
    ("GET", "/v2", None, "predict"),
    ("GET", "/v2/models/demo", None, "predict"),
    ("GET", "/v2/models/demo/ready", None, "predict"),
    ("POST", "/v2/models/demo/infer", {"inputs": []}, "predict"),
    ("GET", "/v2/models/nothere/ready", None, "predict"),
    ("GET", "/v2/models/demo/train/", None, "train"),
    ("POST", "/v2/models/demo/train/", {"epochs": 1}, "train"),
    ("GET", f"/v2/models/demo/train/{'0' * 32}", None, "train"),
    ("DELETE", f"/v2/models/demo/train/{'0' * 32}", None, "train"),
    ("GET", f"/v2/models/demo/train/{'0' * 32}/logs", None, "train"),
    ("GET", f"/v2/models/demo/train/{'0' * 32}/metrics", None, "train"),
    ("GET", "/v2/debug/", None, "admin"),
    ("GET", "/v2/system/", None, "admin"),
    ("GET", "/metrics", None, "admin"),
]
OPEN = [
    "/",
    "/v2/",
    "/healthz",
    "/readyz",
    "/v2/health/live",
    "/v2/health/ready",
    "/swagger.json",
    "/openapi.json",
    "/api",
    "/swagger-ui/swagger-ui.css",
]


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client([DEMO], auth_tokens=TOKENS, debug_endpoint=True)


@pytest.mark.parametrize(("method", "path", "body", "scope"), REQUESTS)
async def test_each_family_answers_only_its_scope(
    client: Client, method: str, path: str, body: object, scope: str
) -> None:
    send = {"json": body} if body is not None else {}
    oip = client.app[OIP_PATHS].fullmatch(path.partition("?")[0])
    key = "error" if oip else "message"  # as every error of the path

    response = await client.request(method, path, **send)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="deepaas"'
    assert scope in (await response.json())[key]

    for other in {"predict", "train", "admin"} - {scope}:
        response = await client.request(method, path, headers=BEARER[other], **send)
        assert response.status == 403, (other, await response.text())
        assert response.headers["WWW-Authenticate"] == (
            f'Bearer realm="deepaas", error="insufficient_scope", scope="{scope}"'
        )
        document = await response.json()
        assert list(document) == [key] and f"'{scope}'" in document[key]

    for headers in (BEARER[scope], ALL):
        response = await client.request(method, path, headers=headers, **send)
        assert response.status not in (401, 403), await response.text()
        assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize("path", OPEN)
async def test_probes_and_documents_need_no_token(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status in (200, 503), path  # readiness may be starting
    response = await client.get(path, headers={"Authorization": "Bearer wrong"})
    assert response.status in (200, 503), path  # a token is not even read


@pytest.mark.parametrize(
    ("header", "status", "challenge"),
    [
        ("Bearer nope", 401, 'Bearer realm="deepaas", error="invalid_token"'),
        ("bearer   p-secret", 200, None),  # scheme in any case, spaces
        ("Basic cC1zZWNyZXQ=", 401, 'Bearer realm="deepaas"'),
        ("Bearer", 400, INVALID_REQUEST),
        ("Bearer two words", 400, INVALID_REQUEST),
        ("Bearer p-secr\u00e9t", 400, INVALID_REQUEST),
        ("", 401, 'Bearer realm="deepaas"'),
        ("   ", 401, 'Bearer realm="deepaas"'),
    ],
)
async def test_malformed_headers_are_clear_never_500(
    client: Client, header: str, status: int, challenge: str | None
) -> None:
    response = await client.get("/v2/models/", headers={"Authorization": header})
    assert response.status == status, await response.text()
    assert response.headers.get("WWW-Authenticate") == challenge
    if status != 200:
        document = json.loads(await response.text())
        assert (
            "Bearer <token>" in document["message"]
            or "not valid" in (document["message"])
        )


@pytest.mark.parametrize(
    "values",
    [("p-secret", "nope"), ("nope", "p-secret"), ("p-secret", "p-secret")],
)
async def test_two_authorization_headers_are_refused(
    client: Client, values: tuple[str, str]
) -> None:
    """Whichever comes first, valid or not: a proxy reading the other one
    must not let one token pass for another."""
    headers = CIMultiDict([("Authorization", f"Bearer {v}") for v in values])
    response = await client.get("/v2/models/", headers=headers)
    assert response.status == 400, await response.text()
    assert response.headers.get("WWW-Authenticate") == INVALID_REQUEST
    assert "2 Authorization headers" in json.loads(await response.text())["message"]


@pytest.mark.parametrize(
    "header",
    ["p-secret", "p-secretp-secretp-secret", "Token p-secret", "Bearer\tp-secret"],
)
async def test_a_token_is_never_echoed(client: Client, header: str) -> None:
    """A bare token (no scheme) or an unknown scheme is not repeated in the
    answer; a tab after Bearer is taken as a space."""
    response = await client.get("/v2/models/", headers={"Authorization": header})
    text = await response.text()
    if header.startswith("Bearer"):
        assert response.status == 200, text
        return
    assert response.status == 401, text
    assert "p-secr" not in text and "Token" not in text
    assert "without the 'Bearer' scheme" in json.loads(text)["message"]


async def test_refused_before_the_body_is_asked_for(client: Client) -> None:
    """``Expect: 100-continue`` without a token: a 401, and no 100 Continue
    inviting the body first."""
    reader, writer = await _connect(client)
    writer.write(
        b"POST /v2/models/demo/predict/ HTTP/1.1\r\nHost: x\r\n"
        b"Expect: 100-continue\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000\r\n\r\n"
    )
    status_line = await reader.readline()
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 401"), status_line


async def _connect(
    client: Client,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(client.host, client.port)


async def test_disabled_routes_are_guarded_too(make_client: MakeClient) -> None:
    off = await make_client(
        [DEMO], auth_tokens=TOKENS, predict_endpoint=False, train_endpoint=False
    )
    assert (await off.post("/v2/models/demo/predict/")).status == 401
    assert (await off.get("/v2/models/demo/train/")).status == 401
    response = await off.post("/v2/models/demo/predict/", headers=BEARER["predict"])
    assert response.status == 402
    response = await off.get("/v2/models/demo/train/", headers=BEARER["train"])
    assert response.status == 402
