"""In a real headless Chromium (skipped, saying why, without one): Swagger UI's
Authorize button with tokens on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.access.browser import Browser, Page, chromium_or_skip
from tests.support import DEMO, Client, MakeClient

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

TOKENS = "p-secret predict"
OPERATION = "#operations-models-list_models"
CELL = ".live-responses-table tbody .response-col_status"
STATUS = f"document.querySelector('{OPERATION} {CELL}')"


@pytest_asyncio.fixture(loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    chromium_or_skip()
    profile: Path = tmp_path_factory.mktemp("chromium")
    async with Browser.start(str(profile)) as started:
        yield started


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
