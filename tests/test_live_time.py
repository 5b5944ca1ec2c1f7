"""Live time continuity across a worker restart: a camera keeps the epoch of its first session.

A real GStreamer RTSP server and a real Redis, at the StreamProcessor level (no Ray): session 1 runs
a few clips and is stopped (as a restart would), and after an outage a new StreamProcessor on the
same stream id continues the same stream-seconds axis. The camera serves ``demo`` (bikes.mp4 × 6, a
minute of real footage the project fetches itself) or ``footage`` (the team's person clip, where present):
the scores are fixed (the event is on throughout), so what is checked is time, not content.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import footage_file

from longwatch.pipeline.config import Settings
from longwatch.pipeline.events import load_events
from longwatch.pipeline.worker import GAP_EVENT, StreamProcessor

EVENTS = load_events("- event: person_present\n  detector: {class: person, min_score: 0.4}\n")


@pytest.fixture(params=["demo", "footage"])
def camera_file(request):
    """What the RTSP camera serves: longer than both sessions and the outage together (each client
    gets the file from its start), so the server never reaches its end during the test."""
    if request.param == "demo":
        return request.getfixturevalue("demo_long")
    return footage_file("one-by-one-person-detection.mp4")


def _settings():
    # The score function below is on in every frame and sees every clip: no motion gate, and no scene
    # cuts (which end segments) on the edited demo footage; its own 1-s clips (no live decision
    # windows). These tests are about the time axis.
    s = Settings()
    return s.model_copy(
        update={
            "sampler": s.sampler.model_copy(
                update={"min_fps": 2, "max_fps": 2, "clip_seconds": 1, "scene_cuts": False}
            ),
            "detection": s.detection.model_copy(update={"gate": False, "live_window_s": None}),
        }
    )


def _session(url: str, store, seconds: float, clips: list) -> StreamProcessor:
    def always_on(clip):  # the event is on throughout: a segment is open when the session stops
        clips.append((clip.index, clip.start, clip.end))
        return {"person_present": np.full(clip.n, 1.0)}

    proc = StreamProcessor("cam", url, settings=_settings(), events=EVENTS, store=store, score_fn=always_on)
    runner = threading.Thread(target=proc.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + seconds + 15
    while len(clips) < 3 and time.monotonic() < deadline:  # connected and cutting clips
        time.sleep(0.1)
    time.sleep(seconds)
    proc.stop()
    runner.join(timeout=30)
    assert not runner.is_alive() and proc.report.state == "stopped", proc.report
    return proc


@pytest.mark.rtsp
@pytest.mark.timeout(90)
def test_a_restarted_live_stream_continues_its_first_sessions_axis(store, camera_file):
    from rtsp_server import RtspServer

    outage_s = 4.0
    with RtspServer(camera_file, mount="/restart") as cam:
        first: list = []
        _session(cam.url, store, 2.0, first)
        epoch1 = store.epoch("cam")
        wm1 = store.watermark("cam")
        segs1 = {s.id: s for s in store.query(stream="cam")}
        open1 = [s for s in segs1.values() if s.event == "person_present" and s.state == "open"]
        assert len(open1) == 1, segs1
        last_sample_1 = wm1["segmenters"]["person_present"]["last_t"]

        time.sleep(outage_s)
        second: list = []
        _session(cam.url, store, 2.0, second)

    epoch2 = store.epoch("cam")
    wm2 = store.watermark("cam")
    assert epoch2 == epoch1, "the stream keeps the epoch of its first session"
    # Stream seconds only grow: session 2 starts after session 1's last time, by about the outage.
    t1_end = max(end for _i, _s, end in first)
    assert wm1["footage_s"] == pytest.approx(t1_end)
    t2_start = min(start for _i, start, _e in second)
    assert t2_start - t1_end >= outage_s - 0.5, (t1_end, t2_start)
    assert t2_start - t1_end <= outage_s + 10.0, (t1_end, t2_start)
    assert wm2["footage_s"] > wm1["footage_s"] + outage_s - 0.5
    assert min(i for i, _s, _e in second) == max(i for i, _s, _e in first) + 1  # clip indices go on

    segs2 = {s.id: s for s in store.query(stream="cam")}
    # Session 1's segments keep their ids and times; the one open at the stop is closed at the last
    # frame of session 1 (its last sample), not bridged across the outage.
    for sid, seg in segs1.items():
        assert sid in segs2, seg
        after = segs2[sid]
        assert (after.event, after.start, after.end) == (seg.event, seg.start, seg.end), (seg, after)
    closed = segs2[open1[0].id]
    assert closed.state == "closed" and closed.end == pytest.approx(last_sample_1)
    # The outage is recorded as a gap segment from session 1's last time to session 2's first frame.
    gaps = store.query(stream="cam", event=GAP_EVENT)
    assert len(gaps) == 1, gaps
    gap = gaps[0]
    assert gap.start == pytest.approx(wm1["footage_s"]) and gap.end == pytest.approx(t2_start)
    assert gap.end - gap.start >= outage_s - 0.5
    # No event segment spans the outage; session 2's segment starts at its first sample, after the gap.
    events = [s for s in segs2.values() if s.event == "person_present"]
    assert len(events) == 2, events
    assert not any(s.start < gap.end and s.end > gap.start for s in events), (events, gap)
    new = [s for s in events if s.id not in segs1]
    assert len(new) == 1 and new[0].start == pytest.approx(t2_start)
