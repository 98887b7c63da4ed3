"""What predict returns, as sent (issue 8, points 8 and 10).

- A returned file object with a ``name`` (``io.BytesIO`` with ``.name`` set,
  ``tempfile.NamedTemporaryFile()``) is named in ``Content-Disposition`` by
  its base name, made safe for a header whatever it holds.
- NaN and infinities anywhere in a prediction are sent as ``null``: the
  body is always JSON that a strict parser accepts.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
import pytest_asyncio

from tests.plugins import named_outputs
from tests.support import Client, MakeClient, plugin_spec

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client(
        [
            plugin_spec("named", "named_outputs"),
            plugin_spec("non_finite"),
            plugin_spec("with_schema", "non_finite:WithSchema"),
        ]
    )


def strict_json(body: bytes) -> Any:
    """``json.loads`` that refuses NaN, Infinity and -Infinity, as browsers,
    jq, Go and Java do (Python's own parser takes them)."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"the body is not JSON: it holds {token}")

    return json.loads(body, parse_constant=refuse)


# -- 8. returned file names -------------------------------------------------------


def disposition(header: str) -> tuple[str, str]:
    """The ASCII ``filename`` and the exact ``filename*`` of a header."""
    assert header.isascii() and "\r" not in header and "\n" not in header
    assert header.startswith('attachment; filename="')
    plain = header.split('filename="', 1)[1].split('"', 1)[0]
    exact = urllib.parse.unquote(header.split("filename*=UTF-8''", 1)[1])
    return plain, exact


@pytest.mark.parametrize(
    ("kind", "plain", "exact"),
    [
        ("plain", "out.png", "out.png"),
        ("path", "result.png", "result.png"),
        ("windows", "win.png", "win.png"),
        ("quotes", "say hi.png", 'say "hi".png'),
        ("crlf", "a__Set-Cookie: x=1.png", "a__Set-Cookie: x=1.png"),
        ("unicode", "r?sum? ?.png", "résumé 图.png"),
        ("bytes_name", "bytes_.png", "bytes_.png"),
    ],
)
@pytest.mark.parametrize("accept", ["image/png", "application/json"])
async def test_a_named_file_object_is_named(client, kind, plain, exact, accept):
    response = await client.post(
        "/v2/models/named/predict/", params={"kind": kind}, headers={"Accept": accept}
    )
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "image/png"
    assert "Set-Cookie" not in response.headers
    assert disposition(response.headers["Content-Disposition"]) == (plain, exact)
    assert await response.read() == named_outputs.CONTENT


@pytest.mark.parametrize("kind", ["nameless", "pseudo", "dir"])
async def test_a_file_object_without_a_usable_name_is_not_named(client, kind):
    response = await client.post("/v2/models/named/predict/", params={"kind": kind})
    assert response.status == 200, await response.text()
    assert "Content-Disposition" not in response.headers
    assert await response.read() == named_outputs.CONTENT


async def test_a_named_temporary_file_is_sent_and_named(client):
    response = await client.post(
        "/v2/models/named/predict/", params={"kind": "named_temporary"}
    )
    assert response.status == 200, await response.text()
    plain, exact = disposition(response.headers["Content-Disposition"])
    assert plain == exact and exact.endswith(".png") and "/" not in exact
    assert await response.read() == named_outputs.CONTENT
    response = await client.post(
        "/v2/models/named/predict/",
        params={"kind": "temporaries_left"},
        headers={"Accept": "application/json"},
    )
    assert await response.json() == {"status": "OK", "predictions": {"left": []}}


# -- 10. valid JSON always --------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("finite", {"value": 0.5, "values": [1.0, 2.5]}),
        ("plain", {"value": None, "values": [None, None, 1.5]}),
        ("numpy", {"value": None, "values": [1.0, None, None, None]}),
        (
            "nested",
            {
                "value": 1.0,
                "values": [2.0],
                "deep": {"rows": [[{"x": [None, 3]}]], "nan_key": {"NaN": 1}},
                "matrix": [[None, None], [None, None]],
            },
        ),
        ("bare", None),
    ],
)
async def test_non_finite_numbers_are_null(client, kind, expected):
    response = await client.post(
        "/v2/models/non_finite/predict/", params={"kind": kind}
    )
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.read()
    assert strict_json(body) == {"status": "OK", "predictions": expected}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("plain", {"value": None, "values": [None, None, 1.5]}),
        ("numpy", {"value": None, "values": [1.0, None, None, None]}),
    ],
)
async def test_non_finite_numbers_are_null_with_a_schema(client, kind, expected):
    """The output is validated as the model returned it (its schema allows
    NaN), then sent with null in their place."""
    response = await client.post(
        "/v2/models/with_schema/predict/", params={"kind": kind}
    )
    assert response.status == 200
    assert strict_json(await response.read()) == expected
