"""Whether the training dashboard stays responsive on a long, busy training.

Issue 17's number: "a job reporting 10 values per second for 10 minutes:
the page stays responsive (metrics fetched incrementally)". No 10-minute
wait: ``deepaas-run`` serves ``dashboard_plugin/`` (as a file, nothing is
installed), whose ``train()`` first reports a backlog of 6,000 reports as
fast as it can (what 10 minutes at 10 a second leave in the history), then
10 a second, live. Once the backlog is stored, headless Chromium opens the
job view (``/ui/trainings#bench_dashboard/UUID``, through ``tests/browser.py``'s
DevTools driver) and, over ``--live-seconds`` of the live reports, measures:

- main-thread long tasks (a ``PerformanceObserver`` for ``longtask``, set
  before the page's scripts run): how many, the longest;
- input latency: twice a second a mouse move over the loss chart (uPlot's
  cursor follows it) and a click (on the chart's title), sent as real input
  (``Input.dispatchMouseEvent``, answered once the page has handled it),
  timed from here; and the frame latency (in the page, the time from a
  task to the next ``requestAnimationFrame``);
- the bytes of each ``/metrics`` poll (``Network.loadingFinished``) and
  its ``since`` cursor: after the first load, only the new reports;
- the points on the charts at the end (``window.dashboard.charts``),
  against the first load's points (downsampled by the server to at most
  1,000 a curve, docs/training.md) plus every report after it.

Then it cancels the training, closes the browser and stops the server (by
pid); its files were in a temporary folder, removed.

    .venv/bin/python benchmarks/dashboard_responsive.py                 # 60 s live
    .venv/bin/python benchmarks/dashboard_responsive.py --live-seconds 15

Exit status 0 when every goal is met, 1 when one is missed (``--strict``
only; else 0), 2 when it cannot measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from _harness import (
    BenchError,
    Server,
    deepaas_env,
    deepaas_run_path,
    free_ports,
    get,
    post,
    wait_answers,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser import Browser, Page, find_chromium

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "dashboard_plugin" / "deepaas_bench_dashboard.py"
MODEL = "bench_dashboard"
CURVES = ("loss", "acc", "lr", "grad_norm")  # step and total are the x axis
SERVER_MAX_POINTS = 1000  # the server's default ?max_points= (docs/training.md)
PAGE_MAX_POINTS = 5000  # past this a curve is read again (docs/training.md)
HEADROOM_S = 30.0  # the training reports this long past the window, then is cancelled

# Goals (issue 17: "the page stays responsive, metrics fetched incrementally").
LONG_TASK_GOAL_MS = 200.0  # no main-thread task longer, during the live window
LATENCY_P99_GOAL_MS = 100.0  # input and frame latency, p99
POLL_BYTES_GOAL = 8 * 1024  # a poll after the first: only the new reports

OBSERVER = """
window.__bench = { longtasks: [], events: [] };
new PerformanceObserver((list) => {
  for (const e of list.getEntries())
    window.__bench.longtasks.push([e.startTime, e.duration]);
}).observe({ type: "longtask", buffered: true });
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      window.__bench.events.push([e.name, e.startTime, e.duration]);
  }).observe({ type: "event", durationThreshold: 16, buffered: true });
} catch (error) {}
"""

FRAME = """new Promise((resolve) => {
  const t = performance.now();
  requestAnimationFrame(() => resolve(performance.now() - t));
})"""


PROBE = """new Promise((resolve) => setTimeout(() => {
  const t = performance.now();
  while (performance.now() - t < 120) {}
  setTimeout(() => resolve(window.__bench.longtasks
    .filter(([start]) => start >= t - 20).map(([, duration]) => duration)), 300);
}, 0))"""


def stage(text: str) -> None:
    """Say what the run is at (stderr), with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


class Polls:
    """Every ``/metrics`` answer the page read: cursor asked, bytes on the
    wire, and its JSON (read back with ``Network.getResponseBody``)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.sent = page.browser.listen("Network.requestWillBeSent", page.session)
        self.done = page.browser.listen("Network.loadingFinished", page.session)
        self.urls: dict[str, str] = {}
        self.seen: list[dict[str, Any]] = []  # since, bytes, body, at (monotonic)
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            finished = await self.done.get()
            while not self.sent.empty():
                params = self.sent.get_nowait()
                self.urls[params["requestId"]] = params["request"]["url"]
            url = self.urls.get(finished["requestId"], "")
            if "/metrics?" not in url:
                continue
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
            entry: dict[str, Any] = {
                "since": int(query.get("since", ["0"])[0]),
                "bytes": int(finished.get("encodedDataLength", 0)),
                "at": time.monotonic(),
                "body": None,
            }
            with contextlib.suppress(Exception):
                answer = await self.page.send(
                    "Network.getResponseBody", {"requestId": finished["requestId"]}
                )
                entry["body"] = json.loads(answer["body"])
            self.seen.append(entry)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def rect(page: Page, selector: str) -> dict[str, float]:
    """The box of ``selector`` in the viewport (CSS pixels)."""
    box: dict[str, float] = await page.evaluate(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
        ".getBoundingClientRect();"
        " return {x: r.x, y: r.y, w: r.width, h: r.height}; })()"
    )
    return box


async def timed(coro: Any) -> float:
    """Milliseconds ``coro`` took to answer."""
    began = time.perf_counter()
    await coro
    return (time.perf_counter() - began) * 1000


async def mouse(page: Page, kind: str, x: float, y: float) -> None:
    params: dict[str, Any] = {"type": kind, "x": x, "y": y}
    if kind != "mouseMoved":
        params.update(button="left", clickCount=1)
    await page.send("Input.dispatchMouseEvent", params)


async def watch(args: argparse.Namespace, base: str, profile: str) -> dict[str, Any]:
    """Start the training, open its page, measure; the figures."""
    train = f"{base}/v2/models/{MODEL}/train/"
    live = args.live_seconds + HEADROOM_S
    body = {"backlog": args.backlog, "rate": args.rate, "live": live}
    status, raw = post(
        train,
        headers={"Content-Type": "application/json"},
        data=json.dumps(body).encode(),
    )
    if status != 200:
        raise BenchError(f"POST {train}: {status} {raw[:300]!r}")
    uuid = json.loads(raw)["uuid"]
    began = time.monotonic()
    while True:  # the backlog is reported (and will be stored) ...
        record = json.loads(get(train + uuid, timeout=30)[1])
        if (record.get("progress") or {}).get("step", 0) >= args.backlog:
            break
        if record["status"] in ("done", "error", "cancelled"):
            raise BenchError(f"the training ended: {record}")
        if time.monotonic() - began > 120:
            raise BenchError(f"no backlog within 120 s: {record}")
        await asyncio.sleep(0.2)
    backlog_s = time.monotonic() - began
    stage(f"backlog of {args.backlog} reports in {backlog_s:.1f} s; opening the page")
    figures: dict[str, Any] = {"uuid": uuid, "backlog_s": backlog_s}

    async with Browser.start(profile) as browser:
        page = await browser.new_page()
        await page.send("Page.addScriptToEvaluateOnNewDocument", {"source": OBSERVER})
        polls = Polls(page)
        await page.set_size(1200, 900)
        opened = time.monotonic()
        await page.goto(f"{base}/ui/trainings#{MODEL}/{uuid}")
        curves = " && ".join(f"window.dashboard.charts.{k}?.points > 0" for k in CURVES)
        await page.wait_for(curves, 60)
        figures["first_draw_s"] = time.monotonic() - opened
        await page.evaluate(
            "document.querySelector('.chart[data-key=loss]')"
            ".scrollIntoView({block: 'center'})"
        )
        plot = await rect(page, ".chart[data-key=loss] .u-over")
        title = await rect(page, ".chart[data-key=loss] h3")
        stage(f"curves drawn; measuring {args.live_seconds:g} s of live reports")
        window_from = await page.evaluate("performance.now()")
        hover: list[float] = []
        click: list[float] = []
        frame: list[float] = []
        frame_rtt: list[float] = []
        start = time.monotonic()
        step = 0
        while time.monotonic() - start < args.live_seconds:
            x = plot["x"] + plot["w"] * ((step % 20) + 0.5) / 20
            y = plot["y"] + plot["h"] / 2
            hover.append(await timed(mouse(page, "mouseMoved", x, y)))
            tx, ty = title["x"] + 10, title["y"] + title["h"] / 2
            await mouse(page, "mouseMoved", tx, ty)
            click.append(
                await timed(mouse(page, "mousePressed", tx, ty))
                + await timed(mouse(page, "mouseReleased", tx, ty))
            )
            began = time.perf_counter()
            frame.append(await page.evaluate(FRAME))
            frame_rtt.append((time.perf_counter() - began) * 1000)
            step += 1
            due = start + step * 0.5
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        window_to = await page.evaluate("performance.now()")
        figures["window_s"] = time.monotonic() - start
        window_end = time.monotonic()
        # The observer works here: a 120 ms task of ours, after the window.
        probe = await page.evaluate(PROBE)
        bench = await page.evaluate("window.__bench")
        charts_live = await page.evaluate("window.dashboard.charts")

        # Cancel; the page reads the record and the metrics once more.
        req = urllib.request.Request(train + uuid, method="DELETE")
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: urllib.request.urlopen(req, timeout=30).read()
        )
        await page.wait_for("window.dashboard.status === 'cancelled'", 30)
        stage("cancelled; reading every report from the server")
        everything = f"{train}{uuid}/metrics?since=0&max_points=10000"
        truth = json.loads(get(everything, timeout=60)[1])
        reports = int(truth["reports"])
        await asyncio.sleep(2.5)  # the page's last poll, a second after it saw the end
        charts_end = await page.evaluate("window.dashboard.charts")
        await polls.stop()

    figures.update(
        hover=hover,
        click=click,
        frame=frame,
        frame_rtt=frame_rtt,
        longtasks=bench["longtasks"],
        events=bench["events"],
        window=(window_from, window_to),
        probe=probe,
        window_end=window_end,
        polls=polls.seen,
        charts_live=charts_live,
        charts_end=charts_end,
        reports=reports,
    )
    return figures


def report(args: argparse.Namespace, f: dict[str, Any]) -> bool:
    """Print the figures and a PASS/FAIL line per goal; True if all pass."""
    ok = True

    def verdict(name: str, passed: bool, detail: str) -> None:
        nonlocal ok
        ok = ok and passed
        print(f"{'PASS' if passed else 'FAIL'}: {name} ({detail})")

    print(
        f"training: {args.backlog} reports of 6 numbers as fast as it can "
        f"({f['backlog_s']:.1f} s), then {args.rate:g}/s live"
    )
    print(f"page: first draw of the 4 curves {f['first_draw_s']:.1f} s after open")
    lo, hi = f["window"]
    tasks = f["longtasks"]
    during = [d for s, d in tasks if lo <= s < hi]
    before = [d for s, d in tasks if s < lo]
    print(
        f"live window: {f['window_s']:.1f} s ({len(f['hover'])} samples); "
        f"long tasks (>50 ms) during it: {len(during)}, longest "
        f"{max(during, default=0):.0f} ms, total {sum(during):.0f} ms"
    )
    print(
        f"  while loading (before the window): {len(before)}, longest "
        f"{max(before, default=0):.0f} ms"
    )
    seen = max(f["probe"], default=0)
    print(
        f"  the observer's check: a 120 ms task of ours, after the window, seen as "
        f"{seen:.0f} ms"
    )
    for name, values in (
        ("hover over the chart (input round trip)", f["hover"]),
        ("click (press + release round trip)", f["click"]),
        ("frame latency (task to next frame, in the page)", f["frame"]),
        ("evaluate round trip (queued behind the page's tasks)", f["frame_rtt"]),
    ):
        print(
            f"  {name}: p50 {pct(values, 50):.1f} ms, p99 {pct(values, 99):.1f} ms, "
            f"max {max(values, default=math.nan):.1f} ms"
        )
    events = [e for e in f["events"] if lo <= e[1] < hi]
    longest = max(events, key=lambda e: e[2], default=None)
    over = sum(1 for e in events if e[2] > 50)
    print(
        f"  input events to next paint (Event Timing, those >= 16 ms): "
        f"{len(events)}, over 50 ms: {over}"
        + (f", longest {longest[2]:.0f} ms ({longest[0]})" if longest else "")
    )

    polls = f["polls"]
    first = polls[0] if polls else None
    later = [p for p in polls[1:] if p["at"] <= f["window_end"]]
    if first and first["body"]:
        body = first["body"]
        points = {k: len(body["series"].get(k, [])) for k in CURVES}
        print(
            f"first /metrics (since={first['since']}): {first['bytes'] / 1024:.0f} KB, "
            f"{body['reports']} reports, downsampled {body['downsampled']}, "
            f"points a curve {sorted(set(points.values()))}, series "
            f"{sorted(body['series'])}"
        )
    else:
        points = {}
    sizes = [p["bytes"] for p in later]
    new = [p["body"]["reports"] for p in later if p["body"]]
    restarts = sum(1 for p in polls[1:] if p["since"] == 0)
    if sizes:
        print(
            f"polls after it in the window: {len(sizes)}, bytes p50 "
            f"{statistics.median(sizes):.0f} max {max(sizes)}, new reports a poll "
            f"p50 {statistics.median(new):.0f} max {max(new)}; read again whole: "
            f"{restarts}"
        )
    print(
        "charts at the end of the window: "
        + ", ".join(f"{k} {v['points']}" for k, v in f["charts_live"].items())
    )
    print(
        "charts after the cancel: "
        + ", ".join(f"{k} {v['points']}" for k, v in f["charts_end"].items())
        + f" (the training reported {f['reports']})"
    )

    verdict(
        f"no long task over {LONG_TASK_GOAL_MS:.0f} ms in the live window",
        max(during, default=0) <= LONG_TASK_GOAL_MS and seen >= 100,
        f"longest {max(during, default=0):.0f} ms",
    )
    worst = max(pct(f["hover"], 99), pct(f["click"], 99), pct(f["frame"], 99))
    verdict(
        f"input and frame latency p99 under {LATENCY_P99_GOAL_MS:.0f} ms",
        worst < LATENCY_P99_GOAL_MS,
        f"hover {pct(f['hover'], 99):.0f}, click {pct(f['click'], 99):.0f}, "
        f"frame {pct(f['frame'], 99):.0f} ms",
    )
    verdict(
        f"polls after the first fetch only new reports (since > 0, "
        f"<= {POLL_BYTES_GOAL // 1024} KB)",
        bool(sizes) and restarts == 0 and max(sizes) <= POLL_BYTES_GOAL,
        f"{len(sizes)} polls, max {max(sizes, default=0)} B, {restarts} read again",
    )
    if points and first and first["body"]:
        after = f["reports"] - int(first["body"]["reports"])
        want = {k: points[k] + after for k in CURVES}
        got = {k: f["charts_end"].get(k, {}).get("points") for k in CURVES}
        bounded = all(points[k] <= SERVER_MAX_POINTS for k in CURVES)
        verdict(
            "charts hold every report (first load downsampled to at most "
            f"{SERVER_MAX_POINTS} a curve, then every one)",
            got == want and bounded,
            f"{got} for {want} = first load + {after} reports after it",
        )
    else:
        verdict("charts hold every report", False, "the first /metrics was not read")
    return ok


async def run(args: argparse.Namespace) -> dict[str, Any]:
    (port,) = free_ports(1)
    with tempfile.TemporaryDirectory(prefix="deepaas-bench-dashboard-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        server = Server(
            label="deepaas",
            argv=[
                str(deepaas_run_path()),
                "--listen-port",
                str(port),
                "--state-dir",
                str(state),
                "--devices",
                "cpu",
                "--plugin",
                f"{MODEL}={PLUGIN}",
            ],
            env=deepaas_env("auto"),
            port=port,
            workdir=Path(tmp),
        )
        server.start()
        try:
            wait_answers(server, "/readyz", 60)
            return await watch(
                args, f"http://127.0.0.1:{port}", str(Path(tmp) / "profile")
            )
        finally:
            left = server.stop()
            if left:
                print(f"WARNING: processes left: {left}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--live-seconds",
        type=float,
        default=60.0,
        help="the measured window of live reports (default: %(default)s)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=6000,
        help="reports before the page opens (default: %(default)s, 10 min at 10/s)",
    )
    parser.add_argument(
        "--rate", type=float, default=10.0, help="live reports a second (default: 10)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a goal is missed"
    )
    args = parser.parse_args()
    if args.live_seconds <= 0 or args.backlog < 1 or args.rate <= 0:
        parser.error("--live-seconds, --backlog and --rate must be > 0")
    if find_chromium() is None:
        print("no Chromium: apt-get install chromium", file=sys.stderr)
        return 2
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before: {load}", flush=True)
    try:
        figures = asyncio.run(run(args))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = report(args, figures)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
