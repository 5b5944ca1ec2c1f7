"""``longwatch/metrics.py``: the Prometheus text of ``GET /metrics``, read from a real Redis (statuses
and segment counts written by the real store), parsed back with prometheus_client's own parser; and
one real run through the runtime (Ray, Serve pool, CPU detector) whose metrics must move."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from longwatch.metrics import STREAM_STATES, render
from longwatch.pipeline.histograms import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S
from longwatch.pipeline.store import SegmentStore
from longwatch.pipeline.types import Segment
from longwatch.pipeline.worker import ModelCall, StreamReport

EPOCH = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def families(store) -> dict:
    body, ctype = render(store)
    assert ctype.startswith("text/plain") and isinstance(body, bytes)
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(fams, family, sample=None, **labels) -> float | None:
    """The value of the sample ``sample`` (default: the family's name) with exactly ``labels``."""
    got = [
        s.value for s in fams[family].samples if s.name == (sample or family) and s.labels == {**labels}
    ]  # labels match exactly
    assert len(got) <= 1, got
    return got[0] if got else None


def histogram(fams, family, **labels) -> tuple[list[tuple[float, float]], float, float]:
    """(le, cumulative count) pairs with +Inf last, the sum and the count of one histogram."""
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in fams[family].samples
        if s.name == f"{family}_bucket" and {k: v for k, v in s.labels.items() if k != "le"} == labels
    ]
    return buckets, value(fams, family, f"{family}_sum", **labels), value(fams, family, f"{family}_count", **labels)


def seg(stream, event, start, end, state="closed"):
    return Segment(stream, event, float(start), float(end), EPOCH, 0.9, state)


def test_render_shows_what_the_store_holds(store):
    # cam3: a live stream with a few segments and a status as a worker publishes it
    store.commit(
        "cam3",
        [seg("cam3", "person", i * 10, i * 10 + 4) for i in range(3)] + [seg("cam3", "car", 1, 2)],
        watermark={"clip": 3},
        epoch=EPOCH,
    )
    rep = StreamReport(
        "cam3",
        "rtsp://cam/3",
        state="running",
        footage_s=42.5,
        lag_s=0.75,
        decode_fps=25.0,
        sampled_fps=2.0,
        queue_depth=3,
        dropped_clips=4,
        reconnects=2,
    )
    cam3_latencies = [0.004, 0.03, 0.2, 0.2, 1.7, 45.0]  # one below the first bound, one above the last
    for lat, n in zip(cam3_latencies, [1, 2, 3, 4, 4, 33]):
        rep.observe_model_call(ModelCall("detector", lat, n))
    store.set_status("cam3", **rep.as_status(), restarts=1)
    # lobby: a finished file, another backend too, no lag (files have none: lag_s = "")
    store.commit("lobby", [seg("lobby", "dog", 0, 1)], watermark={"done": True}, epoch=EPOCH)
    rep2 = StreamReport("lobby", "/v/lobby.mp4", state="done", footage_s=60.0, decode_fps=0.0, sampled_fps=0.0)
    for lat in (0.02, 0.3):
        rep2.observe_model_call(ModelCall("detector", lat, 8))
    rep2.observe_model_call(ModelCall("qwen2_5_vl", 2.0, 1))
    store.set_status("lobby", **rep2.as_status())
    store.set_retention("lobby", 10)
    store.commit("lobby", [seg("lobby", "dog", 100, 101)], watermark={"done": True})  # expires (0, 1)

    fams = families(store)
    assert value(fams, "longwatch_redis_up") == 1.0
    for sid, state in (("cam3", "running"), ("lobby", "done")):
        ups = {s.labels["state"]: s.value for s in fams["longwatch_stream_up"].samples if s.labels["stream"] == sid}
        assert set(ups) == set(STREAM_STATES) and ups[state] == 1.0 and sum(ups.values()) == 1.0
    assert value(fams, "longwatch_stream_fps", stream="cam3", kind="decode") == 25.0
    assert value(fams, "longwatch_stream_fps", stream="cam3", kind="sampled") == 2.0
    assert value(fams, "longwatch_stream_fps", stream="lobby", kind="decode") == 0.0
    assert value(fams, "longwatch_stream_lag_seconds", stream="cam3") == 0.75
    assert value(fams, "longwatch_stream_lag_seconds", stream="lobby") is None  # a file has no lag
    assert value(fams, "longwatch_stream_queue_depth", stream="cam3") == 3.0
    assert value(fams, "longwatch_stream_footage_seconds", stream="cam3") == 42.5
    assert value(fams, "longwatch_stream_footage_seconds", stream="lobby") == 60.0
    dropped = "longwatch_stream_dropped_clips"  # counters: the family's samples carry the _total suffix
    assert value(fams, dropped, f"{dropped}_total", stream="cam3") == 4.0
    assert value(fams, "longwatch_stream_reconnects", "longwatch_stream_reconnects_total", stream="cam3") == 2.0
    assert value(fams, "longwatch_stream_restarts", "longwatch_stream_restarts_total", stream="cam3") == 1.0
    # segments: the store's counts, which equal what a query finds (retention took lobby's first dog)
    segs = {(s.labels["stream"], s.labels["event"]): s.value for s in fams["longwatch_segments"].samples}
    assert segs == {("cam3", "person"): 3.0, ("cam3", "car"): 1.0, ("lobby", "dog"): 1.0}
    for (sid, event), n in segs.items():
        assert len(store.query(stream=sid, event=event)) == n

    # histograms: per backend, summed over the streams, cumulative, +Inf = count
    buckets, total, count = histogram(fams, "longwatch_model_latency_seconds", backend="detector")
    assert [le for le, _ in buckets] == [*LATENCY_BUCKETS_S, float("inf")]
    every = cam3_latencies + [0.02, 0.3]
    assert [c for _, c in buckets] == [sum(1 for x in every if x <= le) for le, _ in buckets]
    assert count == len(every) == buckets[-1][1] and total == pytest.approx(sum(every))
    assert all(a <= b for (_, a), (_, b) in zip(buckets, buckets[1:]))
    buckets, total, count = histogram(fams, "longwatch_model_batch_size", backend="detector")
    assert [le for le, _ in buckets] == [*BATCH_SIZE_BUCKETS, float("inf")]
    assert [c for _, c in buckets] == [1, 2, 5, 7, 7, 7, 8] and count == 8 and total == 1 + 2 + 3 + 4 + 4 + 33 + 16
    buckets, total, count = histogram(fams, "longwatch_model_latency_seconds", backend="qwen2_5_vl")
    assert count == 1 and total == 2.0 and buckets[LATENCY_BUCKETS_S.index(2.5)][1] == 1.0
    assert buckets[LATENCY_BUCKETS_S.index(1.0)][1] == 0.0

    # values move: more segments, new status
    store.commit("cam3", [seg("cam3", "person", 500, 501)], watermark={"clip": 4})
    rep.footage_s, rep.queue_depth = 50.0, 0
    rep.observe_model_call(ModelCall("detector", 0.01, 1))
    store.set_status("cam3", **rep.as_status())
    fams = families(store)
    assert value(fams, "longwatch_segments", stream="cam3", event="person") == 4.0
    assert value(fams, "longwatch_stream_footage_seconds", stream="cam3") == 50.0
    assert value(fams, "longwatch_stream_queue_depth", stream="cam3") == 0.0
    assert histogram(fams, "longwatch_model_latency_seconds", backend="detector")[2] == len(every) + 1


def test_render_with_malformed_or_foreign_status_fields(store):
    """Fields of another shape (an older worker, other bucket bounds, text) are left out, never fatal."""
    store.commit("cam3", [seg("cam3", "person", 0, 1)], watermark={}, epoch=EPOCH)
    store.set_status(
        "cam3",
        state="strange",
        lag_s="",
        decode_fps="fast",
        queue_depth=True,
        model_latency_s={"detector": {"le": [1, 2], "counts": [1, 1], "sum": 1.0, "count": 1}, "x": 3},
        model_batch_size="nope",
    )
    fams = families(store)
    assert value(fams, "longwatch_stream_up", stream="cam3", state="strange") == 1.0
    assert value(fams, "longwatch_stream_fps", stream="cam3", kind="decode") is None
    assert value(fams, "longwatch_stream_queue_depth", stream="cam3") is None
    assert not [s for s in fams["longwatch_model_latency_seconds"].samples if s.labels.get("backend") == "detector"]
    assert value(fams, "longwatch_segments", stream="cam3", event="person") == 1.0


def test_redis_down_gives_redis_up_zero_and_no_exception(redis_server):
    """The API's store gives up within seconds (cli.py: retries=2, retry_deadline_s=3): so does a scrape."""
    prefix = f"m{uuid.uuid4().hex[:8]}"
    st = SegmentStore.from_url(redis_server.url, prefix=prefix, retries=1, retry_deadline_s=1.0)
    try:
        st.commit("cam3", [seg("cam3", "person", 0, 1)], watermark={}, epoch=EPOCH)
        assert value(families(st), "longwatch_redis_up") == 1.0
        redis_server.stop()
        try:
            fams = families(st)
        finally:
            redis_server.start()
        assert set(fams) == {"longwatch_redis_up"} and value(fams, "longwatch_redis_up") == 0.0
        fams = families(st)  # back
        assert value(fams, "longwatch_redis_up") == 1.0
        assert value(fams, "longwatch_segments", stream="cam3", event="person") == 1.0
    finally:
        if not redis_server.running:
            redis_server.start()
        for k in list(st.r.scan_iter(match=f"{prefix}:*")):
            st.r.delete(k)
        st.close()
    # nothing listening at all
    nowhere = SegmentStore.from_url("redis://127.0.0.1:1", retries=0, retry_deadline_s=0.2)
    try:
        fams = families(nowhere)
        assert set(fams) == {"longwatch_redis_up"} and value(fams, "longwatch_redis_up") == 0.0
    finally:
        nowhere.close()


@pytest.mark.timeout(120)
def test_worker_publishes_rates_queue_and_model_histograms(synthetic, store):
    """The stream loop (no Ray) with a score function that says what its model calls took: the status
    carries decode and sampled rates while it runs, the queue depth, and one histogram entry per clip."""
    import time

    import numpy as np

    from longwatch.pipeline.config import Settings
    from longwatch.pipeline.events import load_events
    from longwatch.pipeline.worker import Scores, StreamProcessor

    def score(clip):
        if clip.index == 0:  # hold the first clip until the reader has queued three more behind it
            deadline = time.monotonic() + 60
            while proc._sampled_frames < 4 * clip.n and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(0.05)  # slower than decoding: clips wait in the queue
        return Scores({"person_present": np.zeros(clip.n)}, [ModelCall("detector", 0.05, 1 + clip.index % 3)])

    s = Settings()
    settings = s.model_copy(
        update={"sampler": s.sampler.model_copy(update={"min_fps": 2, "max_fps": 2, "clip_seconds": 1})}
    )
    events = load_events("- event: person_present\n  detector: {class: person, min_score: 0.4}\n")
    seen: list[dict] = []
    proc = StreamProcessor(
        "gop",
        synthetic["gop"].path,
        settings=settings,
        events=events,
        store=store,
        score_fn=score,
        max_pending_clips=3,
        on_clip=lambda rep: seen.append(rep.as_status()),
    )
    rep = proc.run()
    assert rep.state == "done" and rep.clips == len(seen) == 31
    assert all(st["decode_fps"] > 0 and st["sampled_fps"] > 0 for st in seen), seen
    assert all(0 <= st["queue_depth"] <= proc.max_pending for st in seen) and any(st["queue_depth"] for st in seen)
    fams = families(store)
    assert histogram(fams, "longwatch_model_latency_seconds", backend="detector")[2] == rep.clips
    bat, total, n = histogram(fams, "longwatch_model_batch_size", backend="detector")
    assert bat[0][1] == sum(1 for i in range(rep.clips) if i % 3 == 0)  # batches of 1
    assert n == rep.clips and total == sum(1 + i % 3 for i in range(rep.clips))
    assert value(fams, "longwatch_stream_fps", stream="gop", kind="decode") == 0.0  # done: not decoding now
    assert value(fams, "longwatch_stream_up", stream="gop", state="done") == 1.0
    assert value(fams, "longwatch_stream_footage_seconds", stream="gop") == rep.footage_s > 0


@pytest.mark.timeout(300)
def test_metrics_move_when_a_stream_runs(ray_local, redis_server, tmp_path, demo_clip):
    """bikes.mp4 through the real runtime (Ray, the Serve detector pool, a stream worker): afterwards
    the metrics show its footage, its segments per event (= the store's own segments) and model calls
    in the latency and batch-size histograms, all read from Redis."""
    from longwatch.actors.runtime import Runtime
    from longwatch.pipeline.config import Settings

    base = Settings()
    prefix = f"m{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(
        update={
            "runtime": base.runtime.model_copy(
                update={"redis_url": redis_server.url, "data_dir": str(tmp_path / "data"), "redis_prefix": prefix}
            ),
            "sampler": base.sampler.model_copy(update={"clip_seconds": 2.0}),
        }
    )
    store = SegmentStore.from_url(redis_server.url, prefix=prefix, retries=2, retry_deadline_s=3.0)
    rt = Runtime(settings).start()
    try:
        before = families(store)
        assert value(before, "longwatch_redis_up") == 1.0
        assert value(before, "longwatch_stream_footage_seconds", stream="bikes") is None
        rt.add(str(demo_clip), stream_id="bikes")
        status = rt.wait(timeout=240)["bikes"]
        fams = families(store)
        segments = store.query(stream="bikes")
        meta = store.meta("bikes")
    finally:
        rt.close()
        for k in list(store.r.scan_iter(match=f"{prefix}:*")):
            store.r.delete(k)
        store.close()
    assert status["state"] == "done", status
    clips = int(meta["clips"])
    assert clips >= 4  # 10 s in 2 s clips
    assert value(fams, "longwatch_stream_up", stream="bikes", state="done") == 1.0
    assert value(fams, "longwatch_stream_footage_seconds", stream="bikes") == meta["footage_s"] >= 9.0
    by_event: dict[str, int] = {}
    for s in segments:
        by_event[s.event] = by_event.get(s.event, 0) + 1
    shown = {s.labels["event"]: s.value for s in fams["longwatch_segments"].samples if s.labels["stream"] == "bikes"}
    assert shown and all(v > 0 for v in shown.values()) and shown == by_event, (shown, by_event)
    # every clip went through the detector pool once: one latency and one batch size each
    lat, lat_sum, lat_n = histogram(fams, "longwatch_model_latency_seconds", backend="detector")
    assert lat_n == clips and lat_sum > 0 and lat[-1][1] == lat_n
    assert all(a <= b for (_, a), (_, b) in zip(lat, lat[1:]))
    bat, bat_sum, bat_n = histogram(fams, "longwatch_model_batch_size", backend="detector")
    assert bat_n == clips and bat_sum >= clips and bat[-1][1] == bat_n
    assert value(fams, "longwatch_stream_dropped_clips", "longwatch_stream_dropped_clips_total", stream="bikes") == 0
    assert value(fams, "longwatch_stream_queue_depth", stream="bikes") == 0  # done: nothing waits
