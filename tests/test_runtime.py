"""The runtime end to end: real Ray (one instance for the module), a real Redis server, real footage,
the real CPU detector. Heavy drills are few: one clean run is the reference for the crash drills."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
from conftest import FOOTAGE, footage_file

ray = pytest.importorskip("ray")

from longwatch.pipeline.config import Settings  # noqa: E402
from longwatch.pipeline.store import SegmentStore  # noqa: E402

PERSON = "one-by-one-person-detection.mp4"
TRUTH = [(6.1, 20.2), (22.8, 45.1), (50.2, 70.1), (74.5, 87.3), (92.1, 120.5), (123.5, 136.5)]


def _truth_from_csv() -> list[tuple[float, float]]:
    import csv

    rows = list(csv.DictReader((FOOTAGE / "events.csv").read_text().splitlines()))
    return [
        (float(r["start_s"]), float(r["end_s"])) for r in rows if r["clip"] == PERSON and r["event"] == "person_present"
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lwdata")


def _runtime(redis_server, data_dir, **runtime):
    from longwatch.actors.runtime import Runtime

    settings = Settings()
    rt = settings.runtime.model_copy(
        update={
            "redis_url": redis_server.url,
            "data_dir": str(data_dir),
            "redis_prefix": f"e{uuid.uuid4().hex[:8]}",
            **runtime,
        }
    )
    settings = settings.model_copy(update={"runtime": rt})
    return Runtime(settings).start()


def _segments(runtime, stream_id, event="person_present"):
    store = SegmentStore.from_url(runtime.redis_url, prefix=runtime.settings.runtime.redis_prefix)
    try:
        return [s for s in store.query(stream=stream_id, event=event)]
    finally:
        store.close()


def _wm(runtime, stream_id):
    store = SegmentStore.from_url(runtime.redis_url, prefix=runtime.settings.runtime.redis_prefix)
    try:
        return store.watermark(stream_id) or {}
    finally:
        store.close()


@pytest.fixture(scope="module")
def clean_run(ray_local, redis_server, data_dir):
    """The reference: the person clip processed once, undisturbed."""
    path = footage_file(PERSON)
    rt = _runtime(redis_server, data_dir)
    try:
        rt.add(str(path), stream_id="clean")
        status = rt.wait(timeout=600)
        segs = _segments(rt, "clean")
    finally:
        rt.close()
    return {**status["clean"], "prefix": rt.settings.runtime.redis_prefix}, segs


@pytest.mark.timeout(900)
def test_person_segments_match_ground_truth(clean_run):
    status, segs = clean_run
    assert status["state"] == "done", status
    truth = _truth_from_csv() if (FOOTAGE / "events.csv").is_file() else TRUTH
    assert len(truth) == 6
    got = [(round(s.start, 2), round(s.end, 2)) for s in segs]
    assert len(segs) == 6, got
    for seg, (t0, t1) in zip(segs, truth):
        assert abs(seg.start - t0) <= 1.0 and abs(seg.end - t1) <= 1.0, (got, truth)
        assert seg.state == "closed" and seg.start_utc.year == 2017  # absolute time from the file's epoch


def test_no_scene_cut_on_a_static_camera(clean_run, redis_server):
    # The clip has no cuts (a fast exit at 43.6-45 s fools frame differencing, not the cut detector).
    status, _ = clean_run
    store = SegmentStore.from_url(redis_server.url, prefix=status["prefix"])
    try:
        assert store.query(stream="clean", event="scene_cut") == []
        assert {s.event for s in store.query(stream="clean")} == {"person_present"}
    finally:
        store.close()


def _kill_after(rt, stream_id, clip_marks, *, redis_server=None):
    """Kill the stream's worker process each time its watermark passes a mark (a real crash)."""
    kills = []

    def drill():
        for mark in clip_marks:
            deadline = time.time() + 300
            while time.time() < deadline:
                if _wm(rt, stream_id).get("clip_index", -1) >= mark:
                    break
                time.sleep(0.2)
            worker = rt.worker(stream_id)
            ray.kill(worker, no_restart=False)
            kills.append(mark)

    t = threading.Thread(target=drill, daemon=True)
    t.start()
    return t, kills


@pytest.mark.timeout(900)
def test_worker_killed_twice_mid_file_gives_identical_segments(clean_run, redis_server, data_dir):
    _, reference = clean_run
    path = footage_file(PERSON)
    rt = _runtime(redis_server, data_dir)
    try:
        rt.add(str(path), stream_id="crashy")
        drill, kills = _kill_after(rt, "crashy", [4, 10])
        status = rt.wait(timeout=600)["crashy"]
        drill.join(timeout=60)
        segs = _segments(rt, "crashy")
        all_segs = _segments(rt, "crashy", event=None)
    finally:
        rt.close()
    assert kills == [4, 10]
    assert status["state"] == "done" and status["restarts"] == 2, status
    assert [(s.start, s.end, s.score, s.state) for s in segs] == [(s.start, s.end, s.score, s.state) for s in reference]
    assert len({s.id for s in all_segs}) == len(all_segs)  # nothing duplicated


@pytest.mark.timeout(900)
def test_redis_outage_mid_run_loses_nothing(clean_run, redis_server, data_dir):
    _, reference = clean_run
    path = footage_file(PERSON)
    rt = _runtime(redis_server, data_dir)
    try:
        rt.add(str(path), stream_id="outage")
        deadline = time.time() + 300
        while _wm(rt, "outage").get("clip_index", -1) < 5 and time.time() < deadline:
            time.sleep(0.2)
        redis_server.stop()
        time.sleep(4)
        redis_server.start()
        status = rt.wait(timeout=600)["outage"]
        segs = _segments(rt, "outage")
    finally:
        if not redis_server.running:
            redis_server.start()
        rt.close()
    assert status["state"] == "done", status
    assert [(s.start, s.end, s.score) for s in segs] == [(s.start, s.end, s.score) for s in reference]


@pytest.mark.timeout(900)
@pytest.mark.rtsp
def test_two_files_and_a_camera_through_one_pool(ray_local, redis_server, data_dir, synthetic, tmp_path):
    from rtsp_server import RtspServer

    cam_file = footage_file("car-detection.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(100_000))
    rt = _runtime(redis_server, data_dir)
    try:
        with RtspServer(footage_file(PERSON), mount="/cam") as cam:
            rt.add(str(cam_file), stream_id="cars")
            rt.add(synthetic["cfr"].path, stream_id="synthetic")
            rt.add(str(corrupt), stream_id="corrupt")
            rt.add(cam.url, stream_id="cam")
            status = rt.wait(timeout=600, stream_ids=["cars", "synthetic", "corrupt"])
            # The camera keeps running until stopped; give it time to produce clips.
            deadline = time.time() + 120
            while time.time() < deadline and _wm(rt, "cam").get("clip_index", -1) < 2:
                time.sleep(0.5)
            live = rt.status()["cam"]
            from longwatch.actors.model_pool import handle

            pool = handle(prefix=rt.settings.runtime.redis_prefix).stats.remote().result()
            rt.stop("cam")
            final = rt.status()
        cam_wm = _wm(rt, "cam")
    finally:
        rt.close()
    assert status["cars"]["state"] == "done" and status["synthetic"]["state"] == "done", status
    assert status["corrupt"]["state"] == "failed" and "corrupt.mp4" in status["corrupt"]["error"]
    assert live["state"] == "running" and cam_wm.get("clip_index", -1) >= 2
    assert final["cam"]["state"] == "stopped"
    # One model pool scored every stream's clips, several clips per batch (cross-stream batching).
    clips = sum(int(final[s].get("clips") or 0) for s in ("cars", "synthetic", "cam"))
    assert pool["clips"] >= clips - 2 and pool["batches"] < pool["clips"], (pool, clips)


@pytest.mark.timeout(600)
def test_qwen_events_end_to_end_with_a_tiny_model(ray_local, redis_server, data_dir, tmp_path):
    """Runtime + a tiny random Qwen2.5-VL over real footage → segments in Redis. With random weights
    the content is noise: this checks plumbing, times and idempotency, not accuracy."""
    pytest.importorskip("torch")
    from longwatch.actors.runtime import Runtime
    from tests.tiny_qwen import make_tiny_checkpoint

    clip = footage_file("bikes.mp4")
    ckpt = make_tiny_checkpoint(tmp_path / "tiny-qwen")
    events = (
        "- event: cyclist\n  backend: qwen2_5_vl\n  prompt: a person rides a bicycle\n  threshold: 0.05\n"
        "  min_duration_s: 0.0\n  merge_gap_s: 0.0\n"
        "- event: person_present\n  detector: {class: person, min_score: 0.4}\n"
    )
    base = Settings()
    settings = base.model_copy(
        update={
            "runtime": base.runtime.model_copy(
                update={
                    "redis_url": redis_server.url,
                    "data_dir": str(data_dir),
                    "redis_prefix": f"q{uuid.uuid4().hex[:8]}",
                }
            ),
            "vlm": base.vlm.model_copy(
                update={"model": str(ckpt), "dtype": "fp32", "device": "cpu", "ground": "never"}
            ),
        }
    )

    def run_once():
        rt = Runtime(settings, events_text=events).start()
        try:
            rt.add(str(clip), stream_id="bikes")
            status = rt.wait(timeout=300)["bikes"]
            from longwatch.actors.model_pool import handle

            stats = handle("qwen2_5_vl", rt.settings.runtime.redis_prefix).stats.remote().result()
            return status, _segments(rt, "bikes", event=None), stats
        finally:
            rt.close()

    status, segs, stats = run_once()
    assert status["state"] == "done", status
    assert stats["clips"] == int(status["clips"]) >= 2  # every clip went through the VLM pool
    cyclist = [s for s in segs if s.event == "cyclist"]
    assert cyclist and all(0.0 <= s.start <= s.end <= 10.5 for s in cyclist)
    assert {s.event for s in segs} >= {"cyclist", "person_present"}  # both backends, one stream
    # Idempotent: forget the watermark and process the file again: same segments, same ids, no duplicates.
    store = SegmentStore.from_url(redis_server.url, prefix=settings.runtime.redis_prefix)
    store.r.delete(store.key("bikes", "wm"))
    store.close()
    status2, segs2, _ = run_once()
    assert status2["state"] == "done"
    assert sorted((s.id, s.start, s.end) for s in segs2) == sorted((s.id, s.start, s.end) for s in segs)
