"""The training dashboard in a real headless Chromium (skipped, saying why,
without one), over real trainings of ``tests/plugins/trainer``.

Every wait is for a state of the page (``window.dashboard``, a data
attribute, a text), with a deadline; never a sleep. Every test checks that
the page asked nothing of any other server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from deepaas.server import SERVER
from deepaas.training.record import DATE_FORMAT
from tests.browser import Browser, Page
from tests.deepaas_run import closed_at_end
from tests.support import Client, MakeClient, plugin_spec, training_ended
from tests.training.runserver import TRAIN, RunServer

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

TRAINER = plugin_spec("trainer")
TRAINER2 = plugin_spec("trainer2", "trainer")  # the same arguments, another model
BASE = "/v2/models/trainer/train/"
LOG = "document.querySelector('#log')"
#: The Cancel button is in the page, not shown (and not clickable).
HIDDEN_CANCEL = (
    "(b => b.hidden && b.disabled && b.offsetParent === null)"
    "(document.querySelector('button.cancel'))"
)


@pytest_asyncio.fixture(loop_scope="module")
async def state_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("state"))


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient, state_dir: str) -> Client:
    return await make_client(
        [TRAINER], state_dir=state_dir, devices="cpu", max_trainings=8
    )


async def start(client: Client, **args: Any) -> str:
    """Start a training of the trainer; its uuid."""
    response = await client.post(BASE, json=args)
    record = await response.json()
    assert response.status == 200, record
    uuid: str = record["uuid"]
    return uuid


def origin(client: Client) -> str:
    return f"http://{client.host}:{client.port}"


async def open_page(browser: Browser, client: Client, path: str = "") -> Page:
    page = await browser.new_page()
    await page.set_size(1200, 900)
    await page.goto(f"{origin(client)}/ui/trainings{path}")
    return page


def assert_local(page: Page, client: Client, prefix: str = "/") -> None:
    """Every request the page sent went to its own server, under ``prefix``."""
    urls = page.urls()
    assert urls, "the page sent no request"
    outside = [u for u in urls if not u.startswith(origin(client) + prefix)]
    assert not outside, f"requests outside the server: {outside}"


async def select(page: Page, node: str) -> str:
    """Select the contents of ``node`` (a JavaScript expression) as a user
    would to copy it; the text selected."""
    text = await page.evaluate(
        f"""(() => {{
            const range = document.createRange();
            range.selectNodeContents({node});
            getSelection().removeAllRanges();
            getSelection().addRange(range);
            return getSelection().toString();
        }})()"""
    )
    return str(text)


async def refreshed_twice(page: Page, counter: str, cell: str) -> None:
    """Wait until the page refreshed at least twice (``window.dashboard``'s
    ``counter``) and one of those changed ``cell`` (a running duration)."""
    count = await page.evaluate(f"window.dashboard.{counter}")
    before = await page.evaluate(f"{cell}.textContent")
    await page.wait_for(
        f"window.dashboard.{counter} >= {count + 2} && "
        f"{cell}.textContent !== {before!r}"
    )


async def close(page: Page) -> None:
    await page.browser.send("Target.closeTarget", {"targetId": await target(page)})


async def target(page: Page) -> str:
    info = await page.send("Target.getTargetInfo")
    return str(info["targetInfo"]["targetId"])


# -- the list ---------------------------------------------------------------------


async def test_it_lists_a_finished_and_a_running_training(
    client: Client, browser: Browser
) -> None:
    done = await start(client, mode="curve", steps=20)
    await training_ended(client, BASE + done)
    running = await start(client, mode="sleep", seconds=60)
    page = await open_page(browser, client)
    row = 'document.querySelector(\'tr[data-uuid="%s"][data-status="%s"]\')'
    await page.wait_for(f"{row % (done, 'done')} && {row % (running, 'running')}")
    cells = await page.evaluate(
        f"[...{row % (done, 'done')}.cells].map(c => c.textContent)"
    )
    status, uuid, started, duration, devices, args, _eta = cells
    assert (status, uuid, devices) == ("done", done, "cpu")
    assert started.startswith("20") and duration.endswith("s")
    assert "mode=curve" in args and "steps=20" in args
    await client.delete(BASE + running)
    assert_local(page, client)
    await close(page)


async def test_a_selection_in_the_list_survives_its_refreshes(
    client: Client, browser: Browser
) -> None:
    """The list is refreshed every two seconds: it was rebuilt, so a user
    selecting a training's uuid to copy it lost the selection."""
    uuid = await start(client, mode="sleep", seconds=60)
    page = await open_page(browser, client)
    row = f"document.querySelector('tr[data-uuid=\"{uuid}\"]')"
    await page.wait_for(f"{row}?.dataset.status === 'running'")
    link, duration = f"{row}.cells[1]", f"{row}.cells[3]"
    selected = await select(page, link)
    assert selected == uuid
    await refreshed_twice(page, "listed", duration)
    assert await page.evaluate("getSelection().toString()") == selected
    assert await page.evaluate("getSelection().anchorNode.isConnected")
    await client.delete(BASE + uuid)
    await page.wait_for(f"{row}?.dataset.status === 'cancelled'")
    assert await page.evaluate(f"{row}.cells[0].textContent") == "cancelled"
    assert_local(page, client)
    await close(page)


# -- one training -----------------------------------------------------------------


async def test_the_curve_of_20_reports_has_20_points_nan_a_gap_text_in_the_log(
    client: Client, browser: Browser, screenshot_dir: Path
) -> None:
    uuid = await start(client, mode="curve", steps=20)
    await training_ended(client, BASE + uuid)
    page = await open_page(browser, client, f"#trainer/{uuid}")
    chart = "document.querySelector('.chart[data-key=loss]')"
    await page.wait_for(f"{chart}?.dataset.points === '20'")
    assert await page.evaluate("window.dashboard.charts.loss") == {
        "points": 20,
        "gaps": 1,  # the NaN at step 3
    }
    assert await page.evaluate(f"{chart}.dataset.gaps") == "1"
    # the counters are the axis, the text is no curve
    keys = await page.evaluate(
        "[...document.querySelectorAll('.chart')].map(c => c.dataset.key)"
    )
    assert keys == ["loss"]
    await page.wait_for(f"{LOG}.dataset.ended === 'true'")
    log = await page.evaluate(f"{LOG}.textContent")
    assert "deepaas: report phase='warmup'" in log  # text: in the log view
    assert "deepaas: report phase='main'" in log
    assert await page.evaluate(HIDDEN_CANCEL)  # finished: no Cancel
    await page.screenshot(screenshot_dir / "dashboard-training.png")
    assert_local(page, client)
    await close(page)


async def test_curves_grow_while_it_runs_fetched_with_since(
    client: Client, browser: Browser
) -> None:
    uuid = await start(client, mode="curve", steps=20, seconds=0.3)
    page = await open_page(browser, client, f"#trainer/{uuid}")
    charts = "window.dashboard.charts"
    # seen while it runs, partial ...
    await page.wait_for(
        f"window.dashboard.status === 'running' && {charts}.loss?.points > 0"
    )
    partial = await page.evaluate(f"{charts}.loss.points")
    # step and total reported: an ETA, shown
    await page.wait_for(
        "window.dashboard.eta > 0 || window.dashboard.status === 'done'"
    )
    if await page.evaluate("window.dashboard.status") == "running":
        eta = await page.evaluate(
            "[...document.querySelectorAll('dl.record dt')]"
            ".find(dt => dt.textContent === 'ETA').nextElementSibling.textContent"
        )
        assert eta.endswith("s"), eta
    # ... then whole once it ended
    await page.wait_for(
        f"window.dashboard.status === 'done' && {charts}.loss?.points === 20", 30
    )
    assert partial < 20
    metrics = [u for u in page.urls() if "/metrics?" in u]
    cursors = [int(u.rsplit("since=", 1)[1]) for u in metrics]
    assert cursors[0] == 0 and max(cursors) > 0, cursors  # incremental
    assert_local(page, client)
    await close(page)


async def test_the_log_follows_a_running_training(
    client: Client, browser: Browser
) -> None:
    uuid = await start(client, mode="print", lines=12, seconds=0.25)
    page = await open_page(browser, client, f"#trainer/{uuid}")
    # a line arrives while it runs (streamed: the training has not ended) ...
    await page.wait_for(
        f"{LOG}?.textContent.includes('line 0') && "
        "window.dashboard.status === 'running'"
    )
    # ... and the rest as it is written, to the end
    await page.wait_for(f"{LOG}.dataset.ended === 'true'", 30)
    log = await page.evaluate(f"{LOG}.textContent")
    assert log.index("line 0") < log.index("line 11") < log.index("to stderr")
    assert await page.evaluate("window.dashboard.status") == "done"
    follows = [u for u in page.urls() if "/logs?" in u and "follow=true" in u]
    assert follows, page.urls()
    assert_local(page, client)
    await close(page)


async def test_cancel(client: Client, browser: Browser) -> None:
    uuid = await start(client, mode="sleep", seconds=60)
    page = await open_page(browser, client, f"#trainer/{uuid}")
    button = "document.querySelector('button.cancel')"
    await page.wait_for(
        f"window.dashboard.status === 'running' && !{button}.disabled && "
        f"{button}.offsetParent !== null"
    )
    await page.evaluate(f"{button}.click()")
    await page.wait_for("window.dashboard.status === 'cancelled'")
    record = await (await client.get(BASE + uuid)).json()
    assert record["status"] == "cancelled"
    await page.wait_for(HIDDEN_CANCEL)  # as the docs say: only while it runs
    assert_local(page, client)
    await close(page)


def cell(name: str) -> str:
    """The value cell of row ``name`` of the record panel (JavaScript)."""
    return (
        "[...document.querySelectorAll('dl.record dt')]"
        f".find(dt => dt.textContent === '{name}')?.nextElementSibling"
    )


async def test_a_selection_in_the_record_panel_survives_its_refreshes(
    client: Client, browser: Browser
) -> None:
    """The panel is shown again every second: it was rebuilt, so a user
    selecting a value to copy it lost the selection within a second."""
    uuid = await start(client, mode="sleep", seconds=60)
    page = await open_page(browser, client, f"#trainer/{uuid}")
    args, duration = cell("arguments"), cell("duration")
    await page.wait_for(
        f"window.dashboard.status === 'running' && {duration}?.textContent"
    )
    selected = await select(page, args)
    assert "mode=sleep" in selected and "seconds=60" in selected
    await refreshed_twice(page, "shown", duration)
    assert await page.evaluate("getSelection().toString()") == selected
    assert await page.evaluate(
        f"getSelection().rangeCount === 1 && "
        f"getSelection().getRangeAt(0).intersectsNode({args}) && "
        f"getSelection().anchorNode.isConnected"
    )
    await client.delete(BASE + uuid)
    await page.wait_for(f"{cell('status')}?.textContent === 'cancelled'")
    assert_local(page, client)
    await close(page)


#: 25 hours apart: a duration read from start_date as the browser's local
#: time was a day off.
SERVER_TZ, BROWSER_TZ = "Pacific/Pago_Pago", "Pacific/Kiritimati"  # -11, +14


async def test_a_running_duration_is_right_in_another_time_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server and the browser, each a process with its own TZ: the
    duration of a training that just started is seconds, in the list and
    in its view (start_date is the server's local time without a zone)."""
    loop = asyncio.get_running_loop()
    with closed_at_end(RunServer) as run:
        server = run(tmp_path, tmp_path / "state", env={"TZ": SERVER_TZ})
        await loop.run_in_executor(None, server.wait_ready)
        record = await loop.run_in_executor(
            None, lambda: server.submit(mode="sleep", seconds=60)
        )
        # the server is where it should be: its local time is UTC-11
        local = datetime.datetime.strptime(record["start_date"], DATE_FORMAT)
        instant = datetime.datetime.fromisoformat(record["start_time"])
        offset = local.replace(tzinfo=datetime.timezone.utc) - instant
        assert abs(offset + datetime.timedelta(hours=11)) < datetime.timedelta(
            seconds=1
        ), record
        async with contextlib.AsyncExitStack() as stack:
            with monkeypatch.context() as patch:
                patch.setenv("TZ", BROWSER_TZ)  # Chromium's, not this process's
                browser = await stack.enter_async_context(
                    Browser.start(str(tmp_path / "chromium"))
                )
            page = await browser.new_page()
            await page.goto(f"{server.url}/ui/trainings#trainer/{record['uuid']}")
            assert (
                await page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
                == BROWSER_TZ
            )
            # read as the browser's local time, start_date is a day off
            naive = await page.evaluate(
                f"(Date.now() - new Date({record['start_date'].replace(' ', 'T')!r}))"
                " / 3600e3"
            )
            assert abs(naive - 25) < 0.1, naive
            duration = cell("duration")
            await page.wait_for(
                f"window.dashboard.status === 'running' && {duration}?.textContent"
            )
            shown = await page.evaluate(f"{duration}.textContent")
            assert seconds(shown) < 60, shown
            await page.goto(f"{server.url}/ui/trainings")
            row = f"document.querySelector('tr[data-uuid=\"{record['uuid']}\"]')"
            await page.wait_for(f"{row}?.cells[3].textContent")
            listed = await page.evaluate(f"{row}.cells[3].textContent")
            assert seconds(listed) < 60, listed
        await loop.run_in_executor(
            None, lambda: server.request("DELETE", TRAIN + record["uuid"])
        )


def seconds(shown: str) -> float:
    """The seconds of a duration as the page shows it ("3.2s", "1m 07s",
    "25h 00m")."""
    match = re.fullmatch(r"(?:(\d+)h ?)?(?:(\d+)m ?)?(?:(\d+(?:\.\d)?)s)?", shown)
    assert match and shown, f"not a duration: {shown!r}"
    hours, minutes, secs = (float(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


async def test_an_unknown_training_is_a_clear_no_such_training(
    client: Client, browser: Browser
) -> None:
    page = await open_page(browser, client, "#trainer/" + "0" * 32)
    await page.wait_for("window.dashboard.view === 'missing'")
    text = await page.evaluate("document.querySelector('main').textContent")
    assert "No such training" in text and "0" * 32 in text
    page2 = await open_page(browser, client, "#nomodel/1234")
    await page2.wait_for("window.dashboard.view === 'missing'")
    assert_local(page, client)
    await close(page)
    await close(page2)


# -- the start form -----------------------------------------------------------------


async def test_the_start_form_is_made_from_the_spec_and_starts_a_training(
    client: Client, browser: Browser
) -> None:
    page = await open_page(browser, client)
    form = "document.querySelector('form.start[data-model=trainer]')"
    await page.wait_for(form)
    fields = await page.evaluate(
        f"[...{form}.querySelectorAll('[name]')]"
        ".map(n => [n.name, n.type, n.value, n.placeholder])"
    )
    assert fields == [
        ["mode", "text", "sleep", "default: sleep"],  # defaults, from the spec
        ["seconds", "number", "0", "default: 0"],
        ["steps", "number", "3", "default: 3"],
        ["lines", "number", "3", "default: 3"],
        ["data", "file", "", ""],  # a file argument: multipart when given
    ]  # no deepaas_gpus: this server has no GPU
    # the defaults are the fields' own: a reset brings them back
    await page.evaluate(
        f"(f => {{ f.querySelector('[name=steps]').value = '9'; f.reset(); }})({form})"
    )
    assert await page.evaluate(f"{form}.querySelector('[name=steps]').value") == "3"
    await page.evaluate(
        f"""(() => {{
            {form}.querySelector('[name=mode]').value = 'print';
            {form}.querySelector('[name=lines]').value = '2';
            {form}.querySelector('button.start').click();
        }})()"""
    )
    await page.wait_for("window.dashboard.view === 'job'")
    uuid = (await page.evaluate("location.hash")).split("/")[1]
    record = await training_ended(client, BASE + uuid)
    assert record["args"]["mode"] == "print" and record["args"]["lines"] == 2
    await page.wait_for(f"{LOG}?.textContent.includes('line 1')")
    assert_local(page, client)
    await close(page)


async def open_told_gpus(
    make_client: MakeClient, state_dir: str, browser: Browser
) -> tuple[Client, Page]:
    """Two models with the same arguments, on a page told that the server
    has 2 GPUs (it has none: a training asking for one is refused)."""
    client = await make_client(
        [TRAINER, TRAINER2], state_dir=state_dir, devices="cpu", max_trainings=2
    )
    scheduler = client.app[SERVER].trainings.scheduler
    real = scheduler.gpus
    scheduler.gpus = [object(), object()]  # models.json: "gpus": 2
    try:
        page = await open_page(browser, client)
        await page.wait_for("document.querySelectorAll('form.start').length === 2")
    finally:
        scheduler.gpus = real
    return client, page


async def test_two_forms_have_ids_of_their_own_and_gpus_come_last(
    make_client: MakeClient, state_dir: str, browser: Browser
) -> None:
    client, page = await open_told_gpus(make_client, state_dir, browser)
    for model in ("trainer", "trainer2"):
        form = f"document.querySelector('form.start[data-model={model}]')"
        names = await page.evaluate(
            f"[...{form}.querySelectorAll('[name]')].map(n => n.name)"
        )
        # the plugin's own fields, then the framework's
        assert names == ["mode", "seconds", "steps", "lines", "data", "deepaas_gpus"]
    ids = await page.evaluate("[...document.querySelectorAll('[id]')].map(e => e.id)")
    assert len(ids) == len(set(ids)), ids
    assert "arg/trainer2/deepaas_gpus" in ids
    # every label of a form names an input of that form
    labels = await page.evaluate(
        "[...document.querySelectorAll('form.start label')].map(l => "
        "[l.closest('form').dataset.model, l.control?.form?.dataset.model, "
        "l.textContent, l.control?.name])"
    )
    assert len(labels) == 12
    for model, owner, text, name in labels:
        assert owner == model and text.rstrip(" *") == name, labels
    # a click on the second form's label focuses the second form's input
    focused = await page.evaluate(
        """(() => {
            const form = document.querySelector('form.start[data-model=trainer2]');
            form.closest('details').open = true;
            [...form.querySelectorAll('label')]
                .find(l => l.textContent === 'steps').click();
            const node = document.activeElement;
            return [node.form.dataset.model, node.name];
        })()"""
    )
    assert focused == ["trainer2", "steps"]
    assert_local(page, client)
    await close(page)


async def test_the_start_form_sends_a_file_as_multipart(
    client: Client, browser: Browser, tmp_path: Path
) -> None:
    upload = tmp_path / "train.csv"
    upload.write_text("a,b\n1,2\n")
    page = await open_page(browser, client)
    form = "form.start[data-model=trainer]"
    await page.wait_for(f"document.querySelector('{form}')")
    document = await page.send("DOM.getDocument")
    found = await page.send(
        "DOM.querySelector",
        {"nodeId": document["root"]["nodeId"], "selector": f"{form} [name=data]"},
    )
    await page.send(
        "DOM.setFileInputFiles", {"nodeId": found["nodeId"], "files": [str(upload)]}
    )
    await page.evaluate(
        f"""(() => {{
            const form = document.querySelector('{form}');
            form.querySelector('[name=mode]').value = 'file';
            form.querySelector('button.start').click();
        }})()"""
    )
    await page.wait_for("window.dashboard.view === 'job'")
    uuid = (await page.evaluate("location.hash")).split("/")[1]
    record = await training_ended(client, BASE + uuid)
    assert record["status"] == "done", record
    output = record["result"]["output"]
    assert output["content"] == "a,b\n1,2\n"
    assert output["original_filename"] == "train.csv"
    assert_local(page, client)
    await close(page)


async def test_the_start_form_shows_why_a_training_is_refused(
    make_client: MakeClient, state_dir: str, browser: Browser
) -> None:
    client, page = await open_told_gpus(make_client, state_dir, browser)
    form = "document.querySelector('form.start[data-model=trainer]')"
    await page.evaluate(
        f"""(() => {{
            {form}.querySelector('[name=deepaas_gpus]').value = '3';
            {form}.querySelector('button.start').click();
        }})()"""
    )
    error = await page.wait_for(
        f"!{form}.querySelector('.error').hidden && "
        f"{form}.querySelector('.error').textContent"
    )
    assert error.startswith("422: ") and "GPU" in error, error
    assert await page.evaluate("window.dashboard.view") == "list"
    assert_local(page, client)
    await close(page)


# -- tokens, base path, draining -------------------------------------------------------


async def test_with_a_token_typed_in_the_page(
    make_client: MakeClient, state_dir: str, browser: Browser
) -> None:
    client = await make_client(
        [TRAINER, TRAINER2],
        state_dir=state_dir,
        devices="cpu",
        auth_tokens="t-secret train",
    )
    page = await open_page(browser, client)
    problem = "document.querySelector('#problem')"
    said = await page.wait_for(
        f"window.dashboard.view === 'list' && !{problem}.hidden && "
        f"{problem}.textContent"
    )
    # one line for the two models, said to a browser user (not curl advice)
    assert said == "Type a token with the train scope in the Token field.", said
    # a wrong token: said so, once
    await page.evaluate(
        """(() => {
            document.querySelector('#token').value = 't-wrong';
            document.querySelector('#token-form button[type=submit]').click();
        })()"""
    )
    said = await page.wait_for(
        f"{problem}.textContent.startsWith('This token') && {problem}.textContent"
    )
    assert said == (
        "This token is not accepted. Type a token with the train scope in the "
        "Token field."
    ), said
    await page.evaluate(
        """(() => {
            document.querySelector('#token').value = 't-secret';
            document.querySelector('#token-form button[type=submit]').click();
        })()"""
    )
    await page.wait_for(
        f"window.dashboard.view === 'list' && {problem}.hidden && "
        "document.querySelector('section[data-model=trainer] tbody tr')"
    )
    assert await page.evaluate("sessionStorage.getItem('deepaas-token')") == "t-secret"
    sent = [h["authorization"] for h in page.sent_headers() if "authorization" in h]
    assert sent and sent[-1] == "Bearer t-secret"
    assert set(sent) == {"Bearer t-wrong", "Bearer t-secret"}
    assert_local(page, client)
    await close(page)


async def test_under_a_base_path(
    make_client: MakeClient, state_dir: str, browser: Browser
) -> None:
    client = await make_client(
        [TRAINER], state_dir=state_dir, devices="cpu", base_path="/lab/one"
    )
    done = await start_at(client, "/lab/one", mode="curve", steps=20)
    page = await browser.new_page()
    await page.goto(f"{origin(client)}/lab/one/ui/trainings")
    link = f"document.querySelector('tr[data-uuid=\"{done}\"] a')"
    await page.wait_for(link)
    await page.evaluate(f"{link}.click()")
    await page.wait_for("window.dashboard.charts.loss?.points === 20")
    assert_local(page, client, "/lab/one/")
    await close(page)


async def start_at(client: Client, base_path: str, **args: Any) -> str:
    response = await client.post(f"{base_path}{BASE}", json=args)
    assert response.status == 200, await response.text()
    uuid: str = (await response.json())["uuid"]
    await training_ended(client, f"{base_path}{BASE}{uuid}")
    return uuid


async def test_opened_while_the_server_drains_it_says_so(
    make_client: MakeClient, state_dir: str, browser: Browser
) -> None:
    # a client of its own (its settings differ): it is left draining
    client = await make_client(
        [TRAINER], state_dir=state_dir, devices="cpu", train_cancel_grace=2.0
    )
    client.app[SERVER].lifecycle.drain()
    page = await open_page(browser, client)
    banner = "document.querySelector('#banner')"
    said = await page.wait_for(f"!{banner}.hidden && {banner}.textContent")
    assert "shutting down" in said, said
    assert await page.evaluate("window.dashboard.draining") is True
    # a start is refused, and the form says why
    form = "document.querySelector('form.start[data-model=trainer]')"
    await page.wait_for(form)
    await page.evaluate(f"{form}.querySelector('button.start').click()")
    error = await page.wait_for(
        f"!{form}.querySelector('.error').hidden && "
        f"{form}.querySelector('.error').textContent"
    )
    assert error.startswith("503: "), error
    assert_local(page, client)
    await close(page)
