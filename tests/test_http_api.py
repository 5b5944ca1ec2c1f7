"""The HTTP API against the session's real `longwatch serve` (uvicorn in a subprocess, real Ray, real
Redis, real footage): /events equals the store's own overlap query and pages by cursor give each segment
once; /timeline buckets sum to the covered seconds; the live feed replays exactly what a reconnecting
client missed and reaches 50 clients at once; /metrics parses and moves; the auth matrix; media roots;
and hostile input, each a clear 4xx with a stable code."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import free_port, until

from longwatch.pipeline.query import Filters, page
from longwatch.pipeline.types import Segment
from longwatch.views import segment_json

EPOCH = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
API = "/api/v1"


def _get(service, path, scope="read", **params):
    return httpx.get(f"{service['url']}{path}", params=params, headers=service.headers(scope), timeout=60)


def _all_events(service, limit: int, **params) -> list[dict]:
    items, cursor, pages = [], None, 0
    while True:
        r = _get(service, f"{API}/events", limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            return items
        assert pages < 1000


@pytest.fixture(scope="module")
def loaded(service):
    """Segments of two streams loaded straight into the service's Redis (as a long-running service holds
    them), with a known epoch: short ones, long ones over several index chunks, open ones."""
    store = service.store()
    rng = random.Random(2)
    segs: dict[str, list[Segment]] = {"yard": [], "gate": []}
    for sid in segs:
        for ev in ("person_present", "car_present"):
            t = 0.0
            for _ in range(150):
                t += rng.uniform(1, 200)
                dur = rng.choice([0.0, 1.5, 8.0, 95.0, 700.0])
                state = "open" if rng.random() < 0.05 else "closed"
                segs[sid].append(Segment(sid, ev, round(t, 2), round(t + dur, 2), EPOCH, round(rng.random(), 3), state))
                t += dur
        store.bulk_load(sid, segs[sid], epoch=EPOCH)
    yield store, segs
    for sid in segs:
        store.drop_stream(sid)


def test_events_equal_the_stores_query_and_cursor_pages_give_each_once(service, loaded):
    store, _segs = loaded
    cases = [
        ({"stream": "yard"}, dict(stream="yard")),
        ({"stream": "yard,gate", "after": "1000", "before": "9000"}, dict(t0=1000.0, t1=9000.0)),
        ({"stream": "gate", "event": "car_present", "after": "0", "before": "50000"},
         dict(stream="gate", event="car_present", t0=0.0, t1=50000.0)),
    ]  # fmt: skip
    for params, query in cases:
        want = [segment_json(s) for s in store.query(**query) if s.stream_id in params["stream"].split(",")]
        assert want, params
        for limit in (1, 7, 1000):
            if limit == 1 and len(want) > 300:
                continue
            assert _all_events(service, limit, **params) == want, (params, limit)
    # ISO UTC windows: the same segments as the store's UTC query
    a, b = EPOCH + timedelta(seconds=2000), EPOCH + timedelta(seconds=6000)
    want = [segment_json(s) for s in store.query_utc("yard", None, a, b)]
    assert _all_events(service, 13, stream="yard", after=a.isoformat(), before=b.isoformat()) == want and want
    # filters and order: equal to the store's own page() on the same window
    got = _all_events(service, 11, stream="yard,gate", min_score="0.5", state="closed", order="desc")
    windows = {"yard": (-math.inf, math.inf), "gate": (-math.inf, math.inf)}
    ref = page(store, windows, filters=Filters(min_score=0.5, state="closed"), limit=10_000, order="desc").items
    assert got == [segment_json(s) for s in ref] and all(g["score"] >= 0.5 and g["state"] == "closed" for g in got)
    # one segment by id; unknown and malformed ids
    one = got[3]
    r = _get(service, f"{API}/events/{one['id']}")
    assert r.status_code == 200 and r.json() == one
    assert _get(service, f"{API}/events/{'0' * 20}").json()["code"] == "not_found"
    r = _get(service, f"{API}/events/..%2F..%2Fetc")
    assert r.status_code in (404, 422) and r.json()["code"] in ("invalid_id", "not_found")


def test_cursor_paging_is_stable_while_segments_land(service, loaded):
    store, segs = loaded
    seen, cursor, added = [], None, []
    while True:
        r = _get(service, f"{API}/events", stream="yard", limit=50, **({"cursor": cursor} if cursor else {}))
        body = r.json()
        seen += [i["id"] for i in body["items"]]
        if not body["next_cursor"]:
            break
        cursor = body["next_cursor"]
        late = Segment("yard", "person_present", 1e6 + len(added), 1e6 + len(added) + 1, EPOCH, 0.9)
        store.commit("yard", [late], watermark=None)
        added.append(late.id)
    assert len(seen) == len(set(seen)) and {s.id for s in segs["yard"]} | set(added) == set(seen)
    store.commit("yard", [], watermark=None)


def test_timeline_buckets_sum_to_the_covered_seconds(service, loaded):
    _store, segs = loaded
    lo, hi = 500.0, 40_000.0
    r = _get(service, f"{API}/timeline", streams="yard,gate", after=str(lo), before=str(hi), bucket="250")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["axis"] == "stream_s" and body["buckets"] == len(body["edges"]) == math.ceil((hi - lo) / 250)
    end = lo + 250 * body["buckets"]
    for lane in body["lanes"]:
        mine = [s for s in segs[lane["stream"]] if s.event == lane["event"]]
        covered = sum(max(0.0, min(s.end, end) - max(s.start, lo)) for s in mine)
        assert sum(lane["covered_s"]) == pytest.approx(covered, abs=0.1), lane["stream"]
        assert sum(lane["counts"]) >= sum(1 for s in mine if s.end >= lo and s.start < end)
    # the same over a UTC window with the default bucket width
    a, b = EPOCH + timedelta(seconds=lo), EPOCH + timedelta(seconds=hi)
    u = _get(service, f"{API}/timeline", streams="yard", after=a.isoformat(), before=b.isoformat()).json()
    assert u["axis"] == "utc" and datetime.fromisoformat(u["edges"][0]) == a and 50 <= u["buckets"] <= 200
    covered = sum(max(0.0, min(s.end, hi) - max(s.start, lo)) for s in segs["yard"] if s.event == "car_present")
    lane = next(la for la in u["lanes"] if la["event"] == "car_present")
    assert sum(lane["covered_s"]) == pytest.approx(covered, abs=0.1)


# ---- the live feed ------------------------------------------------------------------------------


async def _sse(url, headers, *, stop, last_event_id=None, take=None, params=None, connected=None):
    """Read SSE events until ``stop(event)`` or ``take`` events; returns [(event, id, data)].
    ``connected``: a list this appends to once the server has answered (the feed is open)."""
    out = []
    hdrs = {**headers, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30, read=120)) as client,
        client.stream("GET", url, headers=hdrs, params=params or {}) as resp,
    ):
        assert resp.status_code == 200, await resp.aread()
        if connected is not None:
            connected.append(url)
        kind, ident, data = None, None, []
        async for line in resp.aiter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                kind, ident = (value, ident) if name == "event" else (kind, value) if name == "id" else (kind, ident)
                if name == "data":
                    data.append(value)
                continue
            if data:
                ev = (kind, ident, json.loads("\n".join(data)))
                out.append(ev)
                if stop(ev) or (take is not None and len(out) >= take):
                    return out
            kind, ident, data = None, None, []
    return out


@pytest.mark.timeout(300)
def test_live_feed_replays_what_a_reconnecting_client_missed_and_reaches_50_clients(service, demo_long):
    clip = service["media"] / "feed-long.mp4"
    clip.write_bytes(demo_long.read_bytes())
    url, headers = f"{service['url']}{API}/events/live", service.headers("read")

    def done(ev):
        return ev[0] == "stream.state" and ev[2]["stream"] == "feedlong" and ev[2]["state"] in ("done", "failed")

    async def scenario():
        params = {"stream": "feedlong"}
        open_: list = []
        crowd = [asyncio.create_task(_sse(url, headers, stop=done, params=params, connected=open_)) for _ in range(50)]
        # one client reads a few records, goes away mid-file, and comes back with its last id
        first = asyncio.create_task(_sse(url, headers, stop=lambda ev: False, take=6, params=params, connected=open_))
        # every client is connected before the stream exists (on a loaded CI machine 2 s were not enough)
        deadline = time.monotonic() + 120
        while len(open_) < 51 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(open_) == 51, f"{len(open_)} of 51 live-feed clients connected within 120 s"
        await asyncio.sleep(1.0)
        add = httpx.post(
            f"{service['url']}{API}/streams",
            json={"source": str(clip), "id": "feedlong"},
            headers=service.headers("admin"),
            timeout=60,
        )
        assert add.status_code == 201, add.text
        before = await first
        await asyncio.sleep(3.0)  # away while the file goes on
        after = await _sse(url, headers, stop=done, last_event_id=before[-1][1], params=params)
        return await asyncio.gather(*crowd), before, after

    crowd, before, after = asyncio.run(asyncio.wait_for(scenario(), 240))
    store = service.store()
    stored = {s.id: s for s in store.query(stream="feedlong")}
    assert stored and len(stored) >= 6
    reference = crowd[0]
    assert [done(ev) for ev in reference].count(True) == 1
    # the reconnecting client: exactly what it missed, nothing twice, in the same order
    assert [(k, d) for k, _i, d in before + after] == [(k, d) for k, _i, d in reference]
    # everyone got every segment's close, with the stored values; and the same sequence
    for got in crowd:
        closes = {d["id"]: d for k, _i, d in got if k == "segment.close"}
        assert closes == {sid: segment_json(s) for sid, s in stored.items() if s.state == "closed"}
        assert [(k, d) for k, _i, d in got] == [(k, d) for k, _i, d in reference]
    # state changes came through the feed: from starting to done
    states = [d["state"] for k, _i, d in reference if k == "stream.state"]
    assert states[0] in ("starting", "running") and states[-1] == "done"

    # /metrics: parsed with prometheus_client's own parser; this stream's figures moved
    r = _get(service, "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = [s for fam in text_string_to_metric_families(r.text) for s in fam.samples]

    def value(name, **labels):
        return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    per_event = {}
    for s in stored.values():
        per_event[s.event] = per_event.get(s.event, 0) + 1
    for event, n in per_event.items():
        assert value("longwatch_segments", stream="feedlong", event=event) == n
    assert value("longwatch_stream_footage_seconds", stream="feedlong") == pytest.approx(60.0, abs=1.0)
    assert value("longwatch_model_latency_seconds_count") > 0 and value("longwatch_redis_up") == 1
    httpx.delete(f"{service['url']}{API}/streams/feedlong", params={"purge": "true"}, headers=service.headers(),
                 timeout=60)  # fmt: skip


# ---- auth ----------------------------------------------------------------------------------------


def _status(service, method, path, *, token=None, cookie=None, query_token=None, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    cookies = {"longwatch_token": cookie} if cookie else None
    params = dict(kw.pop("params", {}), **({"token": query_token} if query_token else {}))
    if path.endswith("/live"):
        with (
            httpx.Client(cookies=cookies, timeout=30) as c,
            c.stream(method, f"{service['url']}{path}", headers=headers, params=params) as r,
        ):
            return r.status_code
    with httpx.Client(cookies=cookies, timeout=60) as c:
        return c.request(method, f"{service['url']}{path}", headers=headers, params=params, **kw).status_code


def test_auth_matrix(service):
    port = free_port()  # a camera that is down: accepted with validate=false, it just waits
    reads = [
        ("GET", "/readyz", {}),
        ("GET", "/metrics", {}),
        ("GET", f"{API}/streams", {}),
        ("GET", f"{API}/events", {}),
        ("GET", f"{API}/timeline", {"params": {"after": "0", "before": "60"}}),
        ("GET", f"{API}/events/live", {}),
        ("GET", "/openapi.json", {}),
        ("GET", f"{API}/info", {}),
    ]
    admins = [
        (
            "POST",
            f"{API}/streams",
            {"json": {"source": f"rtsp://127.0.0.1:{port}/a", "id": "authcam", "validate": False}},
        ),
        ("PATCH", f"{API}/streams/authcam", {"json": {"state": "paused"}}),
        ("DELETE", f"{API}/streams/authcam", {"params": {"purge": "true"}}),
    ]
    assert _status(service, "GET", "/healthz") == 200  # the one open route
    for method, path, kw in reads + admins:
        assert _status(service, method, path, **kw) == 401, (method, path, "no token")
        assert _status(service, method, path, token="not-a-token", **kw) == 401, (method, path, "wrong token")
        assert _status(service, method, path, token=service["read"] + "x", **kw) == 401, (method, path)
    for method, path, kw in admins:
        assert _status(service, method, path, token=service["read"], **kw) == 403, (method, path, "read on admin")
        # a browser's ways of carrying the token never reach the admin routes
        assert _status(service, method, path, cookie=service["admin"], **kw) == 401, (method, path, "cookie")
        assert _status(service, method, path, query_token=service["admin"], **kw) == 401, (method, path, "query")
    for method, path, kw in reads:
        assert _status(service, method, path, token=service["read"], **kw) == 200, (method, path)
        assert _status(service, method, path, token=service["admin"], **kw) == 200, (method, path, "admin reads")
    # the live feed also takes the token as a query parameter or a cookie (EventSource sends no headers)
    assert _status(service, "GET", f"{API}/events/live", query_token=service["read"]) == 200
    assert _status(service, "GET", f"{API}/events/live", cookie=service["read"]) == 200
    assert _status(service, "GET", f"{API}/streams", query_token=service["read"]) == 401
    for method, path, kw in admins:
        assert 200 <= _status(service, method, path, token=service["admin"], **kw) < 300, (method, path)
    # the caller's scope, for clients (the page) to offer only what the token allows
    assert _get(service, f"{API}/info", "read").json()["scope"] == "read"
    info = _get(service, f"{API}/info", "admin").json()
    assert (
        info["scope"] == "admin" and info["auth"] is True and "person_present" in [e["event"] for e in info["events"]]
    )
    r = httpx.get(f"{service['url']}{API}/streams", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert r.json()["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    log = service["log"].read_text()
    assert service["admin"] not in log and service["read"] not in log


def test_tokens_made_with_the_cli_work_at_once_and_revoking_them_too(service):
    env = service["env"]
    make = subprocess.run(
        [sys.executable, "-m", "longwatch.cli", "token", "create", "--scope", "read", "--name", "grafana"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert make.returncode == 0, make.stderr
    token = make.stdout.strip()
    assert len(token) >= 32 and token not in make.stderr
    tokens_file = service["data"] / "tokens"
    assert token not in tokens_file.read_text() and oct(tokens_file.stat().st_mode)[-3:] == "600"
    until(lambda: _status(service, "GET", f"{API}/streams", token=token) == 200, 10)
    assert _status(service, "DELETE", f"{API}/streams/x", token=token) == 403
    listed = subprocess.run([sys.executable, "-m", "longwatch.cli", "token", "list"], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert "grafana\tread" in listed.stdout and token not in listed.stdout
    gone = subprocess.run([sys.executable, "-m", "longwatch.cli", "token", "revoke", "grafana"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert gone.returncode == 0, gone.stderr
    until(lambda: _status(service, "GET", f"{API}/streams", token=token) == 401, 10)


def test_serve_refuses_a_public_address_without_tokens(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGWATCH_")}
    env["LONGWATCH_RUNTIME__DATA_DIR"] = str(tmp_path / "data")
    out = subprocess.run(
        [sys.executable, "-m", "longwatch.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    err = " ".join(out.stderr.split())
    assert out.returncode == 2 and "refusing to listen on 0.0.0.0 without API tokens" in err, err


# ---- media roots and hostile input ---------------------------------------------------------------


def test_files_over_http_only_from_the_media_roots(service, tmp_path):
    media = service["media"]
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"x" * 100)
    (media / "escape.mp4").symlink_to(outside)
    (media / "sub").mkdir(exist_ok=True)
    cases = {
        str(media / ".." / outside.name): "outside_media_roots",
        str(media / "sub" / ".." / ".." / "x.mp4"): "outside_media_roots",
        str(media / "escape.mp4"): "outside_media_roots",
        f"file://{outside}": "outside_media_roots",
        "secret.mp4": "outside_media_roots",
        "/etc/passwd": "outside_media_roots",
        "ftp://127.0.0.1/x.mp4": "scheme_not_allowed",
        "javascript:alert(1)": "scheme_not_allowed",
    }
    for source, code in cases.items():
        r = httpx.post(f"{service['url']}{API}/streams", json={"source": source}, headers=service.headers(), timeout=60)
        assert r.status_code == 403 and r.json()["code"] == code, (source, r.text)
    r = httpx.post(f"{service['url']}{API}/streams", json={"source": str(media / "none.mp4")}, headers=service.headers(),
                   timeout=60)  # fmt: skip
    assert r.status_code == 422 and r.json()["code"] == "bad_source" and "no such file" in r.json()["message"]


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        (f"{API}/streams/a%20b", {}, "invalid_id"),
        (f"{API}/streams/{'x' * 300}", {}, "invalid_id"),
        (f"{API}/streams/%7Bslot%7D", {}, "invalid_id"),
        (f"{API}/events", {"stream": "../etc"}, "invalid_id"),
        (f"{API}/events", {"limit": "0"}, "invalid"),
        (f"{API}/events", {"limit": "10001"}, "invalid"),
        (f"{API}/events", {"limit": "lots"}, "invalid"),
        (f"{API}/events", {"after": "nan"}, "invalid_time"),
        (f"{API}/events", {"after": "1e400"}, "invalid_time"),
        (f"{API}/events", {"before": "2026-13-45T00:00:00"}, "invalid_time"),
        (f"{API}/events", {"after": "10", "before": "2026-11-28T00:00:00Z"}, "invalid_time"),
        (f"{API}/events", {"cursor": "!!!"}, "invalid_cursor"),
        (f"{API}/events", {"cursor": "eyJrIjpbMSwiYSIsImIiLCJjIl0sInEiOiJ4In0"}, "invalid_cursor"),
        (f"{API}/events", {"order": "sideways"}, "invalid"),
        (f"{API}/events", {"state": "half"}, "invalid"),
        (f"{API}/events", {"event": "a{b}"}, "invalid"),
        (f"{API}/events/live", {"since": "AAAA"}, "invalid_cursor"),
        (f"{API}/timeline", {"after": "100", "before": "50"}, "invalid_window"),
        (f"{API}/timeline", {"after": "0", "before": "6048000", "bucket": "0.5"}, "too_many_buckets"),
        (f"{API}/timeline", {"after": "0"}, "invalid"),
        (f"{API}/events/not-an-id", {}, "invalid_id"),
    ],
)
def test_hostile_input_gets_a_clear_4xx(service, path, params, code):
    r = _get(service, path, **params)
    assert 400 <= r.status_code < 500, (path, params, r.status_code, r.text)
    body = r.json()
    assert body["code"] == code and body["message"], (path, params, body)
    if code == "invalid":
        assert body["field"], body


def test_a_cursor_only_works_for_its_own_query(service, loaded):
    first = _get(service, f"{API}/events", stream="yard", limit=5).json()
    r = _get(service, f"{API}/events", stream="gate", limit=5, cursor=first["next_cursor"])
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    ok = _get(service, f"{API}/events", stream="yard", limit=5, cursor=first["next_cursor"])
    assert ok.status_code == 200 and ok.json()["items"][0]["id"] not in {i["id"] for i in first["items"]}
