"""A real headless Chromium for tests, driven over the DevTools protocol.

No extra dependency: the browser is Debian's ``chromium`` package (or any
Chrome on ``PATH``, or ``$DEEPAAS_TEST_CHROMIUM``), spoken to over
``--remote-debugging-pipe`` (JSON messages ended by NUL on file descriptors
3 and 4), so no port is opened and nothing but the standard library is
needed. Playwright would do the same with a 40 MB package and a driver of
its own; here the tests only navigate, evaluate JavaScript and read the
requests the page sent.

Tests use the ``browser`` fixture (a conftest imports it from here: the
access and dashboard tests share it), or call :func:`chromium_or_skip`,
then ``async with Browser.start(dir) as browser``. Every wait is for a
condition (a page event, a DOM state), with a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 20.0


def find_chromium() -> str | None:
    """The browser to run, or None."""
    given = os.environ.get("DEEPAAS_TEST_CHROMIUM")
    for name in (given,) if given else CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_or_skip() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip(
            "no Chromium: apt-get install chromium (or set DEEPAAS_TEST_CHROMIUM); "
            ".ci/run installs it"
        )
    return found


@pytest_asyncio.fixture(loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    """One headless Chromium per test module (skipped, saying why, without)."""
    chromium_or_skip()
    profile: Path = tmp_path_factory.mktemp("chromium")
    async with Browser.start(str(profile)) as started:
        yield started


class BrowserError(AssertionError):
    """The browser answered an error, or a page's script threw."""


class Browser:
    """One headless Chromium process and its DevTools connection."""

    def __init__(self, process: subprocess.Popen[bytes], to_browser: int) -> None:
        self.process = process
        self._to_browser = to_browser
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[tuple[str, str | None, asyncio.Queue[Any]]] = []
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, profile: str) -> AsyncIterator[Browser]:
        """A started browser with a fresh profile in ``profile``; stopped
        (its pid killed, then waited for) on exit."""
        executable = chromium_or_skip()
        ours_read, theirs_write = os.pipe()  # browser -> us (its fd 4)
        theirs_read, ours_write = os.pipe()  # us -> browser (its fd 3)

        # bash puts the pipes at descriptors 3 and 4 (dash cannot name a
        # descriptor past 9), then becomes the browser (the pid is its).
        redirect = f'exec "$0" "$@" 3<&{theirs_read} 4>&{theirs_write}'
        process = subprocess.Popen(
            [
                "bash",
                "-c",
                redirect,
                executable,
                "--headless",
                "--no-sandbox",  # tests may run as root, in containers
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(theirs_read, theirs_write),
            start_new_session=True,  # its helpers in its own process group
        )
        os.close(theirs_read)
        os.close(theirs_write)
        browser = cls(process, ours_write)
        browser._reader = asyncio.ensure_future(browser._read(ours_read))
        try:
            yield browser
        finally:
            browser._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await browser._reader
            os.close(ours_write)
            # The group this browser leads (its renderers and helpers): by its
            # id, which is the pid of the process started here.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.get_running_loop().run_in_executor(None, process.wait)

    async def _read(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 26)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
        )
        while True:
            raw = await reader.readuntil(b"\0")
            message = json.loads(raw[:-1])
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            for method, session, queue in self._listeners:
                if message.get("method") == method and (
                    session is None or message.get("sessionId") == session
                ):
                    queue.put_nowait(message.get("params", {}))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str = ""
    ) -> dict[str, Any]:
        """Send one DevTools command; its result (BrowserError if it failed)."""
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method}
        message["params"] = params or {}
        if session:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        answer = await asyncio.wait_for(future, TIMEOUT_S)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def listen(self, method: str, session: str | None = None) -> asyncio.Queue[Any]:
        """A queue of the parameters of every ``method`` event from now on."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._listeners.append((method, session, queue))
        return queue

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        for domain in ("Page", "Runtime", "Network"):
            await page.send(f"{domain}.enable")
        return page


class Page:
    """One tab: navigate, evaluate, wait for a condition, see its requests."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.requests = browser.listen("Network.requestWillBeSentExtraInfo", session)
        self._sent: list[dict[str, str]] = []
        self._will_send = browser.listen("Network.requestWillBeSent", session)
        self._urls: list[str] = []

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.browser.send(method, params, self.session)

    async def goto(self, url: str) -> None:
        """Open ``url`` and wait until the page has loaded."""
        loaded = self.browser.listen("Page.loadEventFired", self.session)
        answer = await self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"cannot open {url}: {answer['errorText']}")
        await asyncio.wait_for(loaded.get(), TIMEOUT_S)

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (a promise is awaited)."""
        answer = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details
            raise BrowserError(f"{expression[:80]}...: {text}")
        return answer["result"].get("value")

    async def wait_for(self, condition: str, timeout: float = TIMEOUT_S) -> Any:
        """Wait until the JavaScript ``condition`` is truthy in the page
        (checked on each animation frame, in the page); its value."""
        script = f"""new Promise((resolve, reject) => {{
            const deadline = Date.now() + {int(timeout * 1000)};
            const check = () => {{
                let value;
                try {{ value = ({condition}); }} catch (e) {{ value = undefined; }}
                if (value) return resolve(value instanceof Node ? true : value);
                if (Date.now() > deadline) return reject(
                    new Error("timed out waiting for: " + {json.dumps(condition)}));
                setTimeout(check, 10);
            }};
            check();
        }})"""
        return await asyncio.wait_for(self.evaluate(script), timeout + 5)

    def sent_headers(self) -> list[dict[str, str]]:
        """The headers of every request the page sent so far, as sent on the
        wire (the browser's own included), names in lower case."""
        while not self.requests.empty():
            params = self.requests.get_nowait()
            headers = {k.lower(): v for k, v in params.get("headers", {}).items()}
            self._sent.append(headers)
        return list(self._sent)

    def urls(self) -> list[str]:
        """The URL of every request the page sent so far, in order (the
        page itself, its assets, its scripts' calls)."""
        while not self._will_send.empty():
            self._urls.append(self._will_send.get_nowait()["request"]["url"])
        return list(self._urls)

    async def set_size(self, width: int, height: int) -> None:
        """The size of the page's window, in CSS pixels."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    async def screenshot(self, path: Path) -> None:
        """A PNG of what the page shows, written to ``path``."""
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))
