"""How the web console holds up with many tasks: one node, N finished tasks, one browser.

Run from the repository's root (the binary is target/release/supervisor when built,
else target/debug/supervisor; `--binary` names another):

    target/py-venv/bin/python benches/console/measure.py --tasks 10000

Starts `supervisor up` (mock provider, no latency) in a temporary folder, submits N
tasks with the Python SDK and waits until all finished, then drives Debian's Chromium
(headless, 1360x900) through Playwright over `/tasks` and `/`: time to the first row,
time to page the whole list in by scrolling to its end, the row elements in the DOM,
requestAnimationFrame intervals while scrolling through the loaded list, the JS heap,
and the overview's time to show every task succeeded. Writes a markdown report
(`--out`, default benches/results/<today>-console.md). Never downloads a browser.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from playwright.sync_api import sync_playwright
from supervisor_client import Client

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--enable-precise-memory-info"]
LIST, ROW = '[data-testid="task-list"]', '[data-testid="task-row"]'


def marks(name: str, test: str) -> str:
    """An init script noting in window.__marks[name] when `test` (a JS expression) first
    holds, in ms since the navigation started. No eval: the console's CSP forbids it."""
    return f"""window.__marks = window.__marks || {{}};
      new MutationObserver((_, obs) => {{ if ({test}) {{ window.__marks.{name} = performance.now(); obs.disconnect(); }} }})
        .observe(document, {{ subtree: true, childList: true, attributes: true }});"""


# Scrolls the list to its end every frame until it holds n rows (or timeout ms pass).
LOAD_ALL = """async ([n, timeout]) => { const el = document.querySelector('%s'); const rows = () => Number(el.dataset.rows);
  const t0 = performance.now(); let maxDom = 0, frames = 0;
  while (rows() < n && performance.now() - t0 < timeout) {
    el.scrollTop = el.scrollHeight; frames++;
    await new Promise((r) => requestAnimationFrame(r));
    maxDom = Math.max(maxDom, el.querySelectorAll('%s').length); }
  return { ms: performance.now() - t0, rows: rows(), maxDom, frames }; }""" % (LIST, ROW)
# Scrolls from the top to the bottom at a steady rate over `ms`, recording frame intervals.
SCROLL = """async (ms) => { const el = document.querySelector('%s'); el.scrollTop = 0;
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const span = el.scrollHeight - el.clientHeight, deltas = []; let start = null, prev = null, maxDom = 0;
  return await new Promise((resolve) => { const frame = (t) => {
    if (start === null) start = t; else deltas.push(t - prev); prev = t;
    const f = Math.min(1, (t - start) / ms); el.scrollTop = f * span;
    maxDom = Math.max(maxDom, el.querySelectorAll('%s').length);
    if (f < 1) requestAnimationFrame(frame); else resolve({ deltas, maxDom, span }); };
    requestAnimationFrame(frame); }); }""" % (LIST, ROW)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_node(binary: str, data_dir: str) -> tuple[subprocess.Popen[str], str, str]:
    """Starts `supervisor up`; returns the process, its gRPC address and its console's URL."""
    grpc, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    env.update(SUPERVISOR_SERVER__HTTP_LISTEN=http, SUPERVISOR_PROVIDERS__MOCK__LATENCY="0ms", RUST_LOG="warn")
    proc = subprocess.Popen([binary, "up", "--listen", grpc, "--data-dir", data_dir], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ready, console, output = threading.Event(), [], []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            output.append(line)
            if line.startswith("console: "):
                console.append(line.split(" ", 1)[1].strip().rstrip("/"))
                ready.set()
    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while not ready.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_node(proc)
            raise SystemExit("the node did not start:\n" + "".join(output))
    return proc, grpc, console[0]


def stop_node(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def submit_all(address: str, n: int, threads: int) -> tuple[float, float, dict[str, int]]:
    """Submits n tasks from `threads` clients; returns seconds to submit, to finish, and the counts."""
    clients = [Client(address) for _ in range(threads)]
    t0 = time.monotonic()

    def part(k: int) -> None:
        for i in range(k, n, threads):
            clients[k].submit("testing", f"task {i}", labels=[f"batch-{i % 10}", "console-bench"])
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(part, range(threads)))
    submitted = time.monotonic() - t0
    while (s := clients[0].stats()).total < n or s.queued + s.running + s.retry_wait > 0:
        if time.monotonic() - t0 > 1800:
            raise SystemExit(f"tasks still unfinished after 30 min: {s}")
        time.sleep(0.5)
    for c in clients:
        c.close()
    counts = {k: getattr(s, k) for k in ("succeeded", "failed", "cancelled")}
    return submitted, time.monotonic() - t0, counts


def heap(page, cdp) -> int | None:
    """The JS heap in use after a full garbage collection (None without performance.memory)."""
    cdp.send("HeapProfiler.collectGarbage")
    return page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : null")


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    return sorted(xs)[max(0, math.ceil(p / 100 * len(xs)) - 1)]


def open_page(browser, r: dict, init: str):
    """A page in a fresh context (cold cache) at 1360x900, its errors noted in r["errors"]."""
    ctx = browser.new_context(viewport={"width": 1360, "height": 900})
    page = ctx.new_page()
    page.on("pageerror", lambda e: r["errors"].append(str(e)))
    page.add_init_script(init)
    return ctx, page


def measure_browser(url: str, n: int, succeeded: int, scroll_s: float) -> dict:
    r: dict = {"errors": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        r["chromium"] = browser.version
        try:
            # /tasks: first row, then page everything in, then scroll through it.
            ctx, page = open_page(browser, r, marks("firstRow", f"document.querySelector('{ROW}')"))
            page.goto(url + "/tasks")
            page.wait_for_function("() => window.__marks && window.__marks.firstRow !== undefined", timeout=60_000)
            r["first_row_ms"] = page.evaluate("() => window.__marks.firstRow")
            page.wait_for_function(f"() => Number(document.querySelector('{LIST}').dataset.rows) > 0")
            cdp = ctx.new_cdp_session(page)
            r["rows_first"] = page.evaluate(f"() => Number(document.querySelector('{LIST}').dataset.rows)")
            r["heap_first"] = heap(page, cdp)
            r["load"] = page.evaluate(LOAD_ALL, [n, 600_000])
            page.wait_for_timeout(500)  # let the last page's rows settle
            r["dom_rows_end"] = page.evaluate(f"() => document.querySelectorAll('{ROW}').length")
            r["heap_all"] = heap(page, cdp)
            r["scroll"] = page.evaluate(SCROLL, scroll_s * 1000)
            ctx.close()
            # /: the overview's live count reaching every task succeeded.
            stat = f"document.querySelector('[data-testid=\"stat-succeeded\"]')?.dataset.value === '{succeeded}'"
            ctx, page = open_page(browser, r, marks("stat", stat))
            page.goto(url + "/")
            page.wait_for_function("() => window.__marks && window.__marks.stat !== undefined", timeout=60_000)
            r["overview_ms"] = page.evaluate("() => window.__marks.stat")
            ctx.close()
        finally:
            browser.close()
    return r


def machine() -> tuple[int, str]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    return len(os.sched_getaffinity(0)), model


def meaning(n: int, r: dict) -> str:
    """The paragraph's first half, from this run's numbers."""
    ld, d = r["load"], r["scroll"]["deltas"]
    short = f"Paging stopped at {ld['rows']:,} rows, short of {n:,}, after {ld['ms'] / 1000:.0f} s. " if ld["rows"] < n else ""
    long = sum(1 for x in d if x > 50)
    dom = max(r["dom_rows_end"], ld["maxDom"], r["scroll"]["maxDom"])
    text = short + (f"What it means: the list stayed virtual, {dom} row elements at most for {ld['rows']:,} rows loaded "
            "(those in view plus the overscan), not one per task. " if dom < 100 else
            f"What it means: the DOM grew with the rows ({dom} row elements for {ld['rows']:,} loaded): "
            "the list is not virtual at this size. ")
    missed = sum(1 for x in d if x > 20)
    text += (f"Scrolling through all of them ran at {pct(d, 50):.1f} ms a frame (p50); {missed} of {len(d)} frames "
             f"missed a 60 Hz interval (over 20 ms) and {long} took over 50 ms. ")
    pages = max(1, math.ceil((ld["rows"] - r["rows_first"]) / 100))
    text += (f"Paging everything in is {pages:.0f} ListTasks calls of 100 rows one after the other, "
             f"{ld['ms'] / pages:.0f} ms each on average here")
    if r["heap_first"] is not None and r["heap_all"] is not None:
        per = (r["heap_all"] - r["heap_first"]) / max(1, ld["rows"] - r["rows_first"])
        text += f"; the heap held about {per / 1024:.1f} KiB more per row loaded"
    return text + "."


def report(a, build: str, sub: tuple, r: dict) -> str:
    nproc, cpu = machine()
    submitted, finished, counts = sub
    ld, sc = r["load"], r["scroll"]
    d = sc["deltas"]
    mib = lambda b: "not available" if b is None else f"{b / 2**20:.1f} MiB"  # noqa: E731
    paragraph = textwrap.fill(" ".join(f"""{meaning(a.tasks, r)}
What it does not measure: a person's scrolling (this scrolls the whole list in
{a.scroll_seconds:g} s, so every frame draws a fresh window of rows, a harsh case) or what
appears on screen (times are to the DOM, frame intervals are requestAnimationFrame's, in
headless Chromium with software rendering and no display); tasks changing while the page is
open (all had finished, so the live counts never reloaded the first page); other pages,
filters, several tabs, a remote node or a release build unless `--binary` names one. The
node and the browser shared this machine's {nproc} CPUs, and the node was a {build} build,
which the server's share of each round trip reflects.""".split()), 92)
    return f"""# Console with {a.tasks:,} tasks ({time.strftime('%Y-%m-%d')})

`{' '.join(['benches/console/measure.py', *sys.argv[1:]])}`: one node, the web console in headless
Chromium {r['chromium']} at 1360x900, one run. Numbers are from that run alone.

- Machine: {nproc} CPUs ({cpu}), {platform.system()} {platform.release()}
- Binary: `{a.binary}`, a **{build}** build; mock provider with 0 ms latency; embedded store
- Tasks: {a.tasks:,} submitted from {a.threads} threads in {submitted:.1f} s, all finished after {finished:.1f} s
  (succeeded {counts['succeeded']:,}, failed {counts['failed']:,}, cancelled {counts['cancelled']:,})

| Measure | Value |
|---|---|
| `/tasks`: first task row in the DOM, from navigation start | {r['first_row_ms']:.0f} ms |
| rows loaded with the first page | {r['rows_first']:,} |
| all rows loaded by scrolling to the end each frame (`data-rows` = {ld['rows']:,}) | {ld['ms'] / 1000:.2f} s ({ld['frames']:,} frames) |
| row elements in the DOM with all rows loaded | {r['dom_rows_end']} (at most {ld['maxDom']} while loading) |
| scroll top to bottom over {a.scroll_seconds:g} s ({sc['span']:,} px, {sc['span'] / a.scroll_seconds:,.0f} px/s) | {len(d)} frames |
| frame interval while scrolling: p50 / p95 / max | {pct(d, 50):.1f} / {pct(d, 95):.1f} / {max(d):.1f} ms |
| frames over 20 ms / over 50 ms while scrolling | {sum(1 for x in d if x > 20)} / {sum(1 for x in d if x > 50)} |
| row elements in the DOM while scrolling, at most | {sc['maxDom']} |
| JS heap in use after GC, first page loaded | {mib(r['heap_first'])} |
| JS heap in use after GC, all rows loaded | {mib(r['heap_all'])} |
| overview `/`: "succeeded" showing {counts['succeeded']:,}, from navigation start (cold cache) | {r['overview_ms']:.0f} ms |
| errors thrown by the pages | {len(r['errors'])} |

{paragraph}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    release = ROOT / "target/release/supervisor"
    default_binary = release if release.exists() else ROOT / "target/debug/supervisor"
    ap.add_argument("--binary", default=str(default_binary), help="default: target/release/supervisor if built, else target/debug/supervisor")
    ap.add_argument("--build", choices=["debug", "release"],
                    help="how the binary was built (default: release if its path has /release/, else debug)")
    ap.add_argument("--threads", type=int, default=8, help="submitting threads")
    ap.add_argument("--scroll-seconds", type=float, default=5.0)
    ap.add_argument("--out", default=str(ROOT / f"benches/results/{time.strftime('%Y-%m-%d')}-console.md"))
    a = ap.parse_args()
    build = a.build or ("release" if "/release/" in str(Path(a.binary).resolve()) else "debug")
    tmp = tempfile.mkdtemp(prefix="console-measure-")
    proc = None
    try:
        proc, address, url = start_node(a.binary, tmp)
        print(f"node up: {address}, console {url}; submitting {a.tasks} tasks", flush=True)
        sub = submit_all(address, a.tasks, a.threads)
        print(f"submitted in {sub[0]:.1f} s, finished after {sub[1]:.1f} s: {sub[2]}", flush=True)
        r = measure_browser(url, a.tasks, sub[2]["succeeded"], a.scroll_seconds)
    finally:
        if proc:
            stop_node(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(a, build, sub, r)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)
    if r["errors"]:
        print("page errors:", *r["errors"], sep="\n  ")


if __name__ == "__main__":
    main()
