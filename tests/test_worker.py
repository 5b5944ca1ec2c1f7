"""The stream loop without Ray: backpressure on files, counted shedding on live streams, resume."""

from __future__ import annotations

import threading
import time
import types

import numpy as np
import pytest
from conftest import footage_file

from longwatch.pipeline.config import Settings
from longwatch.pipeline.events import load_events
from longwatch.pipeline.worker import StreamProcessor

EVENTS = load_events("- event: person_present\n  detector: {class: person, min_score: 0.4}\n")


def slow_model(delay_s: float, seen: list):
    """A model that takes ``delay_s`` per clip (and finds nothing)."""

    def score(clip):
        time.sleep(delay_s)
        seen.append(clip.index)
        return {"person_present": np.full(clip.n, 0.0)}

    return score


def _settings(**sampler):
    # The detector sees every clip (no motion gate): these tests count the model's calls, in clips of
    # the length they set (live streams too: no 2-s live decision windows).
    s = Settings()
    return s.model_copy(
        update={
            "sampler": s.sampler.model_copy(update=sampler),
            "detection": s.detection.model_copy(update={"gate": False, "live_window_s": None}),
        }
    )


@pytest.mark.timeout(120)
def test_slow_model_slows_a_file_and_loses_nothing(synthetic, store):
    seen: list = []
    settings = _settings(min_fps=2, max_fps=2, clip_seconds=1)
    proc = StreamProcessor(
        "file",
        synthetic["gop"].path,
        settings=settings,
        events=EVENTS,
        store=store,
        score_fn=slow_model(0.05, seen),
        max_pending_clips=2,
    )
    rep = proc.run()
    assert rep.state == "done" and rep.dropped_clips == 0
    # 30 s at 1 s per clip (+ the last frame, 29.9 s, in a final short clip), in order, none lost.
    assert seen == list(range(len(seen))) and len(seen) == 31
    wm = store.watermark("file")
    assert wm["done"] is True and wm["clip_index"] == 30


def test_a_live_streams_queue_holds_live_queue_s_of_decision_windows(store):
    """A live stream's clips may wait for the model for ``runtime.live_queue_s`` of footage (1-s decision
    windows: 10 of them), a file's and long clips' for ``max_pending_clips``."""
    settings = Settings()
    proc = StreamProcessor(
        "q", "rtsp://127.0.0.1:9/cam", settings=settings, events=EVENTS, store=store, score_fn=slow_model(0, []),
        max_pending_clips=4,
    )  # fmt: skip
    camera, file = types.SimpleNamespace(live=True, native_fps=30.0), types.SimpleNamespace(live=False, native_fps=30.0)
    assert settings.detection.live_window_s == 1.0 and settings.runtime.live_queue_s == 10.0
    assert proc._queue_size(camera) == 10 and proc._queue_size(file) == 4
    long_clips = _settings()  # no short windows: 8-s clips, ⌈10 / 8⌉ = 2 < 4
    proc.settings = long_clips
    assert proc._queue_size(camera) == 4


@pytest.mark.timeout(120)
@pytest.mark.rtsp
def test_slow_model_on_a_live_stream_sheds_counted_clips(store):
    from rtsp_server import RtspServer

    seen: list = []
    settings = _settings(min_fps=2, max_fps=2, clip_seconds=1)
    # a queue of max_pending_clips (2), not of live_queue_s' 10 s of 1-s clips
    settings = settings.model_copy(update={"runtime": settings.runtime.model_copy(update={"live_queue_s": 1.0})})
    with RtspServer(footage_file("one-by-one-person-detection.mp4"), mount="/slow") as cam:
        proc = StreamProcessor(
            "cam",
            cam.url,
            settings=settings,
            events=EVENTS,
            store=store,
            score_fn=slow_model(3.0, seen),
            max_pending_clips=2,
        )
        runner = threading.Thread(target=proc.run, daemon=True)
        runner.start()
        time.sleep(14)
        proc.stop()
        runner.join(timeout=30)
    rep = proc.report
    assert not runner.is_alive() and rep.state == "stopped"
    # ~13 clips were cut in 14 s of live video; a 3 s/clip model scored one per 3 s while it ran (at most
    # ⌈14 / 3⌉ = 5 calls began), then the ≤ 2 clips still queued at the stop (a clip taken is never lost):
    # the rest were shed and counted.
    assert rep.dropped_clips >= 4 and len(seen) <= 5 + 2
    assert rep.clips == len(seen) and rep.clips + rep.dropped_clips >= 9
    assert seen == sorted(seen)  # what was scored went in order; the oldest waiting clips were dropped


@pytest.mark.timeout(120)
def test_a_failing_model_is_retried_and_a_typed_error_is_not(synthetic, store):
    """A model call that fails (a replica restarting) is retried with backoff and the clip is kept;
    one of our typed errors fails the stream at once."""
    from longwatch.pipeline.errors import ModelError

    calls: list[int] = []

    def flaky(clip):
        calls.append(clip.index)
        if calls.count(clip.index) < 3 and clip.index == 0:
            raise ConnectionError("replica restarting")
        return {"person_present": np.full(clip.n, 0.0)}

    settings = _settings(min_fps=2, max_fps=2, clip_seconds=10)
    started = time.monotonic()
    rep = StreamProcessor(
        "flaky", synthetic["gop"].path, settings=settings, events=EVENTS, store=store, score_fn=flaky
    ).run()
    assert rep.state == "done" and calls[:3] == [0, 0, 0] and sorted(set(calls)) == list(range(rep.clips))
    assert time.monotonic() - started >= 1.3  # waited 0.5 s, then 1 s (±10 % jitter), before the third attempt

    typed: list[int] = []

    def broken(clip):
        typed.append(clip.index)
        raise ModelError("weights do not match")

    with pytest.raises(ModelError):
        StreamProcessor(
            "typed", synthetic["gop"].path, settings=settings, events=EVENTS, store=store, score_fn=broken
        ).run()
    assert typed == [0]
