"""Glass-to-segment on a live stream, counted in decision windows: a real GStreamer RTSP camera on
127.0.0.1 serving the synthetic motion clip (whose truth is known), a real Redis, the StreamProcessor
with its default settings (no Ray). A live stream whose events need no VLM cuts short clips
(``detection.live_window_s``, 1 s), and each clip is a decision committed as soon as it is judged, so
a segment must be in Redis, open, as soon as the windows after its start hold the event's minimum
duration: at most ⌈(min_duration_s + one motion-thumbnail interval) / window⌉ windows after the one its
start lies in (2 with the defaults). Counted in windows (commits), not timed: a slow machine takes
longer per window, not more windows."""

from __future__ import annotations

import math
import threading
import time

import pytest

from longwatch.pipeline.config import Settings
from longwatch.pipeline.events import load_events
from longwatch.pipeline.worker import StreamProcessor

MOTION_ONLY = load_events("- event: motion\n  backend: motion\n  merge_gap_s: 1.0\n")


@pytest.mark.rtsp
@pytest.mark.timeout(120)
def test_a_live_segment_is_in_redis_within_two_decision_windows_of_its_event(tmp_path, store):
    from rtsp_server import RtspServer

    from sample_videos.make_synthetic import motion_clip

    clip = motion_clip(tmp_path / "motion.mp4", duration=20.0)
    small = clip.events[0]  # the small square moves during (7.0, 10.0) s of the file
    commits: list[tuple[float, list]] = []  # per committed clip: footage_s after it, motion segments then

    def on_clip(_report) -> None:
        wm = store.watermark("cam") or {}
        commits.append(
            (float(wm.get("footage_s") or 0.0), [s for s in store.query(stream="cam") if s.event == "motion"])
        )

    def no_model(_clip):  # motion runs in the worker itself: no model is ever asked
        raise AssertionError("a motion-only stream called a model")

    settings = Settings()
    window = settings.detection.live_window_s
    assert window is not None
    bound = math.ceil((MOTION_ONLY.get("motion").min_duration_s + 1 / settings.detection.motion_fps) / window)
    with RtspServer(clip.path, mount="/motion") as cam:
        proc = StreamProcessor(
            "cam", cam.url, settings=settings, events=MOTION_ONLY, store=store, score_fn=no_model, on_clip=on_clip
        )
        runner = threading.Thread(target=proc.run, daemon=True)
        runner.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (commits and commits[-1][0] >= small[1] + 2.0):
            time.sleep(0.05)
        wm = store.watermark("cam")
        proc.stop()
        runner.join(timeout=30)
    assert not runner.is_alive() and proc.report.state == "stopped", proc.report
    assert commits and commits[-1][0] >= small[1] + 2.0, commits  # the camera played past the event
    ends = [f for f, _ in commits]
    steps = [b - a for a, b in zip(ends, ends[1:])]
    assert steps and max(steps) <= window + 0.2, steps  # decision windows of `window` s (a frame's slack)
    # The live axis starts at the camera's first frame, the file's start: the event at its file time.
    first = next(i for i, (_, segs) in enumerate(commits) if segs)
    seg = commits[first][1][0]
    assert abs(seg.start - small[0]) <= 0.5, (seg, small)
    assert seg.state == "open"  # visible while it happens, not once it is over
    started_in = next(i for i, f in enumerate(ends) if f > seg.start)  # the window holding its start
    assert first - started_in <= bound, (first, started_in, bound, ends)
    # A live stream learns its background afresh after any restart: its watermark keeps no motion state.
    assert wm is not None and "motion" not in wm
