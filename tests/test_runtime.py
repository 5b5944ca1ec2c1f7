"""The runtime end to end: real Ray (one instance for the module), a real Redis server, real footage,
the real CPU detector. Heavy drills are few: one clean run is the reference for the crash drills.

Each drill runs on two files: ``demo``, bikes.mp4 six times over (a minute of real street footage the
project fetches itself from PyPI, so it runs in every clone), and ``footage``, the team's person clip
(139 s, with ground truth; skipped where ../shared/footage is absent). Every run of one file uses the
same stream id under a prefix of its own, so segment ids are comparable across runs.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FOOTAGE, footage_file

ray = pytest.importorskip("ray")

from longwatch.pipeline.config import Settings  # noqa: E402
from longwatch.pipeline.store import SegmentStore  # noqa: E402

PERSON = "one-by-one-person-detection.mp4"
TRUTH = [(6.1, 20.2), (22.8, 45.1), (50.2, 70.1), (74.5, 87.3), (92.1, 120.5), (123.5, 136.5)]
SID = "clip"  # one stream id for every run of a file (ids are a hash of stream, event and start)
COPY_S, COPIES = 10.0, 6  # the demo file: bikes.mp4 (10 s) six times


@dataclass(frozen=True)
class Case:
    """A file and how the drills cut into it (clip indices, at the case's clip length)."""

    name: str
    path: Path
    sampler: dict
    kill_at: tuple[int, int]
    outage_at: int
    duration: float


def _truth_from_csv() -> list[tuple[float, float]]:
    import csv

    rows = list(csv.DictReader((FOOTAGE / "events.csv").read_text().splitlines()))
    return [
        (float(r["start_s"]), float(r["end_s"])) for r in rows if r["clip"] == PERSON and r["event"] == "person_present"
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lwdata")


def _runtime(redis_server, data_dir, sampler=None, detection=None, **runtime):
    from longwatch.actors.runtime import Runtime

    settings = Settings()
    if detection:
        settings = settings.model_copy(update={"detection": settings.detection.model_copy(update=detection)})
    rt = settings.runtime.model_copy(
        update={
            "redis_url": redis_server.url,
            "data_dir": str(data_dir),
            "redis_prefix": f"e{uuid.uuid4().hex[:8]}",
            **runtime,
        }
    )
    update = {"runtime": rt}
    if sampler:
        update["sampler"] = settings.sampler.model_copy(update=sampler)
    settings = settings.model_copy(update=update)
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


def _same(segs) -> list[tuple]:
    """What must be identical between two runs of one file: every segment of every event, id included."""
    return sorted((s.id, s.event, s.start, s.end, s.score, s.state) for s in segs)


@pytest.fixture(scope="module")
def demo_case(demo_long) -> Case:
    # 2 s clips: 30 clips in the minute, so a kill at clip 15 still leaves half the file to resume.
    return Case("demo", demo_long, {"clip_seconds": 2.0}, kill_at=(6, 15), outage_at=12, duration=COPY_S * COPIES)


@pytest.fixture(scope="module")
def footage_case() -> Case:
    return Case("footage", footage_file(PERSON), {}, kill_at=(4, 10), outage_at=5, duration=139.4)


def _clean(case, redis_server, data_dir) -> dict:
    """The reference: the case's file processed once, undisturbed."""
    rt = _runtime(redis_server, data_dir, case.sampler)
    try:
        rt.add(str(case.path), stream_id=SID)
        status = rt.wait(timeout=600)
        segs = _segments(rt, SID)
        every = _segments(rt, SID, event=None)
        wm = _wm(rt, SID)
    finally:
        rt.close()
    prefix = rt.settings.runtime.redis_prefix
    return {"case": case, "status": status[SID], "prefix": prefix, "segs": segs, "all": every, "wm": wm}


@pytest.fixture(scope="module")
def demo_clean(ray_local, redis_server, data_dir, demo_case):
    return _clean(demo_case, redis_server, data_dir)


@pytest.fixture(scope="module")
def footage_clean(ray_local, redis_server, data_dir, footage_case):
    return _clean(footage_case, redis_server, data_dir)


@pytest.fixture(scope="module", params=["demo", "footage"])
def clean_run(request):
    """The clean run of each case: the drills below run once per case."""
    return request.getfixturevalue(f"{request.param}_clean")


@pytest.mark.timeout(900)
def test_person_segments_match_ground_truth(footage_clean):
    status, segs = footage_clean["status"], footage_clean["segs"]
    assert status["state"] == "done", status
    truth = _truth_from_csv() if (FOOTAGE / "events.csv").is_file() else TRUTH
    assert len(truth) == 6
    got = [(round(s.start, 2), round(s.end, 2)) for s in segs]
    assert len(segs) == 6, got
    for seg, (t0, t1) in zip(segs, truth):
        assert abs(seg.start - t0) <= 1.0 and abs(seg.end - t1) <= 1.0, (got, truth)
        assert seg.state == "closed" and seg.start_utc.year == 2017  # absolute time from the file's epoch


def test_no_scene_cut_on_a_static_camera(footage_clean):
    # The clip has no cuts (a fast exit at 43.6-45 s fools frame differencing, not the cut detector).
    assert [s for s in footage_clean["all"] if s.event == "scene_cut"] == []
    assert {s.event for s in footage_clean["all"]} == {"person_present", "motion"}


@pytest.mark.timeout(900)
def test_demo_segments_repeat_with_each_copy_of_the_clip(demo_clean):
    """bikes.mp4 six times: the whole minute is processed, and each copy gives the first copy's segments
    shifted by 10 s, every event (times are the frames' own PTS; nothing lost, split or doubled)."""
    status, every, wm = demo_clean["status"], demo_clean["all"], demo_clean["wm"]
    assert status["state"] == "done" and status["restarts"] == 0, status
    assert int(status["clips"]) == wm["clip_index"] + 1 >= 30, (status, wm)
    assert 59.96 <= wm["footage_s"] <= 62.0, wm  # the end of the last clip: the last frame (59.96 s) is in it
    assert all(s.state == "closed" and 0.0 <= s.start <= s.end < COPY_S * COPIES for s in every), every
    first = sorted((s.event, s.start, s.end) for s in every if s.start < COPY_S)
    assert {"person_present", "car_present", "scene_cut"} <= {e for e, _, _ in first}, first
    assert all(e < COPY_S for _, _, e in first)  # no segment runs across a copy's end
    for k in range(1, COPIES):
        copy_k = sorted((s.event, s.start, s.end) for s in every if k * COPY_S <= s.start < (k + 1) * COPY_S)
        shifted = [(e, a + k * COPY_S, b + k * COPY_S) for e, a, b in first]
        assert [e for e, _, _ in copy_k] == [e for e, _, _ in shifted], (k, copy_k, first)
        for (_, a, b), (_, a0, b0) in zip(copy_k, shifted):
            assert a == pytest.approx(a0, abs=1e-3) and b == pytest.approx(b0, abs=1e-3), (k, copy_k, shifted)
    assert len({s.id for s in every}) == len(every) == COPIES * len(first)


def _kill_after(rt, stream_id, clip_marks, *, redis_server=None):
    """Kill the stream's worker process each time its watermark passes a mark (a real crash)."""
    kills = []

    def drill():
        for mark in clip_marks:
            deadline = time.time() + 300
            while time.time() < deadline:
                if _wm(rt, stream_id).get("clip_index", -1) >= mark:
                    break
                time.sleep(0.05)
            worker = rt.worker(stream_id)
            ray.kill(worker, no_restart=False)
            kills.append(mark)

    t = threading.Thread(target=drill, daemon=True)
    t.start()
    return t, kills


@pytest.mark.timeout(900)
def test_worker_killed_twice_mid_file_gives_identical_segments(clean_run, redis_server, data_dir):
    case, reference = clean_run["case"], clean_run["all"]
    rt = _runtime(redis_server, data_dir, case.sampler)
    try:
        rt.add(str(case.path), stream_id=SID)
        drill, kills = _kill_after(rt, SID, case.kill_at)
        status = rt.wait(timeout=600)[SID]
        drill.join(timeout=60)
        all_segs = _segments(rt, SID, event=None)
        wm = _wm(rt, SID)
    finally:
        rt.close()
    assert kills == list(case.kill_at)
    assert status["state"] == "done", status
    assert wm["clip_index"] == clean_run["wm"]["clip_index"] and wm["footage_s"] == clean_run["wm"]["footage_s"]
    assert _same(all_segs) == _same(reference)  # same ids, events, times, scores: exactly once
    assert len({s.id for s in all_segs}) == len(all_segs)  # nothing duplicated
    assert status["restarts"] == 2, status  # both deaths counted


@pytest.mark.timeout(900)
def test_redis_outage_mid_run_loses_nothing(clean_run, redis_server, data_dir):
    case, reference = clean_run["case"], clean_run["all"]
    rt = _runtime(redis_server, data_dir, case.sampler)
    try:
        rt.add(str(case.path), stream_id=SID)
        deadline = time.time() + 300
        while _wm(rt, SID).get("clip_index", -1) < case.outage_at and time.time() < deadline:
            time.sleep(0.1)
        redis_server.stop()
        time.sleep(4)
        redis_server.start()
        status = rt.wait(timeout=600)[SID]
        segs = _segments(rt, SID, event=None)
    finally:
        if not redis_server.running:
            redis_server.start()
        rt.close()
    assert status["state"] == "done", status
    assert _same(segs) == _same(reference)


@pytest.mark.timeout(900)
def test_detector_hosted_in_the_worker_gives_the_pools_segments(demo_clean, redis_server, data_dir):
    """``runtime.model_host: worker`` (what ``longwatch run`` of one file resolves ``auto`` to): no Serve
    application is deployed, the stream's worker scores its clips itself (batches of one), and every
    segment, id and score equals the pool's clean run of the same file."""
    from ray import serve

    from longwatch.actors.model_pool import app_name

    case, reference = demo_clean["case"], demo_clean["all"]
    rt = _runtime(redis_server, data_dir, case.sampler, model_host="worker")
    try:
        assert rt.settings.runtime.model_host == "worker" and not rt._apps
        rt.add(str(case.path), stream_id=SID)
        status = rt.wait(timeout=600)[SID]
        apps = serve.status().applications
        segs = _segments(rt, SID, event=None)
    finally:
        rt.close()
    assert status["state"] == "done", status
    assert app_name("detector", rt.settings.runtime.redis_prefix) not in apps
    batches = status["model_batch_size"]["detector"]
    assert batches["count"] > 0 and batches["sum"] == batches["count"], batches  # every call one clip, here
    assert _same(segs) == _same(reference)


def test_model_host_auto_hosts_one_streams_detector_in_its_worker():
    """``auto`` → ``worker`` only for a one-shot run of one stream on a Ray this runtime starts, with the
    detector pool not configured; the service, several streams, a joined cluster, more replicas or a GPU
    fraction keep the pool; an explicit choice stays."""
    from longwatch.actors.runtime import Runtime

    def host(service=False, streams=1, local=True, **runtime):
        settings = Settings()
        settings = settings.model_copy(update={"runtime": settings.runtime.model_copy(update=runtime)})
        rt = Runtime(settings, service=service, expected_streams=streams)
        rt._local_ray = local
        rt._resolve_model_host()
        return rt.settings.runtime.model_host

    assert host() == "worker"
    assert host(service=True) == "pool"
    assert host(streams=2) == "pool" and host(streams=None) == "pool"
    assert host(local=False) == "pool"
    assert host(model_replicas=2) == "pool" and host(model_num_gpus=0.5) == "pool"
    assert host(model_host="pool") == "pool" and host(streams=3, model_host="worker") == "worker"


@pytest.mark.timeout(900)
@pytest.mark.rtsp
@pytest.mark.parametrize("case", ["demo", "footage"])
def test_two_files_and_a_camera_through_one_pool(ray_local, redis_server, data_dir, synthetic, tmp_path, request, case):
    """A real file, a synthetic one, a corrupt one and an RTSP camera at once. ``demo``: bikes.mp4, and the
    camera serves bikes.mp4 × 6, in 2 s clips (the camera's three clips take 6 s of real time, not 24 s);
    ``footage``: car-detection.mp4 (with a silent audio track), and the camera serves the person clip."""
    from rtsp_server import RtspServer

    if case == "demo":
        file, cam_file = request.getfixturevalue("demo_clip"), request.getfixturevalue("demo_long")
        sampler = {"clip_seconds": 2.0}
    else:
        file, cam_file, sampler = footage_file("car-detection.mp4"), footage_file(PERSON), None
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(100_000))
    # Every clip goes to the pool (no motion gate): the pool's counts are compared with the streams'. A
    # batch waits up to 0.5 s for more clips, so clips of the streams meet in batches even on a busy machine.
    rt = _runtime(redis_server, data_dir, sampler, detection={"gate": False}, batch_wait_s=0.5)
    try:
        with RtspServer(cam_file, mount="/cam") as cam:
            rt.add(str(file), stream_id="file")
            rt.add(synthetic["cfr"].path, stream_id="synthetic")
            rt.add(str(corrupt), stream_id="corrupt")
            rt.add(cam.url, stream_id="cam")
            status = rt.wait(timeout=600, stream_ids=["file", "synthetic", "corrupt"])
            # The camera keeps running until stopped; give it time to produce clips.
            deadline = time.time() + 120
            while time.time() < deadline and _wm(rt, "cam").get("clip_index", -1) < 2:
                time.sleep(0.5)
            live = rt.status()["cam"]
            from longwatch.actors.model_pool import handle

            rt.stop("cam")
            final = rt.status()
            # read after the camera stopped: every clip the streams counted has been scored by then
            pool = handle(prefix=rt.settings.runtime.redis_prefix).stats.remote().result()
        cam_wm = _wm(rt, "cam")
        file_segs = _segments(rt, "file", event=None)
    finally:
        rt.close()
    assert status["file"]["state"] == "done" and status["synthetic"]["state"] == "done", status
    assert status["corrupt"]["state"] == "failed" and "corrupt.mp4" in status["corrupt"]["error"]
    assert live["state"] == "running" and cam_wm.get("clip_index", -1) >= 2
    assert final["cam"]["state"] == "paused"  # stopping one stream pauses its spec: it stays stopped
    assert "car_present" in {s.event for s in file_segs}, file_segs  # both files are street scenes
    # One model pool scored every stream's clips, several clips per batch (cross-stream batching).
    clips = sum(int(final[s].get("clips") or 0) for s in ("file", "synthetic", "cam"))
    assert pool["clips"] >= clips - 2 and pool["batches"] < pool["clips"], (pool, clips)


@pytest.mark.timeout(600)
def test_qwen_events_end_to_end_with_a_tiny_model(ray_local, redis_server, data_dir, tmp_path, demo_clip):
    """Runtime + a tiny random Qwen2.5-VL over real footage → segments in Redis. With random weights
    the content is noise: this checks plumbing, times and idempotency, not accuracy."""
    pytest.importorskip("torch")
    from longwatch.actors.runtime import Runtime
    from tests.tiny_qwen import make_tiny_checkpoint

    clip = demo_clip  # the same bytes as shared/footage/bikes.mp4
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
