"""`scripts/bench --only console`: the live stream's cost to ingest, and the console in a real
headless Chromium (Debian's, see browser.py) against the shared daemon with 1,000 devices.

- ingest with 20 `/api/stream` readers vs none (the same daemon, rounds back to back);
- the console's first load: bytes transferred (gzip as Chromium asks for it), API calls included;
- first paint of the device table with 1,000 devices, against the same rows as a static page;
- the table under 100 state changes/s: frame intervals, applying a filter, and how soon a
  change shows, against the same page with no changes flowing.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

from bench_lib import procs
from bench_lib.procs import DaemonClient, Helper
from bench_lib.report import Row
from bench_lib.scenarios import (
    DEVICES_PER_PRODUCT,
    Bench,
    ingest_daemon,
    publisher_spec,
    run_publisher,
    telemetry_topics,
    thermostat_id,
)
from bench_lib.stats import median, percentile
from deviceagentd.http.live import DEFAULT_RING_SIZE

STREAM_READERS = 20
PAINT_RUNS = 5
CHANGES_PER_S = 100.0
LOAD_S = 10.0
FILTER_PROBES = 10
CONSOLE_DIR = procs.REPO / "deviceagentd" / "console"

# Resolves when the device table shows `want` rows and a frame with them has been painted:
# milliseconds since the navigation started.
ROWS_PAINTED_JS = """
const [want, done] = arguments;
function check() {
  const rows = document.querySelectorAll('#device-rows tr[data-id]').length;
  if (rows >= want) {
    requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now())));
  } else {
    setTimeout(check, 5);
  }
}
check();
"""
# Frame intervals for `seconds`, long tasks (> 50 ms) meanwhile.
FRAMES_JS = """
const [seconds, done] = arguments;
const gaps = [], longTasks = [];
const observer = new PerformanceObserver((list) => { for (const e of list.getEntries()) longTasks.push(e.duration); });
try { observer.observe({type: 'longtask', buffered: false}); } catch (e) {}
let last = performance.now();
const end = last + seconds * 1000;
function frame(now) {
  gaps.push(now - last); last = now;
  if (now < end) requestAnimationFrame(frame);
  else { observer.disconnect(); done({gaps, longTasks}); }
}
requestAnimationFrame(frame);
"""
# Type a filter that matches one device, then clear it: how long until each redraw is painted.
FILTER_JS = """
const [needle, done] = arguments;
const input = document.getElementById('filter-search');
const t0 = performance.now();
input.value = needle;
input.dispatchEvent(new Event('input'));
requestAnimationFrame(() => {
  const t1 = performance.now();
  const shown = document.querySelectorAll('#device-rows tr[data-id]').length;
  input.value = '';
  input.dispatchEvent(new Event('input'));
  requestAnimationFrame(() => done({narrow: t1 - t0, wide: performance.now() - t1, shown}));
});
"""
# When (epoch ms, the machine's clock) a device's state cell first shows a text, looked at
# every frame; null after 15 s.
SEEN_JS = """
const [id, text, done] = arguments;
const t0 = performance.now();
function look() {
  const row = document.querySelector(`#device-rows tr[data-id="${id}"]`);
  if (row && row.cells[3].textContent.includes(text)) done(performance.timeOrigin + performance.now());
  else if (performance.now() - t0 > 15000) done(null);
  else requestAnimationFrame(look);
}
look();
"""


async def console(b: Bench) -> None:
    await stream_readers(b)
    from bench_lib.browser import chromium_missing

    missing = chromium_missing()
    if missing is not None:
        b.report.add(Row("console in headless Chromium", None, "", note=f"skipped: {missing}"))
        return
    daemon = await b.daemon()
    await b.register({p: [f"bench-{p}-{i:03d}" for i in range(DEVICES_PER_PRODUCT)]
                      for p in sorted(b.catalog.products)})
    await first_load(b, daemon)
    await first_paint(b, daemon)
    await table_under_load(b, daemon)


# ----------------------------------------------------------------------- the stream's cost


async def stream_readers(b: Bench) -> None:
    n = b.sizes.ingest_messages
    daemon = await b.ensure_thermostats()
    url = f"{daemon.base_url}/api/stream"
    # 97 of the thermostats in turn: each then reports a new temperature and humidity every time
    # (the publisher's values cycle every 100 and 20 messages), so every message is a change.
    topics = telemetry_topics()[:97]
    alone, watched, delivered, missed = [], [], [], []
    sys_alone, sys_watched = [], []
    for _ in range(b.sizes.ingest_rounds):
        before = system_seconds(daemon.pid)
        alone.append(await ingest_daemon(b, daemon, n, topics))
        sys_alone.append((system_seconds(daemon.pid) - before) / n * 1e6)
        readers = await Helper.start("stream_reader", {"url": url, "count": STREAM_READERS})
        try:
            before = system_seconds(daemon.pid)
            watched.append(await ingest_daemon(b, daemon, n, topics))
            sys_watched.append((system_seconds(daemon.pid) - before) / n * 1e6)
            await asyncio.sleep(1.0)  # let the readers drain what is on its way
            readers.go()
            got = await readers.result()
        finally:
            readers.kill()
        delivered.append(median(got["states"]))
        missed.append(sum(got["missed"]))
    ratios = [w.rate / a.rate for w, a in zip(watched, alone, strict=True)]
    ratio = median(ratios)
    b.report.add(Row(f"ingest with {STREAM_READERS} /api/stream readers ({n:,} msgs, median of {len(ratios)})",
                     median([w.rate for w in watched]), "msg/s", median([a.rate for a in alone]), ratio,
                     "ratio ≥ 0.9", ratio >= 0.9,
                     "baseline: the same daemon with no stream open, in the same round; per round with / without: "
                     + ", ".join(f"{w.rate:,.0f} / {a.rate:,.0f} ({w.rate / a.rate:.2f})"
                                 for w, a in zip(watched, alone, strict=True)) + " msg/s"))
    cpu, base_cpu = median([w.cpu_us for w in watched]), median([a.cpu_us for a in alone])
    b.report.add(Row("  daemon CPU time per message", cpu, "µs", base_cpu, base_cpu / cpu,
                     note="whole daemon process, medians; less sensitive to the machine's other load than the rates "
                     "(the 20 readers, one helper process of plain sockets, share the machine's cores). Of it in the "
                     f"kernel: {median(sys_watched):.1f} µs with the readers, {median(sys_alone):.1f} µs without "
                     f"(sending {STREAM_READERS} copies of every change over loopback TCP)"))
    b.report.add(Row("  state changes delivered per reader", median(delivered), "count", n,
                     note=f"of {n:,} telemetry messages, each a change; `missed` notices to the readers: "
                     f"{sum(missed)} (a reader that falls more than the ring, {DEFAULT_RING_SIZE:,} changes, behind "
                     "loses the oldest and is told)"))


def system_seconds(pid: int) -> float:
    """Kernel CPU time of a process, all threads (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------- the browser


async def _fresh_browser() -> Any:
    from bench_lib.browser import Browser

    return await Browser.start()


async def first_load(b: Bench, daemon: DaemonClient) -> None:
    browser = await _fresh_browser()
    try:
        await browser.get(daemon.base_url + "/")
        await browser.until_text("#live", "live", timeout=30)
        await browser.until_text("main", "Devices per product", timeout=30)
        entries = await browser.js(
            "const nav = performance.getEntriesByType('navigation')[0];"
            "return [[nav.name, nav.transferSize]].concat(performance.getEntriesByType('resource')"
            ".map(e => [e.name, e.transferSize]));")
    finally:
        await browser.close()
    files = sum(p.stat().st_size for p in CONSOLE_DIR.iterdir() if p.is_file())
    total = sum(size for _, size in entries) / 1024
    console_files = sum(size for name, size in entries if "/api/" not in name and "/metrics" not in name) / 1024
    b.report.add(Row("console first load, transferred", total, "KiB", files / 1024, total / (files / 1024),
                     "≤ 150 KiB", total <= 150,
                     f"{len(entries)} requests: the page and its scripts {console_files:.1f} KiB (gzip), the API calls "
                     f"of the overview {total - console_files:.1f} KiB; baseline: the console's files uncompressed; "
                     "a repeat visit revalidates with ETags (304)"))


def _static_table(rows: list[dict[str, Any]]) -> str:
    """The device table as a static page: what the browser needs to paint the same rows."""
    cells = "".join(f"<tr data-id='{d['deviceId']}'><td><span class='badge'>{d['status']}</span></td>"
                    f"<td>{d['deviceId']}</td><td>{d['productId']}</td><td>{len(d['state'])} fields</td>"
                    f"<td>{d['lastSeen']}</td></tr>" for d in rows)
    return f"<!doctype html><table><tbody id='device-rows'>{cells}</tbody></table>"


async def first_paint(b: Bench, daemon: DaemonClient) -> None:
    devices = (await daemon.get_json("/api/devices?limit=1000"))["devices"]
    want = len(devices)
    static = b.workdir / "static-table.html"
    static.write_text(_static_table(devices))
    browser = await _fresh_browser()
    console_ms, static_ms = [], []
    try:
        for _ in range(PAINT_RUNS):
            await browser.get("about:blank")
            await browser.get(daemon.base_url + "/#/devices")
            console_ms.append(await browser.call(browser.driver.execute_async_script, ROWS_PAINTED_JS, want))
            await browser.get("about:blank")
            await browser.get(static.as_uri())
            static_ms.append(await browser.call(browser.driver.execute_async_script, ROWS_PAINTED_JS, want))
    finally:
        await browser.close()
    value, base = median(console_ms), median(static_ms)
    b.report.add(Row(f"device table painted with {want:,} devices (median of {PAINT_RUNS})", value, "ms", base,
                     base / value, "≤ 1000 ms", value <= 1000,
                     "from navigation start to a painted frame with every row: the page, its modules, /api/gateway, "
                     "/api/products (+ each spec), /api/devices (1,000 devices) and the table; baseline: the same rows "
                     "as a static file; runs: " + ", ".join(f"{v:.0f}" for v in console_ms) + " ms"))


async def _probe(browser: Any, seconds: float) -> dict[str, Any]:
    frames = await browser.call(browser.driver.execute_async_script, FRAMES_JS, seconds)
    return dict(frames)


async def _filters(browser: Any, needle: str) -> list[dict[str, Any]]:
    out = []
    for _ in range(FILTER_PROBES):
        out.append(await browser.call(browser.driver.execute_async_script, FILTER_JS, needle))
        await asyncio.sleep(0.2)
    return out


async def table_under_load(b: Bench, daemon: DaemonClient) -> None:
    browser = await _fresh_browser()
    browser.driver.set_script_timeout(LOAD_S + 30)
    needle = thermostat_id(42)
    try:
        await browser.get(daemon.base_url + "/#/devices")
        await browser.call(browser.driver.execute_async_script, ROWS_PAINTED_JS, 1000)
        await browser.until_text("#live", "live")
        idle_frames = await _probe(browser, 3.0)
        idle_filters = await _filters(browser, needle)
        before = await daemon.counter("deviceagentd_mqtt_messages_in_total", kind="telemetry")
        topics = [f"v1/{p}/bench-{p}-{i:03d}/telemetry" for p in ("thermostat",) for i in range(DEVICES_PER_PRODUCT)]
        random.Random(3).shuffle(topics)
        count = int(CHANGES_PER_S * (LOAD_S + 8))
        publisher = await run_publisher(publisher_spec(b, "console-load", "telemetry", topics, count=count,
                                                       rate=CHANGES_PER_S))
        await asyncio.sleep(1.0)
        loaded_frames, loaded_filters = await asyncio.gather(_probe(browser, LOAD_S / 2), _filters(browser, needle))
        more_frames = await _probe(browser, LOAD_S / 2 - 2)
        lag = await _change_lag(browser, b)
        await publisher.result()
        received = await daemon.counter("deviceagentd_mqtt_messages_in_total", kind="telemetry") - before
    finally:
        await browser.close()
    gaps = loaded_frames["gaps"] + more_frames["gaps"]
    long_tasks = loaded_frames["longTasks"] + more_frames["longTasks"]
    p99, base_p99 = percentile(gaps, 99), percentile(idle_frames["gaps"], 99)
    b.report.add(Row(f"device table at 1,000 devices and {CHANGES_PER_S:.0f} state changes/s: frame interval p99",
                     p99, "ms", base_p99, base_p99 / p99, "≤ 50 ms", p99 <= 50,
                     f"{len(gaps)} frames over {LOAD_S - 2:.0f} s, median {statistics.median(gaps):.1f} ms, max "
                     f"{max(gaps):.0f} ms; long tasks (> 50 ms): {len(long_tasks)}"
                     + (f", longest {max(long_tasks):.0f} ms" if long_tasks else "")
                     + f"; baseline: the same page idle; {received:.0f} changes reached the daemon"))
    filter_ms = percentile([f["narrow"] + f["wide"] for f in loaded_filters], 90)
    base_filter = percentile([f["narrow"] + f["wide"] for f in idle_filters], 90)
    b.report.add(Row("  search filter, typed and cleared, until painted (p90)", filter_ms, "ms", base_filter,
                     base_filter / filter_ms, "≤ 100 ms", filter_ms <= 100,
                     f"{FILTER_PROBES} probes under load: narrow to one row then back to 1,000 rows; baseline idle"))
    b.report.add(Row("  a change on MQTT until it shows in the table", lag, "ms", target="≤ 500 ms",
                     ok=lag is not None and lag <= 500,
                     note="one device's temperature published as the other changes flow; polled every frame"))


async def _change_lag(browser: Any, b: Bench) -> float | None:
    """Publish one recognisable value and time it until the table shows it."""
    from bench_lib.mqttc import BenchClient
    from bench_lib.scenarios import client_id

    device = thermostat_id(7)
    client = BenchClient(b.broker.url, client_id("console-lag"))
    await client.connect()
    try:
        seen = asyncio.create_task(browser.call(browser.driver.execute_async_script, SEEN_JS, device,
                                                "temperature 77.7"))
        await asyncio.sleep(0.5)  # the page is looking
        published_ms = time.time() * 1000
        client.publish0(f"v1/thermostat/{device}/telemetry", b'{"type":"state","data":{"temperature":77.7}}')
        await client.drain()
        shown = await seen
        return None if shown is None else max(0.0, shown - published_ms)
    finally:
        await client.disconnect()
