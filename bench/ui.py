#!/usr/bin/env python
"""Browser benchmark of the timeline page (``GET /``, longwatch/web-assets/ui/): time to first paint and to a
zoom step, measured inside headless Chromium against a real ``longwatch serve``.

    .venv/bin/python bench/ui.py                        # 10,000 segments, 8 streams, 7 days, 3 runs (~1-2 min)
    .venv/bin/python bench/ui.py --segments 100000 --runs 5
    .venv/bin/python bench/ui.py --screenshot docs/timeline.png    # also writes the README's screenshot
    .venv/bin/python bench/ui.py --serve                # load the data, print the URL and tokens, wait (Ctrl-C)

Needs Debian's Chromium (``apt-get install chromium``, /usr/bin/chromium; ``make test`` installs it) and
Playwright for Python (the ``test`` extra); no browser is downloaded.

What it does:

1. Starts ``python -m longwatch.cli serve --port P`` in a fresh data dir (embedded Redis and Ray, as
   ``tests/service_fixture.py`` does) with an admin and a read token, and waits for ``/readyz``.
2. Loads ``--segments`` segments (``SegmentStore.bulk_load``) into its Redis: 8 streams (cameras with
   epochs a few minutes apart) × 3 events over 7 days; durations lognormal (median 20 s) clipped to
   1-600 s, exponential gaps sized so each event fills the 7 days.
3. ``--runs`` times, in a fresh browser context (empty cache, 1280×720, the read token in localStorage):
   opens ``/`` with no view in the URL (the page shows all the data: 7 days, drawn as buckets), then
   clicks the zoom-in button ten times (each halves the span: 7 d → 3.5 d → … → 10 min; the page
   switches to segments below 6 h) and waits after each click until the page says it is idle; then
   opens a link to a 1-hour view (segments drawn at once).

Figures (all from the browser's own clocks, ``performance.now()`` time origin = navigation start):

* FCP: the Paint Timing API's ``first-contentful-paint`` (the page's frame, before any data).
* first data paint: the page's ``lw:painted`` mark, set in a ``setTimeout(0)`` inside the
  ``requestAnimationFrame`` after the first data was drawn into the SVG (so the frame holding it
  has been produced). It includes loading HTML/JS/CSS, ``GET /api/v1/streams``, the extent queries
  (first and last segment per stream, when the URL holds no range) and the data request.
* zoom step: from the click's ``event.timeStamp`` (the page's ``lw:input`` mark) to the next
  ``lw:painted``; split at ``lw:data`` (the answer parsed) into "fetch" (the HTTP request, the
  server's query, JSON parsing; a click asks at once, no debounce) and "draw" (building the SVG, style,
  layout, and the next frame).
* p50 / max over all runs' samples of a row.

Prints figures and asserts nothing about time. Screenshots of the views go to bench/out/ui/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "ui"
CHROMIUM = "/usr/bin/chromium"
# bench/ itself must not be on the path (bench/model.py would shadow the model package)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STREAMS = [f"cam{i}" for i in range(1, 9)]
EVENTS = ["person_present", "car_present", "bicycle_present"]
BASE = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
EPOCHS = {sid: BASE + timedelta(seconds=137 * i) for i, sid in enumerate(STREAMS)}
HORIZON = 7 * 86400.0

from bench.common import ServeProcess  # noqa: E402


class Service(ServeProcess):
    """``longwatch serve`` in a fresh data dir (embedded Redis), with an admin and a read token."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.admin, self.read = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.media = tmp / "media"
        self.media.mkdir()
        self._redis = None
        self._store = None
        env = {"LONGWATCH_API_TOKENS": f"admin:{self.admin},read:{self.read}", "LONGWATCH_MEDIA_ROOTS": str(self.media)}
        super().__init__(tmp / "data", tmp / "serve.log", env=env, token=self.read)

    def store(self):
        """A SegmentStore on the service's embedded Redis (attached to it)."""
        if self._store is None:
            from longwatch.pipeline.redis_server import EmbeddedRedis
            from longwatch.pipeline.store import SegmentStore

            self._redis = EmbeddedRedis(self.data / "redis").start()
            self._store = SegmentStore.from_url(self._redis.url, prefix="lw")
        return self._store

    def stop(self, timeout: float = 120.0) -> int | None:
        if self._store is not None:
            self._store.close()
            self._redis.stop()
        return super().stop(timeout)[0]


def make_segments(n: int, seed: int = 7):
    """``n`` closed segments over 7 days: 8 streams × 3 events, each event's segments not overlapping."""
    import numpy as np

    from longwatch.pipeline.types import Segment

    rng = np.random.default_rng(seed)
    pairs = [(s, e) for s in STREAMS for e in EVENTS]
    per, extra = divmod(n, len(pairs))
    out: dict[str, list] = {sid: [] for sid in STREAMS}
    for i, (sid, ev) in enumerate(pairs):
        k = per + (1 if i < extra else 0)
        dur = np.clip(rng.lognormal(np.log(20.0), 1.0, size=k), 1.0, 600.0)
        mean_gap = max((HORIZON - dur.sum()) / max(k, 1), 1.5)
        gap = 1.0 + rng.exponential(mean_gap - 1.0, size=k)
        start = np.round(np.cumsum(gap) + np.concatenate([[0.0], np.cumsum(dur)[:-1]]), 3)
        end = np.round(start + dur, 3)
        score = np.round(rng.uniform(0.35, 0.99, size=k), 4)
        for a, b, sc in zip(start, end, score):
            out[sid].append(Segment(sid, ev, float(a), float(b), EPOCHS[sid], float(sc), "closed"))
    return out


def busy_hour(seed: int = 11):
    """A realistic hour after the 7 days (for the README's screenshot): people, cars, bicycles, a dog,
    one segment still open. Returns {stream: [Segment]} and the hour's UTC start."""
    import random

    from longwatch.pipeline.types import Segment

    rng = random.Random(seed)
    hour0 = BASE + timedelta(seconds=HORIZON + 3600)
    rates = {
        "person_present": (40, 240),
        "car_present": (25, 420),
        "bicycle_present": (15, 900),
        "dog_present": (30, 2400),
    }
    out: dict[str, list] = {}
    for sid in STREAMS:
        segs = []
        off = (hour0 - EPOCHS[sid]).total_seconds()
        for ev, (med, gap) in rates.items():
            t = rng.uniform(0, gap)
            while t < 3600:
                dur = min(900.0, max(2.0, rng.lognormvariate(0, 0.8) * med))
                state = "open" if t + dur > 3550 and ev == "person_present" and sid == "cam3" else "closed"
                segs.append(Segment(sid, ev, round(off + t, 3), round(off + t + dur, 3), EPOCHS[sid],
                                    round(rng.uniform(0.45, 0.98), 4), state))  # fmt: skip
                if state == "open":
                    break
                t += dur + rng.expovariate(1 / gap) + 2
        out[sid] = segs
    return out, hour0


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def launch(pw):
    return pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])


def new_page(browser, svc: Service, errors: list[str], *, width=1280, height=720):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    ctx.add_init_script(f"localStorage.setItem('longwatch_token', {json.dumps(svc.read)})")
    page = ctx.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return ctx, page


TIMES = """() => {
  const get = (n) => performance.getEntriesByName(n);
  const last = (n) => { const e = get(n); return e.length ? e[e.length - 1].startTime : null; };
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const nav = performance.getEntriesByType('navigation')[0];
  return {fcp: fcp ? fcp.startTime : null, first: get('lw:painted').length ? get('lw:painted')[0].startTime : null,
          dcl: nav ? nav.domContentLoadedEventEnd : null, input: last('lw:input'), data: last('lw:data'),
          painted: last('lw:painted'), mode: window.longwatch.mode,
          segments: document.querySelectorAll('[data-segment-id]').length,
          buckets: document.querySelectorAll('[data-bucket]').length,
          span: window.longwatch.view.t1 - window.longwatch.view.t0};
}"""


def wait_idle(page, timeout_ms: int = 60000) -> None:
    page.wait_for_function("window.longwatch && document.body.dataset.busy === '0'", timeout=timeout_ms)


def one_run(browser, svc: Service, run: int, shots: bool) -> dict:
    errors: list[str] = []
    ctx, page = new_page(browser, svc, errors)
    page.goto(f"{svc.url}/")
    wait_idle(page)
    first = page.evaluate(TIMES)
    if shots:
        page.screenshot(path=str(OUT / "bench-7d-buckets.png"))
    steps = []
    for i in range(10):
        before = page.evaluate(TIMES)
        page.click("button[data-act=zoom-in]")
        page.wait_for_function(
            "(p) => { const e = performance.getEntriesByName('lw:painted'); return e.length && e[e.length-1].startTime > p"
            " && document.body.dataset.busy === '0'; }",
            arg=before["painted"],
            timeout=60000,
        )
        t = page.evaluate(TIMES)
        t["step"] = i + 1
        steps.append(t)
        if shots and t["mode"] == "segments" and not any(s["mode"] == "segments" for s in steps[:-1]):
            page.screenshot(path=str(OUT / "bench-first-segments-view.png"))
    ctx.close()
    # a link to a 1-hour view: segments at once
    ctx, page = new_page(browser, svc, errors)
    t0 = BASE + timedelta(days=3, hours=12)
    page.goto(f"{svc.url}/#axis=utc&from={iso(t0)}&to={iso(t0 + timedelta(hours=1))}")
    wait_idle(page)
    hour = page.evaluate(TIMES)
    if shots:
        page.screenshot(path=str(OUT / "bench-1h-segments.png"))
    ctx.close()
    return {"run": run, "first": first, "steps": steps, "hour": hour, "errors": errors}


def fmt(x) -> str:
    return "—" if x is None else f"{x:.0f}"


def report(runs: list[dict], args, load_s: float, ready_s: float, version: str) -> None:
    from bench.common import machine

    print()
    print(f"bench/ui.py  {args.segments:,} segments, {len(STREAMS)} streams × {len(EVENTS)} events, 7 days; "
          f"{args.runs} runs")  # fmt: skip
    print(f"machine: {machine()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"browser: Chromium {version} (headless, {CHROMIUM}), 1280×720, Python {platform.python_version()}")
    print(f"service ready in {ready_s:.1f} s; segments loaded in {load_s:.2f} s")
    print()
    firsts = [r["first"] for r in runs]
    hours = [r["hour"] for r in runs]

    def row(label, xs):
        xs = [x for x in xs if x is not None]
        if xs:
            print(f"  {label:<52} {statistics.median(xs):>7.0f} {max(xs):>7.0f}   (n={len(xs)})")

    print(f"  {'cold load of / (ms since navigation start)':<52} {'p50':>7} {'max':>7}")
    row("DOMContentLoaded", [f["dcl"] for f in firsts])
    row("first contentful paint (page frame)", [f["fcp"] for f in firsts])
    row("first data paint, 7-day view (buckets)", [f["first"] for f in firsts])
    row("first data paint, link to a 1-hour view (segments)", [h["first"] for h in hours])
    print(f"    (7-day view: {firsts[0]['buckets']} bucket cells; 1-hour view: {hours[0]['segments']} segments)")
    print()
    print(f"  {'zoom step (click on +, ms)':<30} {'mode':<9} {'drawn':>6} {'total p50':>9} {'max':>6} {'fetch p50':>9} "
          f"{'draw p50':>8}")  # fmt: skip
    for i in range(len(runs[0]["steps"])):
        ss = [r["steps"][i] for r in runs]
        tot = [s["painted"] - s["input"] for s in ss]
        fetch = [s["data"] - s["input"] for s in ss]
        draw = [s["painted"] - s["data"] for s in ss]
        s0 = ss[0]
        label = f"{i + 1:>2}: to {fmt_span(s0['span'])}"
        drawn = s0["segments"] if s0["mode"] == "segments" else s0["buckets"]
        print(f"  {label:<30} {s0['mode']:<9} {drawn:>6} {statistics.median(tot):>9.0f} {max(tot):>6.0f} "
              f"{statistics.median(fetch):>9.0f} {statistics.median(draw):>8.0f}")  # fmt: skip
    by_mode: dict[str, list[float]] = {}
    for r in runs:
        for s in r["steps"]:
            by_mode.setdefault(s["mode"], []).append(s["painted"] - s["input"])
    for m, xs in by_mode.items():
        print(f"  all {m} steps: p50 {statistics.median(xs):.0f} ms, max {max(xs):.0f} ms (n={len(xs)})")
    errs = [e for r in runs for e in r["errors"]]
    print()
    print(f"console errors: {len(errs)}" + (f" — {errs[:5]}" if errs else ""))


def fmt_span(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.0f} min"


def add_street(svc: Service, start_at: datetime) -> str:
    """The demo clip six times over (a minute of real street footage) through the service, with a known
    start time, so its segments have real thumbnails and clips. Returns the stream id once it is done."""
    import httpx

    from tests.demo_clips import fetch_demo_clip, loop_clip

    sid = "street"
    src = loop_clip(fetch_demo_clip(), svc.media / "street.mp4", 6)
    h = {"Authorization": f"Bearer {svc.admin}"}
    body = {"source": str(src), "id": sid, "start_at": iso(start_at)}
    r = httpx.post(f"{svc.url}/api/v1/streams", json=body, headers=h, timeout=120)
    r.raise_for_status()
    deadline = time.monotonic() + 600
    while (state := httpx.get(f"{svc.url}/api/v1/streams/{sid}", headers=h, timeout=30).json()["state"]) not in (
        "done",
        "failed",
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the street clip is still {state!r} after 10 minutes")
        time.sleep(1)
    if state != "done":
        raise RuntimeError(f"the street clip {state}:\n{svc.tail()}")
    return sid


def screenshot(browser, svc: Service, path: Path) -> None:
    """The README's view: a busy hour after the 7 days, 1280×720: four cameras with a live-looking status
    and a file run through the service (real detections and thumbnails), one of its segments selected."""
    import httpx

    store = svc.store()
    hour, hour0 = busy_hour()
    for sid, segs in hour.items():
        store.bulk_load(sid, segs, epoch=EPOCHS[sid])
    street = add_street(svc, hour0 + timedelta(minutes=31))
    for i, sid in enumerate(STREAMS):
        foot = (hour0 - EPOCHS[sid]).total_seconds() + 3600
        state = "reconnecting" if sid == "cam6" else "running"
        store.set_status(sid, state=state, reason="camera did not answer; retrying" if state != "running" else "",
                         lag_s=round(0.4 + 0.13 * i, 2), decode_fps=25.0, sampled_fps=round(2.0 - 0.1 * i, 1),
                         footage_s=foot)  # fmt: skip
    h = {"Authorization": f"Bearer {svc.read}"}
    segs = httpx.get(f"{svc.url}/api/v1/events", params={"stream": street, "event": "person_present", "limit": 1000},
                     headers=h, timeout=30).json()["items"]  # fmt: skip
    best = max(segs, key=lambda s: (s["end_s"] - s["start_s"]) * s["score"])
    errors: list[str] = []
    ctx, page = new_page(browser, svc, errors)
    shown = f"cam1,cam2,cam3,cam4,{street}"
    page.goto(
        f"{svc.url}/#axis=utc&from={iso(hour0)}&to={iso(hour0 + timedelta(hours=1))}&streams={shown}&sel={best['id']}"
    )
    wait_idle(page)
    page.wait_for_selector("#detail:not([hidden])")
    page.wait_for_function("document.querySelector('#thumb').naturalWidth > 0", timeout=15000)
    page.wait_for_timeout(300)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    ctx.close()
    print(f"screenshot: {path} ({path.stat().st_size / 1024:.0f} KB); console errors: {errors or 'none'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segments", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--screenshot", type=Path, help="also write the README's screenshot here (PNG)")
    ap.add_argument("--serve", action="store_true", help="load the data, print the URL and tokens, and wait")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: apt-get install chromium (or make test)")
        return 2
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="lwbui-"))
    svc = Service(tmp)
    try:
        ready_s = svc.wait_ready()
        store = svc.store()
        t0 = time.perf_counter()
        for sid, segs in make_segments(args.segments).items():
            store.bulk_load(sid, segs, epoch=EPOCHS[sid])
        load_s = time.perf_counter() - t0
        if args.serve:
            print(f"{svc.url}/   admin token {svc.admin}   read token {svc.read}   (Ctrl-C stops)")
            try:
                while svc.proc.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
            return 0
        with sync_playwright() as pw:
            browser = launch(pw)
            version = browser.version
            runs = [one_run(browser, svc, i, shots=(i == 0)) for i in range(args.runs)]
            report(runs, args, load_s, ready_s, version)
            print(f"screenshots: {OUT}/bench-*.png")
            if args.screenshot:
                screenshot(browser, svc, args.screenshot)
            browser.close()
    finally:
        rc = svc.stop()
        if rc not in (0, None):
            print(f"serve exited with {rc}:\n{svc.tail()}")
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
