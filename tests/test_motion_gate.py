"""The motion stage in the stream worker: motion events at the thumbnails' rate through the real worker
and Redis, the detector gate (which frames the detector sees, and where it looks), resuming the motion
state exactly, and presence segments that never span a hard cut."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longwatch.pipeline.config import DetectionConfig, Settings
from longwatch.pipeline.events import load_events
from longwatch.pipeline.motion_gate import MotionGate
from longwatch.pipeline.worker import StreamProcessor

MOTION_ONLY = load_events("- event: motion\n  backend: motion\n  merge_gap_s: 1.0\n")
GATED = load_events(
    "- event: motion\n  backend: motion\n- event: person_present\n  detector: {class: person, min_score: 0.4}\n"
)


def _scene(t: float, moving: tuple[float, float] | None) -> np.ndarray:
    """A 160×90 grey thumbnail: a static texture, and a dark 12×20 px block crossing while ``moving``."""
    rng = np.random.default_rng(int(t * 1000))
    img = (np.tile(np.linspace(70, 170, 160, dtype=np.float32), (90, 1)) + rng.normal(0, 1.5, (90, 160))).clip(0, 255)
    if moving and moving[0] <= t < moving[1]:
        x = int(10 + (t - moving[0]) * 30)
        img[40:60, x : x + 12] = 20
    return img.astype(np.uint8)


def _thumbs(t0: float, t1: float, moving) -> tuple[np.ndarray, np.ndarray]:
    times = np.arange(round(t0 * 8), round(t1 * 8)) / 8.0
    return times, np.stack([_scene(float(t), moving) for t in times])


def test_the_gate_sends_the_detector_motion_tracked_objects_and_a_periodic_check():
    gate = MotionGate(GATED, DetectionConfig(full_check_s=10.0))
    moving = (4.0, 6.0)
    frames = np.arange(0.0, 8.0, 0.5)
    res = gate.process(*_thumbs(0.0, 8.0, moving), frames.tolist(), tracking=False)
    detect = dict(zip(frames.tolist(), res.detect.tolist()))
    assert detect[0.0]  # the first frame of the 0–10 s slot: the periodic full check
    assert not any(detect[t] for t in (0.5, 1.0, 2.0, 3.0, 3.5))  # a still scene: no detector
    # Something moves: the detector looks when it appears; a frame where the same thing moves on may
    # reuse the detections of a frame the detector looks at (the backend decides: test_detector).
    assert detect[4.0] or detect[4.5]
    for t in (4.5, 5.0, 5.5):
        j = frames.tolist().index(t)
        assert detect[t] or (res.hold[j] is not None and res.detect[res.hold[j]] and res.hold[j] < j)
    assert not any(detect[t] for t in (7.0, 7.5))  # quiet again
    # Where it looks: around the block, at its height (rows 40–60 of 90).
    regions = dict(zip(frames.tolist(), res.regions))
    assert regions[1.0] == []
    x0, y0, x1, y1 = regions[5.0][0]
    assert y0 < 40 / 90 < 60 / 90 < y1 + 0.05 and x1 - x0 < 0.5
    # The motion event at the thumbnails' rate: on from about 4 s to about 6 s.
    on = res.times[res.scores["motion"] >= 0.5]
    assert abs(on.min() - 4.0) <= 0.25 and abs(on.max() - 6.0) <= 0.5
    # An object event being built keeps the detector on (the first frame; still frames after it reuse
    # its detections: nothing moved in between).
    res2 = gate.process(*_thumbs(8.0, 10.0, None), [8.0, 8.5, 9.0, 9.5], tracking=True)
    assert res2.detect.tolist() == [True, False, False, False] and res2.hold == [None, 0, 0, 0]
    # The next 10-s slot gets its check.
    res3 = gate.process(*_thumbs(10.0, 11.0, None), [10.0, 10.5], tracking=False)
    assert res3.detect.tolist() == [True, False]


def _two_blocks(t: float) -> np.ndarray:
    """Block A (12×20 px) walks right from 0.25 s; block B appears at 3 s; at 5 s A grows to 36×40 px."""
    img = _scene(t, None).astype(np.int16)
    xa = int(20 + t * 8)
    if t < 0.25:
        pass
    elif t < 5.0:
        img[40:60, xa : xa + 12] = 20
    else:
        img[30:70, xa : xa + 36] = 20
    if t >= 3.0:
        xb = int(120 - (t - 3.0) * 8)
        img[10:25, xb : xb + 10] = 230
    return img.clip(0, 255).astype(np.uint8)


def test_a_frame_reuses_detections_only_while_the_same_things_move():
    times = np.arange(0, 8 * 8) / 8.0
    thumbs = np.stack([_two_blocks(float(t)) for t in times])
    frames = np.arange(0.5, 8.0, 0.5).tolist()

    def plan(config: DetectionConfig, cuts=()):
        gate = MotionGate(GATED, config)
        gate.process(times[:2], thumbs[:2], [], tracking=False)  # learn the empty scene first
        res = gate.process(times[2:], thumbs[2:], frames, tracking=True, cuts=cuts)
        return dict(zip(frames, res.detect.tolist())), dict(zip(frames, res.hold))

    detect, hold = plan(DetectionConfig(hold_s=2.0, full_check_s=100.0))
    at = frames.index
    assert detect[0.5] and hold[0.5] is None  # the first frame of the clip: looked at
    assert hold[1.0] == hold[1.5] == at(0.5)  # A walks on: the same thing moves
    assert detect[3.0] or detect[3.5]  # B appears: looked at
    assert detect[5.0] or detect[5.5]  # A grows (someone came closer, or joined): looked at
    for t in frames:  # every hold names an earlier frame the detector looks at, at most 2 s before
        if hold[t] is not None:
            assert detect[frames[hold[t]]] and 0 < t - frames[hold[t]] <= 2.0 and not detect[t]
    assert sum(detect.values()) < len(frames) // 2
    # hold_s bounds how long detections are reused; 0 turns reuse off
    detect1, hold1 = plan(DetectionConfig(hold_s=1.0, full_check_s=100.0))
    assert all(t - frames[h] <= 1.0 for t, h in hold1.items() if h is not None)
    assert sum(detect1.values()) > sum(detect.values())
    detect0, hold0 = plan(DetectionConfig(hold_s=0.0, full_check_s=100.0))
    assert all(h is None for h in hold0.values()) and all(detect0.values())
    # no detections are reused across a scene cut
    detect_c, hold_c = plan(DetectionConfig(hold_s=2.0, full_check_s=100.0), cuts=[1.25])
    assert detect_c[1.5] and hold_c[1.5] is None


def test_a_walker_is_followed_from_frame_to_frame_not_compared_with_the_frame_looked_at():
    """A block crossing at 30 px/s (2.5 of its widths a second): each sampled frame, half a second
    after the one before, shows it 1.25 widths further on, so it is never where the detector last
    saw it after the next frame; the chain from frame to frame still holds it up to ``hold_s``."""
    moving = (2.0, 6.0)

    def scene(t: float) -> np.ndarray:
        img = _scene(t, None).astype(np.int16)
        if moving[0] <= t < moving[1]:
            x = int(5 + (t - moving[0]) * 30)
            img[40:60, x : x + 12] = 20
        return img.clip(0, 255).astype(np.uint8)

    times = np.arange(0, 8 * 8) / 8.0
    thumbs = np.stack([scene(float(t)) for t in times])
    frames = np.arange(2.5, 6.0, 0.5).tolist()
    gate = MotionGate(GATED, DetectionConfig(hold_s=2.0, full_check_s=100.0))
    gate.process(times[:16], thumbs[:16], [], tracking=False)  # the empty scene first
    res = gate.process(times[16:], thumbs[16:], frames, tracking=True)
    detect, hold = res.detect.tolist(), list(res.hold)
    assert detect[0] and hold[0] is None
    for j in range(1, len(frames)):  # each frame holds the last looked-at one, at most 2 s before, or is looked at
        assert detect[j] != (hold[j] is not None)
        if hold[j] is not None:
            assert detect[hold[j]] and 0 < frames[j] - frames[hold[j]] <= 2.0
    # 2.5, 3.0 … 5.5: looked at when it is first seen and once hold_s later, not at every other frame
    assert sum(detect) == 2, (frames, detect, hold)
    # The same walker with the old rule (each frame compared with the looked-at one) would have been
    # looked at every second frame: the frame-to-frame step is under 1.5 widths, two steps are not.
    step = 30 * 0.5 / 12
    assert step < 1.5 < 2 * step


def test_live_windows_reuse_the_prior_clips_detections_while_the_same_things_move():
    """1-s live windows: without a prior the first frame of every window is looked at; given the prior
    (the last looked-at frame of an earlier window, explained by the detector), a window's frames may
    hold it (-1) by the same rules as within a clip, and the detector looks at fewer frames."""
    times = np.arange(0, 8 * 8) / 8.0
    thumbs = np.stack([_two_blocks(float(t)) for t in times])

    def run(carry: bool, cut_at: float | None = None):
        gate = MotionGate(GATED, DetectionConfig(hold_s=2.0, full_check_s=100.0))
        gate.process(times[:2], thumbs[:2], [], tracking=False)  # learn the empty scene first
        prior, plans = None, []
        for k in range(1, 8):  # windows [k, k + 1), frames at k and k + 0.5
            sel = (times >= k) & (times < k + 1)
            frames = [float(k), k + 0.5]
            cuts = [cut_at] if cut_at is not None and k <= cut_at < k + 1 else []
            obs = gate.observe(times[sel], thumbs[sel], frames, cuts=cuts)
            res = gate.judge(obs, tracking=True, prior=prior if carry else None)
            plans.append((frames, res.detect.tolist(), list(res.hold), prior))
            looked = [j for j in range(2) if res.detect[j]]
            if looked:  # the worker's rule, the detector having explained every looked-at frame here
                prior = (frames[looked[-1]], res.blobs[looked[-1]])
            if prior is not None and any(c > prior[0] for c in obs.changes):
                prior = None
        return plans

    alone = run(carry=False)
    assert all(det[0] for _, det, _, _ in alone)  # something moves in every window: its first frame is looked at
    assert all(-1 not in hold for _, _, hold, _ in alone)
    carried = run(carry=True)
    held = [(frames[j], pr) for frames, _, hold, pr in carried for j in range(2) if hold[j] == -1]
    assert held, carried
    for t, pr in held:  # each reuse names an earlier window's frame at most hold_s before
        assert pr is not None and 0 < t - pr[0] <= 2.0
    assert sum(sum(det) for _, det, _, _ in carried) < sum(sum(det) for _, det, _, _ in alone)
    at3 = next(p for p in carried if p[0][0] == 3.0)
    assert at3[1][0] or at3[1][1]  # B appears at 3 s: looked at, whatever the prior
    # no reuse across a scene cut: the window after the cut looks again
    cut = run(carry=True, cut_at=1.75)
    at2 = next(p for p in cut if p[0][0] == 2.0)
    assert at2[3] is None and at2[1][0] and at2[2][0] != -1


def test_a_gate_restored_from_its_state_continues_exactly():
    moving = (3.0, 7.0)
    a = MotionGate(GATED, DetectionConfig())
    a.process(*_thumbs(0.0, 4.0, moving), [0.0, 1.0, 2.0, 3.0], tracking=False)
    b = MotionGate(GATED, DetectionConfig(), json.loads(json.dumps(a.state())))
    later = _thumbs(3.5, 8.0, moving)  # overlaps what a saw: the pre-roll of a resumed decoder
    ra = a.process(*later, [4.0, 5.0, 6.0, 7.0], tracking=False)
    rb = b.process(*later, [4.0, 5.0, 6.0, 7.0], tracking=False)
    assert ra.times.tolist() == rb.times.tolist() and ra.times.min() > 3.875
    assert ra.scores["motion"].tolist() == rb.scores["motion"].tolist()
    assert ra.detect.tolist() == rb.detect.tolist() and ra.regions == rb.regions


def test_motion_segments_follow_the_moving_things_within_half_a_second(tmp_path, store):
    from sample_videos.make_synthetic import motion_clip

    clip = motion_clip(tmp_path / "motion.mp4")
    calls: list = []

    def no_model(c):  # motion needs no model pool
        calls.append(c.index)
        return {}

    rep = StreamProcessor(
        "mo", clip.path, settings=Settings(), events=MOTION_ONLY, store=store, score_fn=no_model
    ).run()
    assert rep.state == "done" and calls == []
    segs = sorted(store.query(stream="mo", event="motion"), key=lambda s: s.start)
    found = [(round(s.start, 2), round(s.end, 2)) for s in segs]
    assert len(segs) == len(clip.events), (found, clip.events)  # the light step is not motion
    for seg, (start, end) in zip(segs, clip.events):
        assert abs(seg.start - start) <= 0.5 and abs(seg.end - end) <= 0.5, (found, clip.events)


@pytest.mark.timeout(120)
def test_no_presence_segment_spans_a_hard_cut(demo_clip, store):
    # An event that is on in every frame: without cuts it would be one segment over the whole clip.
    events = load_events("- event: always\n  detector: {class: person, min_score: 0.4}\n  min_duration_s: 0\n")
    rep = StreamProcessor(
        "cuts",
        str(demo_clip),
        settings=Settings(),
        events=events,
        store=store,
        score_fn=lambda c: {"always": np.ones(c.n)},
    ).run()
    assert rep.state == "done"
    cuts = sorted(s.start for s in store.query(stream="cuts", event="scene_cut"))
    segs = sorted(store.query(stream="cuts", event="always"), key=lambda s: s.start)
    assert len(cuts) >= 2 and len(segs) == len(cuts) + 1, (cuts, [(s.start, s.end) for s in segs])
    for seg in segs:
        assert not any(seg.start < c <= seg.end for c in cuts), (seg.start, seg.end, cuts)
