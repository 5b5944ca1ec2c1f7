"""Segment thumbnails (issue #10): every segment is committed with its best frame as a small JPEG (its
detection box drawn), in the same MULTI/EXEC; they survive a stopped or killed worker (exactly: the same
bytes as an uninterrupted run), replays do not duplicate them, retention and purge delete them.

Real parts only: a real Redis server (and a real three-master Cluster), real footage the project fetches
itself (bikes.mp4, and six copies of it), the real CPU detector, a real GStreamer RTSP camera, and real
Ray for the killed-worker drill (the detector pool's boxes travel through Ray Serve)."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from longwatch.pipeline.config import Settings
from longwatch.pipeline.events import default_events_path, load_events
from longwatch.pipeline.segmenter import Segmenter
from longwatch.pipeline.store import SegmentStore
from longwatch.pipeline.thumbs import (
    BOX_RGB,
    LAST_EVERY_S,
    PROVISIONAL_TTL_S,
    THUMB_WIDTH,
    Thumbnail,
    ThumbTracker,
    decode_jpeg,
    render,
)
from longwatch.pipeline.types import Clip, Segment
from longwatch.pipeline.worker import StreamProcessor

EVENTS = load_events(Path(default_events_path()).read_text())
DETECTOR_EVENTS = {e.event for e in EVENTS.events if e.backend == "detector"}
EPOCH = datetime(2024, 5, 1, tzinfo=UTC)
MAX_THUMB_BYTES = 20_000  # 640×272 street footage gives 7-12 KB at 320 px, quality 80


# ---- helpers ------------------------------------------------------------------------------------------


def _frames(n: int, h: int = 90, w: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(n, h, w, 3), dtype=np.uint8)


def _thumb(event: str = "person_present", start: float = 1.0, *, provisional: bool = False, **kw) -> Thumbnail:
    img = _frames(1, 272, 640)[0]
    jpeg, w, h = render(img, (0.2, 0.2, 0.6, 0.9))
    return Thumbnail(event, start, start + 0.5, 0.9, jpeg, w, h, (0.2, 0.2, 0.6, 0.9), provisional=provisional, **kw)


def _thumb_keys(store: SegmentStore, sid: str) -> list[str]:
    return [k for k in store.stream_keys(sid) if ":thumb:" in k]


def box_drawn(jpeg: bytes, box) -> float:
    """The fraction of the box outline (its 2-px line just inside the box) in the box colour: a place
    counts where either of the line's two pixels across is close to it."""
    from longwatch.pipeline.thumbs import _pixels

    img = decode_jpeg(jpeg).astype(int)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = _pixels(box, w, h)
    assert BOX_RGB == (255, 0, 255)  # magenta: red and blue well above green
    near = (img[..., 0] - img[..., 1] > 100) & (img[..., 2] - img[..., 1] > 100)
    sides = [
        near[y0 : y1 + 1, x0] | near[y0 : y1 + 1, min(x0 + 1, w - 1)],
        near[y0 : y1 + 1, x1] | near[y0 : y1 + 1, max(x1 - 1, 0)],
        near[y0, x0 : x1 + 1] | near[min(y0 + 1, h - 1), x0 : x1 + 1],
        near[y1, x0 : x1 + 1] | near[max(y1 - 1, 0), x0 : x1 + 1],
    ]
    line = np.concatenate(sides)
    return float(line.mean()) if len(line) else 0.0


def check_thumbnails(store: SegmentStore, sid: str, segs: list[Segment]) -> dict[str, tuple]:
    """Every segment has its thumbnail: a JPEG that decodes, at most 320 px wide, small, its frame inside
    the segment (or the nearest one for a point event), a box drawn for detector events. Returns what
    identifies each (frame time, score, box, sha256 of the bytes)."""
    out = {}
    for seg in segs:
        th = store.thumbnail(sid, seg.id)
        assert th is not None, f"segment {seg} has no thumbnail"
        img = decode_jpeg(th.jpeg)
        assert img.shape[1] == th.width <= THUMB_WIDTH and img.shape[0] == th.height, (img.shape, th.width)
        assert len(th.jpeg) <= MAX_THUMB_BYTES, len(th.jpeg)
        assert th.event == seg.event and th.start == pytest.approx(seg.start)
        if seg.end > seg.start:
            assert seg.start - 1e-6 <= th.t <= seg.end + 1e-6, (seg, th.t)
            assert th.first_t is not None and th.last_t is not None
            assert seg.start - 1e-6 <= th.first_t <= th.t <= th.last_t <= seg.end + 1e-6, (seg, th)
        if seg.event in DETECTOR_EVENTS:
            assert th.box is not None, seg
            assert box_drawn(th.jpeg, th.box) > 0.8, (seg, th.box)
            assert th.score == pytest.approx(seg.score), (seg, th.score)  # the best frame scored the segment's max
        out[seg.id] = (round(th.t, 6), th.score, th.box, hashlib.sha256(th.jpeg).hexdigest())
    assert len(_thumb_keys(store, sid)) == len(segs)  # one per segment: nothing left over, nothing doubled
    return out


# ---- the store --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["single", "cluster"])
def test_thumbnails_commit_with_their_segments_and_go_with_them(request, which):
    store: SegmentStore = request.getfixturevalue("store" if which == "single" else "cluster_store")
    a = Segment("cam", "person_present", 1.0, 6.0, EPOCH, 0.9, "closed")
    b = Segment("cam", "person_present", 600.0, 606.0, EPOCH, 0.8, "open")
    ta, tb = _thumb(start=1.0), _thumb(start=600.0, provisional=False)
    store.commit("cam", [a, b], watermark={"clip_index": 1}, thumbs={a.id: ta, b.id: tb})
    got = store.thumbnail("cam", a.id)
    assert got == ta  # bytes, times, box: all read back (provisional is not stored)
    assert store.r.ttl(store.keys.thumb("cam", a.id)) == -1  # an announced segment's picture never expires
    # a replay (the same segments) leaves the stored pictures as they are: nothing doubles or changes
    other = _thumb(start=1.0, first_t=2.0)
    store.commit("cam", [a, b], watermark={"clip_index": 1}, thumbs={a.id: other, b.id: tb})
    assert len(_thumb_keys(store, "cam")) == 2 and store.thumbnail("cam", a.id) == ta
    # a segment that changes takes its new picture with it
    a2 = Segment("cam", "person_present", 1.0, 7.0, EPOCH, 0.95, "closed")
    store.commit("cam", [a2], watermark={"clip_index": 1}, thumbs={a.id: other})
    assert store.thumbnail("cam", a.id) == other

    # a segment being built, not announced yet: provisional (a TTL), then dropped: deleted in that commit
    pending = Segment("cam", "car_present", 700.0, 700.5)
    store.commit(
        "cam", [], watermark={"clip_index": 2}, thumbs={pending.id: _thumb("car_present", 700.0, provisional=True)}
    )
    ttl = store.r.ttl(store.keys.thumb("cam", pending.id))
    assert 0 < ttl <= PROVISIONAL_TTL_S
    store.commit("cam", [], watermark={"clip_index": 3}, thumbs={pending.id: None})
    assert store.thumbnail("cam", pending.id) is None

    # retention: the segment that ends too long before the head goes, and its picture with it
    store.set_retention("cam", 300)
    c = Segment("cam", "person_present", 900.0, 905.0, EPOCH, 0.7, "closed")
    res = store.commit("cam", [c], watermark={"clip_index": 4}, thumbs={c.id: _thumb(start=900.0)})
    assert res.expired == 1
    assert store.get("cam", a.id) is None and store.thumbnail("cam", a.id) is None
    assert store.thumbnail("cam", b.id) is not None and store.thumbnail("cam", c.id) is not None
    assert len(_thumb_keys(store, "cam")) == 2

    # purge (drop_stream): every key of the stream, pictures included
    store.drop_stream("cam")
    assert store.stream_keys("cam") == []


def test_thumbnail_record_round_trip_with_strip_frames(store):
    img = _frames(2, 120, 200)
    first, _, _ = render(img[0])
    th = _thumb(first_t=1.0, last_t=3.0, first=first, last=render(img[1])[0], first_box=(0.0, 0.0, 0.5, 0.5))
    seg = Segment("cam2", "person_present", 1.0, 3.0, EPOCH, 0.9)
    store.commit("cam2", [seg], watermark=None, thumbs={seg.id: th})
    got = store.thumbnail("cam2", seg.id)
    assert got == th and got.has_strip_frames and got.nbytes == len(th.jpeg) + len(th.first) + len(th.last)


# ---- choosing the best frame ------------------------------------------------------------------------


def _clip(i: int, times, frames) -> Clip:
    return Clip("s", i, 2.0, np.asarray(times, float), frames, epoch=EPOCH)


def _scenario():
    """Six clips of four frames at 2 fps: a run from 1.0 s to 7.5 s (its best frame in the third clip, at
    5.0 s), a one-frame blip at 9.5 s (too short: dropped), a run from 10.5 s on (flushed at the end)."""
    times = np.arange(24) * 0.5
    scores = np.zeros(24)
    scores[2:16] = 0.6
    scores[10] = 0.95  # t = 5.0: the best frame
    scores[19] = 0.9  # the blip: t = 9.5
    scores[21:] = [0.7, 0.8, 0.75]
    boxes = np.full((24, 4), np.nan, np.float32)
    boxes[scores > 0] = (0.25, 0.25, 0.75, 0.75)
    return times, scores, boxes, _frames(24)


def _run_tracker(split_at: set[int], store: SegmentStore, sid: str):
    """Feed the scenario clip by clip; at each clip in ``split_at``, round-trip the segmenter's state and
    rebuild the tracker from what the store holds (as a resumed worker does)."""
    times, scores, boxes, frames = _scenario()
    seg = Segmenter(sid, "person_present", on=0.5, off=0.35, min_duration_s=1.0, merge_gap_s=0.0, epoch=EPOCH)
    tracker = ThumbTracker(sid)
    deleted: list[str] = []
    for k in range(6):
        if k in split_at:
            seg = Segmenter.from_state(seg.state())
            tracker = ThumbTracker(sid)
            wanted = tracker.wanted(seg)
            if wanted:
                tracker.restore(seg, store.thumbnail(sid, wanted))
        sl = slice(4 * k, 4 * k + 4)
        clip = _clip(k, times[sl], frames[sl])
        ups = seg.push(clip.times, scores[sl])
        tracker.observe(seg, ups, clip=clip, scores=scores[sl], boxes=boxes[sl])
        changes = tracker.changes()
        deleted += [i for i, th in changes.items() if th is None]
        store.commit(sid, [u.segment for u in ups], watermark={"clip_index": k}, thumbs=changes)
    ups = seg.flush(times[-1])
    tracker.observe(seg, ups)
    store.commit(sid, [u.segment for u in ups], watermark={"done": True}, thumbs=tracker.changes())
    return deleted


def test_the_best_frame_across_clips_and_an_exact_resume(store):
    deleted = _run_tracker(set(), store, "ref")
    segs = store.query(stream="ref")
    assert [(s.start, s.end) for s in segs] == [(0.75, 7.75), (10.25, 11.5)]
    first, second = (store.thumbnail("ref", s.id) for s in segs)
    assert (first.t, first.score, first.box) == (5.0, 0.95, (0.25, 0.25, 0.75, 0.75))  # third clip's frame
    assert (first.first_t, first.last_t) == (1.0, 7.5)
    assert (second.t, second.score, second.first_t, second.last_t) == (11.0, 0.8, 10.5, 11.5)
    assert box_drawn(first.jpeg, first.box) > 0.8
    assert box_drawn(render(_frames(24)[10])[0], first.box) < 0.2  # the same frame without its box: no line
    # the blip was built (its provisional picture stored with clip 4), then dropped: deleted with clip 5
    blip = Segment("ref", "person_present", 9.25, 9.25).id
    assert deleted == [blip] and store.thumbnail("ref", blip) is None
    assert len(_thumb_keys(store, "ref")) == 2
    ref = {s.id: store.thumbnail("ref", s.id) for s in segs}
    for splits in ({1}, {2}, {3}, {4, 5}, {1, 2, 3, 4, 5}):
        sid = f"r{''.join(map(str, sorted(splits)))}"
        _run_tracker(splits, store, sid)
        got = store.query(stream=sid)
        assert [(s.start, s.end) for s in got] == [(s.start, s.end) for s in segs]
        for s, r in zip(got, ref.values()):
            th = store.thumbnail(sid, s.id)
            assert (th.t, th.score, th.first_t, th.last_t, th.jpeg) == (r.t, r.score, r.first_t, r.last_t, r.jpeg)
        assert len(_thumb_keys(store, sid)) == 2, splits


def test_a_camera_strip_renders_its_last_frame_now_and_then_and_the_true_one_at_the_close():
    """Strip frames (a camera): while a segment is open its stored last frame moves on at most every
    LAST_EVERY_S of stream time (not every clip), never falls behind the best frame, and the closed
    segment's last frame is exactly its last sampled frame."""
    times = np.arange(48) * 0.5  # 24 clips of two frames at 2 fps
    scores = np.full(48, 0.6)
    scores[:2] = 0.0
    scores[30] = 0.9  # the best frame, t = 15.0
    scores[41:] = 0.0  # the run ends at 20.0
    boxes = np.full((48, 4), np.nan, np.float32)
    boxes[scores > 0] = (0.25, 0.25, 0.75, 0.75)
    frames = _frames(48)
    seg = Segmenter("cam", "person_present", on=0.5, off=0.35, min_duration_s=1.0, merge_gap_s=0.0, epoch=EPOCH)
    tracker = ThumbTracker("cam", strip_frames=True)
    stored: list[tuple[float, float]] = []  # (best t, last t) after each write
    final = None
    for k in range(24):
        sl = slice(2 * k, 2 * k + 2)
        clip = _clip(k, times[sl], frames[sl])
        ups = seg.push(clip.times, scores[sl])
        tracker.observe(seg, ups, clip=clip, scores=scores[sl], boxes=boxes[sl])
        for th in tracker.changes().values():
            assert th is not None and th.first_t <= th.t <= th.last_t, th
            stored.append((th.t, th.last_t))
            assert th.last == render(frames[int(th.last_t * 2)], th.last_box)[0]  # the picture of that time
            final = th
    lasts = sorted({last for _, last in stored})
    # the first clip's newest frame, then every LAST_EVERY_S (5 s), then at 15.0 the best frame overtook
    # the stored last one (the clip's newest frame, 15.5, became the last), then the true last one at the
    # close: five renders of the last frame instead of one per clip (38)
    assert LAST_EVERY_S == 5.0 and lasts == [1.5, 6.5, 11.5, 15.5, 20.0], lasts
    assert final is not None and (final.t, final.first_t, final.last_t) == (15.0, 1.0, 20.0)
    assert final.last == render(frames[40], final.last_box)[0]


# ---- the worker on real footage ---------------------------------------------------------------------


def _settings(**sampler) -> Settings:
    s = Settings()
    return s.model_copy(update={"sampler": s.sampler.model_copy(update=sampler)})


def _file_run(redis_server, path, scorer, stop_after: int | None, settings: Settings):
    store = SegmentStore.from_url(redis_server.url, prefix=f"th{uuid.uuid4().hex[:8]}")
    for attempt in range(2):
        proc = StreamProcessor("clip", str(path), settings=settings, events=EVENTS, store=store, score_fn=scorer)
        if stop_after is not None and attempt == 0:
            proc.on_clip = lambda rep, p=proc: p.stop() if rep.clips >= stop_after else None
        if proc.run().state == "done":
            break
    return store


@pytest.mark.timeout(600)
def test_a_stopped_and_resumed_file_keeps_every_thumbnail_exactly(redis_server, demo_long, scorer):
    settings = _settings(clip_seconds=2.0)
    ref_store = _file_run(redis_server, demo_long, scorer, None, settings)
    try:
        segs = ref_store.query(stream="clip")
        assert {s.event for s in segs} >= {"person_present", "car_present", "scene_cut"}
        reference = check_thumbnails(ref_store, "clip", segs)
        sizes = [len(ref_store.thumbnail("clip", s.id).jpeg) for s in segs]
        print(f"\n{len(sizes)} thumbnails: {min(sizes)}-{max(sizes)} bytes, mean {np.mean(sizes):.0f}")
    finally:
        ref_store.close()
    for k in (3, 8, 17):
        store = _file_run(redis_server, demo_long, scorer, k, settings)
        try:
            got = store.query(stream="clip")
            assert sorted(s.id for s in got) == sorted(s.id for s in segs), k
            assert check_thumbnails(store, "clip", got) == reference, f"stopped after clip {k}"
        finally:
            store.close()


@pytest.mark.rtsp
@pytest.mark.timeout(180)
def test_a_camera_keeps_the_frames_of_its_strip(store, demo_long, scorer):
    from rtsp_server import RtspServer

    settings = _settings(min_fps=2, max_fps=2, clip_seconds=1)
    with RtspServer(demo_long, mount="/thumbs") as cam:
        proc = StreamProcessor("cam", cam.url, settings=settings, events=EVENTS, store=store, score_fn=scorer)
        runner = threading.Thread(target=proc.run, daemon=True)
        runner.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not [
            s for s in store.query(stream="cam") if s.state == "closed" and s.event in DETECTOR_EVENTS
        ]:
            time.sleep(0.3)
        proc.stop(close_open=True)  # a removed camera: its open segments close at their last frame
        runner.join(timeout=60)
    assert proc.report.state == "stopped", proc.report
    segs = store.query(stream="cam")
    assert segs and all(s.state == "closed" for s in segs), segs
    check_thumbnails(store, "cam", segs)
    for seg in segs:
        th = store.thumbnail("cam", seg.id)
        assert th.has_strip_frames, seg  # a camera keeps no recording: its strip's frames are stored
        for jpeg in (th.first, th.last):
            assert decode_jpeg(jpeg).shape == decode_jpeg(th.jpeg).shape
        assert th.nbytes <= 3 * MAX_THUMB_BYTES


# ---- a killed worker, through the real runtime (Ray, the Serve detector pool) -----------------------


@pytest.mark.timeout(900)
def test_a_worker_killed_mid_file_leaves_every_segment_with_its_thumbnail(ray_local, redis_server, demo_long, tmp_path):
    import ray

    from longwatch.actors.runtime import Runtime

    settings = Settings()
    rt_settings = settings.runtime.model_copy(
        update={"redis_url": redis_server.url, "data_dir": str(tmp_path), "redis_prefix": f"k{uuid.uuid4().hex[:8]}"}
    )
    settings = settings.model_copy(
        update={"runtime": rt_settings, "sampler": settings.sampler.model_copy(update={"clip_seconds": 2.0})}
    )
    rt = Runtime(settings).start()
    store = SegmentStore.from_url(redis_server.url, prefix=rt_settings.redis_prefix)
    kills: list[int] = []

    def drill():
        for mark in (6, 15):
            deadline = time.time() + 300
            while time.time() < deadline and (store.watermark("clip") or {}).get("clip_index", -1) < mark:
                time.sleep(0.05)
            ray.kill(rt.worker("clip"), no_restart=False)  # a real crash, between two commits
            kills.append(mark)

    try:
        rt.add(str(demo_long), stream_id="clip")
        killer = threading.Thread(target=drill, daemon=True)
        killer.start()
        status = rt.wait(timeout=600)["clip"]
        killer.join(timeout=60)
        segs = store.query(stream="clip")
        assert kills == [6, 15] and status["state"] == "done" and status["restarts"] == 2, (kills, status)
        assert {s.event for s in segs} >= {"person_present", "car_present", "scene_cut"}
        check_thumbnails(store, "clip", segs)  # boxes too: they came through the Serve pool
    finally:
        rt.close()
        store.close()
