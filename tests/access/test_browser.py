"""In a real headless Chromium (skipped, saying why, without one): Swagger UI's
Authorize button with tokens on, and CORS from a page on another origin."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from deepaas.api import METRICS
from tests.browser import Browser, Page
from tests.support import DEMO, Client, MakeClient

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

TOKENS = "p-secret predict"
OPERATION = "#operations-models-list_models"
CELL = ".live-responses-table tbody .response-col_status"
STATUS = f"document.querySelector('{OPERATION} {CELL}')"


async def click(page: Page, selector: str) -> None:
    """Wait for ``selector`` to be in the page, then click it."""
    query = f"document.querySelector({selector!r})"
    await page.wait_for(query)
    await page.evaluate(f"{query}.click()")


async def type_into(page: Page, selector: str, text: str) -> None:
    """Type ``text`` into an input React controls (as a user's keys would)."""
    await page.wait_for(f"document.querySelector({selector!r})")
    await page.evaluate(
        f"""(() => {{
            const input = document.querySelector({selector!r});
            const set = Object.getOwnPropertyDescriptor(
                HTMLInputElement.prototype, "value").set;
            set.call(input, {text!r});
            input.dispatchEvent(new Event("input", {{bubbles: true}}));
        }})()"""
    )


async def execute(page: Page) -> str:
    """Press Execute on the model listing; the status code the UI shows."""
    await page.evaluate(f"document.querySelector('{OPERATION} .btn-clear')?.click()")
    await page.wait_for(f"!{STATUS}")
    await click(page, f"{OPERATION} .execute")
    status: str = await page.wait_for(f"{STATUS}?.textContent.trim()")
    return status


async def test_swagger_ui_authorize_button_sends_the_token(
    make_client: MakeClient, browser: Browser
) -> None:
    client: Client = await make_client([DEMO], auth_tokens=TOKENS)
    page = await browser.new_page()
    await page.goto(f"http://{client.host}:{client.port}/api")
    await click(page, f"{OPERATION} .opblock-summary-control")
    await click(page, f"{OPERATION} .try-out__btn")
    assert await execute(page) == "401"
    assert "authorization" not in page.sent_headers()[-1]

    await click(page, ".btn.authorize")
    await type_into(page, ".auth-container input", "p-secret")  # no "Bearer "
    await click(page, ".auth-btn-wrapper button[type=submit]")
    await page.wait_for(
        "document.querySelector('.auth-container')?.textContent.includes('Authorized')"
    )
    await click(page, ".auth-btn-wrapper .btn-done")
    await page.wait_for("!document.querySelector('.modal-ux')")

    assert await execute(page) == "200"
    assert page.sent_headers()[-1]["authorization"] == "Bearer p-secret"
    assert await page.evaluate(
        "document.querySelector('.btn.authorize.locked') !== null"
    )


# -- CORS: a page on another origin -------------------------------------------

PAGE = "<!DOCTYPE html><html><head><title>another origin</title></head></html>"

FETCH = """(async () => {
    try {
        const options = {method: %(method)s, headers: %(headers)s};
        const response = await fetch(%(url)s, options);
        return {
            status: response.status,
            body: await response.json(),
            requestId: response.headers.get("X-Request-ID"),
            challenge: response.headers.get("WWW-Authenticate"),
        };
    } catch (error) {
        return {error: String(error)};
    }
})()"""


@pytest_asyncio.fixture(loop_scope="module")
async def page_server() -> AsyncIterator[TestServer]:
    """A server of one page, on an origin of its own (its port)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/page", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def fetch(api: str, path: str, method: str = "GET", **headers: str) -> str:
    return FETCH % {
        "url": json.dumps(api + path),
        "method": json.dumps(method),
        "headers": json.dumps(headers),
    }


async def api_and_page(
    make_client: MakeClient, browser: Browser, page_server: TestServer, host: str
) -> tuple[Client, str, Page]:
    """The API, allowing the page server's 127.0.0.1 origin, its address,
    and a page loaded from ``host`` on the page server."""
    allowed = f"http://127.0.0.1:{page_server.port}"
    client: Client = await make_client(
        [DEMO], auth_tokens=TOKENS, cors_origin=(allowed,)
    )
    page = await browser.new_page()
    await page.goto(f"http://{host}:{page_server.port}/page")
    return client, f"http://127.0.0.1:{client.port}", page


async def test_a_page_of_an_allowed_origin_calls_the_api(
    make_client: MakeClient, browser: Browser, page_server: TestServer
) -> None:
    client, api, page = await api_and_page(
        make_client, browser, page_server, "127.0.0.1"
    )
    requests = client.app[METRICS].requests

    # The Authorization header makes the browser send a preflight first.
    answer = await page.evaluate(
        fetch(
            api,
            "/v2/models/demo/predict/?number=3",
            "POST",
            Authorization="Bearer p-secret",
            **{"X-Request-ID": "from-the-page"},
        )
    )
    assert answer["status"] == 200, answer
    assert answer["body"]["args"]["number"] == 3  # the demo's JSON, read
    assert answer["requestId"] == "from-the-page"  # an exposed header, read
    assert requests.value("", "other", "204") >= 1  # the preflight, answered

    # An error is readable too: its JSON and why
    answer = await page.evaluate(fetch(api, "/v2/models/"))
    assert answer["status"] == 401, answer
    assert "Bearer <token>" in answer["body"]["message"]
    assert answer["challenge"] == 'Bearer realm="deepaas"'
    assert len(answer["requestId"]) == 32  # made by the server


async def test_a_page_of_another_origin_cannot_read_the_api(
    make_client: MakeClient, browser: Browser, page_server: TestServer
) -> None:
    _, api, page = await api_and_page(
        make_client,
        browser,
        page_server,
        "localhost",  # another origin
    )
    answer = await page.evaluate(fetch(api, "/healthz"))  # a simple request
    assert "Failed to fetch" in answer.get("error", ""), answer
    answer = await page.evaluate(
        fetch(api, "/v2/models/", Authorization="Bearer p-secret")  # preflighted
    )
    assert "Failed to fetch" in answer.get("error", ""), answer
