"""In a real headless Chromium (skipped, saying why, without one): Swagger UI
at /api, which reads /swagger.json, calls a plugin whose structured
arguments name no location (issue 15) -- a matrix, a dict, a Nested, a
list of Nested -- beside a file, as a user fills its form.

/swagger.json describes them as DEEPaaS 2.6.0 did: a matrix as an array of
arrays (repeated ``?matrix=1,2&matrix=3,4.5``: the inner arrays are
Swagger 2.0's default ``csv``), the others as JSON text. The server reads
what Swagger UI sends from that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deepaas.model.loading import PluginSpec
from tests.browser import Browser, Page
from tests.support import Client, MakeClient

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

OPERATION = "#operations-models-predict_structured"
CELL = f"{OPERATION} .live-responses-table tbody .response-col_status"
ANSWER = f"{OPERATION} .live-responses-table .response-col_description pre"


def query(selector: str, index: int | None = None) -> str:
    if index is None:
        return f"document.querySelector({selector!r})"
    return f"document.querySelectorAll({selector!r})[{index}]"


async def click(page: Page, selector: str) -> None:
    await page.wait_for(query(selector))
    await page.evaluate(f"{query(selector)}.click()")


async def count(page: Page, selector: str) -> int:
    value: int = await page.evaluate(f"document.querySelectorAll({selector!r}).length")
    return value


async def type_into(page: Page, selector: str, index: int, text: str) -> None:
    """Type into an input React controls (as a user's keys would), then wait
    until Swagger UI holds the value (its inputs are debounced)."""
    await page.evaluate(
        f"""(() => {{
            const input = {query(selector, index)};
            const set = Object.getOwnPropertyDescriptor(
                HTMLInputElement.prototype, "value").set;
            set.call(input, {text!r});
            input.dispatchEvent(new Event("input", {{bubbles: true}}));
        }})()"""
    )
    held = "JSON.stringify(window.ui.getState().toJS().spec.meta)"
    await page.wait_for(f"{held}.includes({json.dumps(json.dumps(text)[1:-1])})")


async def add_item(page: Page, array: str, expect: int) -> None:
    """Press an array's "Add item" button; wait for its ``expect``-th item."""
    await click(page, f"{array} > button.json-schema-form-item-add")
    await page.wait_for(
        f"document.querySelectorAll('{array} > .json-schema-form-item').length"
        f" == {expect}"
    )


async def choose_file(page: Page, selector: str, path: Path) -> None:
    found = await page.send("Runtime.evaluate", {"expression": query(selector)})
    await page.send(
        "DOM.setFileInputFiles",
        {"files": [str(path)], "objectId": found["result"]["objectId"]},
    )


async def test_swagger_ui_sends_a_matrix_objects_and_a_file(
    make_client: MakeClient, browser: Browser, tmp_path: Path
) -> None:
    client: Client = await make_client(
        [PluginSpec("structured", "deepaas_example.structured")]
    )
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG not really")
    page = await browser.new_page()
    await page.goto(f"http://{client.host}:{client.port}/api")
    await click(page, f"{OPERATION} .opblock-summary-control")
    await click(page, f"{OPERATION} .try-out__btn")

    def row(name: str) -> str:
        return f'{OPERATION} tr[data-param-name="{name}"]'

    # the matrix: two rows of two numbers, in Swagger UI's array editor
    matrix = f"{row('matrix')} td > .json-schema-array"
    for n in (1, 2):
        await add_item(page, matrix, n)
    for k in (1, 2):
        inner = f"{matrix} > .json-schema-form-item:nth-child({k}) .json-schema-array"
        for n in (1, 2):
            await add_item(page, inner, n)
    assert await count(page, f"{row('matrix')} input") == 4
    for index, number in enumerate(["1", "2", "3", "4.5"]):
        await type_into(page, f"{row('matrix')} input", index, number)
    # the objects: JSON text, one per box
    await type_into(page, f"{row('options')} input", 0, '{"mode": "fast"}')
    await type_into(page, f"{row('roi')} input", 0, '{"x": 0, "y": 0, "w": 2, "h": 3}')
    boxes = f"{row('boxes')} td > .json-schema-array"
    await add_item(page, boxes, 1)
    box = '{"x": 1, "y": 1, "w": 1, "h": 1}'
    await type_into(page, f"{row('boxes')} input", 0, box)
    await choose_file(page, f"{row('image')} input[type=file]", image)

    await click(page, f"{OPERATION} .execute")
    status = await page.wait_for(f"{query(CELL)}?.textContent.trim()")
    answer: Any = json.loads(await page.evaluate(f"{query(ANSWER)}.textContent"))
    assert status == "200", answer
    assert answer["predictions"] == {
        "rows": 2,
        "sum": 10.5,
        "options": {"mode": "fast"},
        "roi_area": 6.0,
        "box_areas": [1.0],
        "image": {"name": "cat.png", "bytes": 15},
    }
