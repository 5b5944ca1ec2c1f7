"""Segmenter: hysteresis, midpoint boundaries, min duration, merge gap, holes, replays, resume."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from longwatch.pipeline.errors import ConfigError, LongwatchError, SegmenterError, SegmenterStateError
from longwatch.pipeline.segmenter import Segmenter, SegmentUpdate
from longwatch.pipeline.types import Segment

HI, LO = 0.9, 0.05


def make(**kw) -> Segmenter:
    params = dict(on=0.6, off=0.4, min_duration_s=0.0, merge_gap_s=0.0)
    params.update(kw)
    return Segmenter("cam1", "person_present", **params)


def run(seg: Segmenter, times, scores, chunk: int = 8, end_t=None) -> list[SegmentUpdate]:
    times, scores = np.asarray(times, float), np.asarray(scores, float)
    out: list[SegmentUpdate] = []
    for i in range(0, len(times), chunk):
        out += seg.push(times[i : i + chunk], scores[i : i + chunk])
    out += seg.flush(end_t)
    return out


def closed(updates) -> list[Segment]:
    return [u.segment for u in updates if u.kind == "close"]


def check_protocol(updates) -> None:
    """Each id: exactly one open first, then updates, then exactly one close; ends never shrink."""
    by_id: dict[str, list[SegmentUpdate]] = {}
    for u in updates:
        by_id.setdefault(u.id, []).append(u)
    for sid, seq in by_id.items():
        kinds = [u.kind for u in seq]
        assert kinds[0] == "open" and kinds[-1] == "close", (sid, kinds)
        assert kinds.count("open") == 1 and kinds.count("close") == 1, kinds
        assert all(u.segment.start == seq[0].segment.start for u in seq)
        ends = [u.segment.end for u in seq]
        assert ends == sorted(ends)
        scores = [u.segment.score for u in seq]
        assert scores == sorted(scores)


def truth_scores(times, events) -> np.ndarray:
    return np.array([HI if any(a <= t <= b for a, b in events) else LO for t in times])


def expected_bounds(times, a, b) -> tuple[float, float]:
    """Midpoint between the last sample outside and the first inside (and vice versa)."""
    inside = [i for i, t in enumerate(times) if a <= t <= b]
    i0, i1 = inside[0], inside[-1]
    start = times[i0] if i0 == 0 else (times[i0 - 1] + times[i0]) / 2
    end = times[i1] if i1 == len(times) - 1 else (times[i1] + times[i1 + 1]) / 2
    return start, end


# ---------------------------------------------------------------------------- boundaries


@pytest.mark.parametrize("fps", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("phase", [0.0, 0.13, 0.5, 0.77])
def test_boundaries_within_half_interval(fps, phase):
    events = [(10.3, 25.7), (40.1, 47.9), (70.0, 95.2)]
    times = phase / fps + np.arange(0, int(120 * fps)) / fps
    scores = truth_scores(times, events)
    segs = closed(run(make(), times, scores, chunk=max(2, int(4 * fps))))
    assert len(segs) == len(events)
    for seg, (a, b) in zip(segs, events):
        es, ee = expected_bounds(list(times), a, b)
        assert seg.start == pytest.approx(es, abs=1e-12)
        assert seg.end == pytest.approx(ee, abs=1e-12)
        assert abs(seg.start - a) <= 0.5 / fps + 1e-9
        assert abs(seg.end - b) <= 0.5 / fps + 1e-9
        assert seg.score == HI and seg.state == "closed"


def test_boundaries_at_stream_start_and_flush():
    times = np.arange(0, 10) * 0.5 + 3.0  # 3.0 .. 7.5
    segs = closed(run(make(), times, np.full(10, HI), end_t=8.0))
    assert [(s.start, s.end) for s in segs] == [(3.0, 7.5)]


def test_variable_rate_midpoints():
    times = np.array([0.0, 1.0, 1.5, 1.75, 3.75, 4.0, 6.0, 9.0])
    scores = np.array([LO, LO, HI, HI, HI, LO, LO, LO])
    (seg,) = closed(run(make(), times, scores, chunk=3))
    assert (seg.start, seg.end) == (1.25, 3.875)


# ---------------------------------------------------------------------------- hysteresis


def test_flicker_between_thresholds_does_not_split():
    # on=0.6, off=0.4: after opening, values in [0.4, 0.6) keep it open.
    scores = [LO, LO, 0.9, 0.45, 0.58, 0.41, 0.59, 0.45, 0.7, 0.42, LO, LO]
    times = np.arange(len(scores), dtype=float)
    segs = closed(run(make(), times, scores, chunk=3))
    assert [(s.start, s.end, s.score) for s in segs] == [(1.5, 9.5, 0.9)]


def test_dip_below_off_splits_without_merge():
    scores = [LO, 0.9, 0.9, 0.39, 0.9, 0.9, LO]
    segs = closed(run(make(), np.arange(7.0), scores))
    assert [(s.start, s.end) for s in segs] == [(0.5, 2.5), (3.5, 5.5)]


def test_between_thresholds_never_opens():
    scores = [LO, 0.45, 0.59, 0.5, 0.55, LO]
    assert run(make(), np.arange(6.0), scores) == []


def test_opening_needs_on_threshold_exactly():
    # score == on opens; score just below does not.
    assert len(closed(run(make(), np.arange(3.0), [LO, 0.6, LO]))) == 1
    assert closed(run(make(), np.arange(3.0), [LO, 0.5999, LO])) == []


# ---------------------------------------------------------------------------- minimum duration


def test_short_segments_are_dropped_and_never_announced():
    times = np.arange(0, 20, 0.5)
    # blip 5.0..6.0 (3 samples → midpoint boundaries 4.75..6.25 = 1.5 s), event 10..14 (≈4.5 s)
    scores = truth_scores(times, [(5.0, 6.0), (10.0, 14.0)])
    ups = run(make(min_duration_s=2.0), times, scores, chunk=1)
    check_protocol(ups)
    assert [(s.start, s.end) for s in closed(ups)] == [(9.75, 14.25)]
    assert {u.segment.start for u in ups} == {9.75}  # nothing at all about the blip


def test_open_is_announced_once_min_duration_reached():
    seg = make(min_duration_s=3.0)
    first_open_at = None
    for t in np.arange(0, 20, 0.5):
        score = HI if 5.0 <= t <= 15.0 else LO
        ups = seg.push(np.array([t]), np.array([score]))
        if any(u.kind == "open" for u in ups):
            first_open_at = t
            (u,) = ups
            assert u.segment.state == "open" and u.segment.start == 4.75 and u.segment.end == t
    # start 4.75; the last on-sample time reaches 4.75 + 3 at t = 8.0 (first sample >= 7.75)
    assert first_open_at == 8.0


def test_min_duration_counts_after_merge():
    # two 1-second runs 0.5 s apart: alone each is too short, merged they are long enough
    times = np.arange(0, 12, 0.25)
    scores = truth_scores(times, [(3.0, 4.0), (4.5, 5.5)])
    assert closed(run(make(min_duration_s=2.0, merge_gap_s=0.0), times, scores)) == []
    (seg,) = closed(run(make(min_duration_s=2.0, merge_gap_s=1.0), times, scores))
    assert (seg.start, seg.end) == (2.875, 5.625)


# ---------------------------------------------------------------------------- merge gap


def test_merge_gap_merges_and_keeps_id():
    times = np.arange(0, 40, 1.0)
    scores = truth_scores(times, [(5, 10), (12, 20), (30, 33)])  # gaps 10.5→11.5 (1 s), 20.5→29.5 (9 s)
    ups = run(make(merge_gap_s=2.0), times, scores, chunk=4)
    check_protocol(ups)
    segs = closed(ups)
    assert [(s.start, s.end) for s in segs] == [(4.5, 20.5), (29.5, 33.5)]
    opens = [u for u in ups if u.kind == "open"]
    assert [u.id for u in opens] == [s.id for s in segs]
    # without the merge gap the first event is two segments
    segs0 = closed(run(make(merge_gap_s=0.0), times, scores))
    assert [(s.start, s.end) for s in segs0] == [(4.5, 10.5), (11.5, 20.5), (29.5, 33.5)]


def test_merge_gap_is_inclusive_and_bounded():
    times = np.arange(0, 30, 1.0)
    scores = truth_scores(times, [(5, 10), (13, 20)])  # tentative end 10.5, next start 12.5: gap 2.0
    assert len(closed(run(make(merge_gap_s=2.0), times, scores))) == 1
    assert len(closed(run(make(merge_gap_s=1.9), times, scores))) == 2


def test_close_is_held_back_exactly_merge_gap():
    seg = make(merge_gap_s=3.0)
    close_at = None
    for t in np.arange(0, 30, 0.5):
        score = HI if 5.0 <= t <= 10.0 else LO
        for u in seg.push(np.array([t]), np.array([score])):
            if u.kind == "close":
                assert close_at is None
                close_at = t
                assert (u.segment.start, u.segment.end) == (4.75, 10.25)
    # tentative end 10.25; closed at the first sample >= 10.25 + 3
    assert close_at == 13.5


def test_pending_close_is_emitted_at_flush():
    times = np.arange(0, 12, 1.0)
    scores = truth_scores(times, [(3, 6)])
    ups = run(make(merge_gap_s=100.0), times, scores, chunk=100)
    # nothing closed before flush, then the close at the midpoint end
    assert [u.kind for u in ups] == ["open", "close"]
    assert (ups[-1].segment.start, ups[-1].segment.end) == (2.5, 6.5)


# ---------------------------------------------------------------------------- clips, overlap, replays


def test_segment_across_many_clips_is_one_open_updates_close():
    times = np.arange(0, 100, 0.5)
    scores = truth_scores(times, [(10.0, 80.0)])
    seg = make(merge_gap_s=2.0)
    per_push = []
    for i in range(0, len(times), 8):
        per_push.append(seg.push(times[i : i + 8], scores[i : i + 8]))
    per_push.append(seg.flush())
    assert all(len([u for u in p if u.kind == "update"]) <= 1 for p in per_push)
    ups = [u for p in per_push for u in p]
    check_protocol(ups)
    kinds = [u.kind for u in ups]
    assert kinds[0] == "open" and kinds[-1] == "close" and set(kinds[1:-1]) == {"update"}
    assert len(kinds) > 10
    assert len({u.id for u in ups}) == 1
    assert (ups[-1].segment.start, ups[-1].segment.end) == (9.75, 80.25)


def test_overlap_and_replay_are_idempotent():
    times = np.arange(0, 60, 0.5)
    scores = truth_scores(times, [(5.0, 17.0), (30.0, 41.0)])
    ref = run(make(merge_gap_s=1.0), times, scores, chunk=10)

    seg = make(merge_gap_s=1.0)
    ups: list[SegmentUpdate] = []
    for i in range(0, len(times), 10):
        lo = max(0, i - 6)  # each clip overlaps the previous one by 6 samples
        ups += seg.push(times[lo : i + 10], scores[lo : i + 10])
        assert seg.push(times[lo : i + 10], scores[lo : i + 10]) == []  # exact replay: nothing new
    ups += seg.flush()
    assert ups == ref
    assert closed(ups) == closed(ref)
    assert len(closed(ref)) == 2


def test_replayed_samples_with_different_scores_are_ignored():
    seg = make()
    seg.push(np.arange(0, 5.0), np.full(5, LO))
    assert seg.push(np.arange(0, 5.0), np.full(5, HI)) == []
    assert seg.flush() == []


# ---------------------------------------------------------------------------- holes


def test_max_sample_gap_does_not_bridge_a_hole():
    times = np.concatenate([np.arange(0, 11.0), np.arange(30, 41.0)])
    scores = np.full(len(times), HI)
    segs = closed(run(make(merge_gap_s=100.0, max_sample_gap_s=3.0), times, scores, chunk=4))
    # before the hole: last sample 10 + half the previous 1 s interval; after it: like a stream start
    assert [(s.start, s.end) for s in segs] == [(0.0, 10.5), (30.0, 40.0)]
    # without the limit the hole is bridged
    segs = closed(run(make(merge_gap_s=100.0), times, scores, chunk=4))
    assert [(s.start, s.end) for s in segs] == [(0.0, 40.0)]


def test_hole_closes_a_held_back_segment_and_blocks_merging():
    times = np.concatenate([np.arange(0, 11.0), np.arange(13, 20.0)])
    scores = truth_scores(times, [(2, 8), (13, 16)])
    ups = run(make(merge_gap_s=10.0, max_sample_gap_s=1.5), times, scores, chunk=3)
    check_protocol(ups)
    assert [(s.start, s.end) for s in closed(ups)] == [(1.5, 8.5), (13.0, 16.5)]
    # same data, no hole limit: merged across
    assert [(s.start, s.end) for s in closed(run(make(merge_gap_s=10.0), times, scores))] == [(1.5, 16.5)]


def test_sample_spacing_at_the_limit_is_not_a_hole():
    times = np.array([0.0, 1.0, 2.0, 4.0, 5.0])
    segs = closed(run(make(max_sample_gap_s=2.0), times, np.full(5, HI)))
    assert [(s.start, s.end) for s in segs] == [(0.0, 5.0)]


# ---------------------------------------------------------------------------- reference model + resume


def reference(times, scores, *, on, off, min_duration_s, merge_gap_s, max_sample_gap_s):
    """Batch (whole-array) implementation of the documented semantics."""
    eps = 1e-9
    cuts = [0]
    if max_sample_gap_s is not None:
        cuts += [i for i in range(1, len(times)) if times[i] - times[i - 1] > max_sample_gap_s + eps]
    cuts.append(len(times))
    out = []
    for p in range(len(cuts) - 1):
        t, s = times[cuts[p] : cuts[p + 1]], scores[cuts[p] : cuts[p + 1]]
        last_piece = p == len(cuts) - 2
        runs, active = [], False
        for k in range(len(t)):
            if not active and s[k] >= on:
                active, start, score, last = True, (t[k] if k == 0 else (t[k - 1] + t[k]) / 2), s[k], k
            elif active and s[k] >= off:
                last, score = k, max(score, s[k])
            elif active:
                active = False
                runs.append([start, (t[last] + t[k]) / 2, score])
        if active:
            if last_piece or last == 0:
                end = t[last]
            else:
                end = t[last] + (t[last] - t[last - 1]) / 2
            runs.append([start, end, score])
        merged = []
        for r in runs:
            if merged and r[0] - merged[-1][1] <= merge_gap_s + eps:
                merged[-1][1], merged[-1][2] = r[1], max(merged[-1][2], r[2])
            else:
                merged.append(r)
        out += [tuple(m) for m in merged if m[1] - m[0] >= min_duration_s - eps]
    return out


def random_case(rng: random.Random):
    fps = rng.choice([0.5, 1.0, 2.0, 3.3, 4.0])
    n = rng.randint(1, 250)
    steps = [rng.uniform(0.8, 1.2) / fps for _ in range(n)]
    for i in range(n):
        if rng.random() < 0.02:
            steps[i] += rng.uniform(3, 20)  # a PTS jump / outage
    times = np.cumsum(steps) + rng.uniform(0, 50)
    levels = [0.0, 0.2, 0.35, 0.45, 0.55, 0.65, 0.8, 1.0]
    scores, level = [], rng.choice(levels)
    for _ in range(n):
        if rng.random() < 0.25:
            level = rng.choice(levels)
        scores.append(level)
    on = rng.choice([0.5, 0.6, 0.7])
    params = dict(
        on=on,
        off=rng.choice([on, 0.4, 0.3]),
        min_duration_s=rng.choice([0.0, 0.5, 2.0, 5.0]),
        merge_gap_s=rng.choice([0.0, 1.0, 3.0, 10.0]),
        max_sample_gap_s=rng.choice([None, 2.5 / fps + 0.5]),
    )
    return times, np.array(scores), params


def random_pushes(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """Clip index ranges: random lengths, random overlaps with the previous clip, some exact replays."""
    spans, i = [], 0
    while i < n:
        j = min(n, i + rng.randint(1, 20))
        lo = max(0, i - rng.randint(0, 6)) if rng.random() < 0.5 else i
        spans.append((lo, j))
        if rng.random() < 0.1:
            spans.append((lo, j))
        i = j
    return spans


def drive(params, times, scores, spans, *, roundtrip_after=(), epoch=None):
    seg = Segmenter("cam-7", "car_present", epoch=epoch or datetime(2024, 5, 1, tzinfo=UTC), **params)
    ups: list[SegmentUpdate] = []
    for k, (lo, hi) in enumerate(spans):
        ups += seg.push(times[lo:hi], scores[lo:hi])
        if k in roundtrip_after:
            seg = Segmenter.from_state(json.loads(json.dumps(seg.state())))
    if "flush" in roundtrip_after:
        seg = Segmenter.from_state(json.loads(json.dumps(seg.state())))
    ups += seg.flush()
    return ups


def test_random_streams_match_reference_and_resume_exactly():
    rng = random.Random(20240501)
    for case in range(300):
        times, scores, params = random_case(rng)
        spans = random_pushes(rng, len(times))
        straight = drive(params, times, scores, spans)
        cuts = set(rng.sample(range(len(spans)), k=min(len(spans), rng.randint(1, 3))))
        if rng.random() < 0.3:
            cuts.add("flush")
        resumed = drive(params, times, scores, spans, roundtrip_after=cuts)
        assert resumed == straight, (case, params, cuts)

        check_protocol(straight)
        got = [(s.start, s.end, s.score) for s in closed(straight)]
        assert got == reference(times, scores, **params), (case, params)

        one_push = drive(params, times, scores, [(0, len(times))])
        assert closed(one_push) == closed(straight)
        for s in closed(straight):
            assert (
                s.state == "closed" and s.end - s.start >= params["min_duration_s"] - 1e-9
            )  # segment length, not a timing


# ---------------------------------------------------------------------------- state


def test_state_is_json_and_round_trips():
    epoch = datetime(2023, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    seg = Segmenter(
        "cam1", "ev", on=0.7, off=0.3, min_duration_s=1.5, merge_gap_s=2.0, max_sample_gap_s=4.0, epoch=epoch
    )
    assert Segmenter.from_state(json.loads(json.dumps(seg.state()))).state() == seg.state()
    seg.push(np.arange(0, 10.0, 0.5), np.r_[np.full(6, LO), np.full(10, 0.8), np.full(4, LO)])
    st = seg.state()
    text = json.dumps(st)
    back = Segmenter.from_state(json.loads(text))
    assert back.state() == st
    assert back.epoch == epoch and back.stream_id == "cam1" and back.event == "ev"
    assert (back.on, back.off, back.min_duration_s, back.merge_gap_s, back.max_sample_gap_s) == (
        0.7,
        0.3,
        1.5,
        2.0,
        4.0,
    )
    assert back.last_time == seg.last_time == 9.5
    assert back.current == seg.current and back.current is not None and back.current.state == "open"
    assert back.flush() == seg.flush()
    assert back.finished and Segmenter.from_state(json.loads(json.dumps(back.state()))).finished


def test_closed_segment_times_and_utc():
    epoch = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    seg = Segmenter("cam1", "ev", on=0.5, off=0.5, epoch=epoch)
    (u_open, u_close) = run(seg, np.arange(0, 10.0), truth_scores(np.arange(0, 10.0), [(3, 5)]))
    s = u_close.segment
    assert s.epoch == epoch and s.start_utc == epoch + timedelta(seconds=2.5)
    assert u_open.id == u_close.id == Segment("cam1", "ev", 2.5, 99.0).id


@pytest.mark.parametrize(
    "mutate",
    [
        lambda st: st.update(version=99),
        lambda st: st.pop("params"),
        lambda st: st.update(epoch="not a time"),
        lambda st: st["params"].update(on=2.0),
        lambda st: st.update(last_t="x"),
        lambda st: st.update(finished="yes"),
        lambda st: st["segment"].update(phase="weird"),
        lambda st: st["segment"].update(start=st["last_t"] + 1),
        lambda st: st["segment"].update(end=1.0),  # active segment with an end
        lambda st: st["segment"].update(score=7),
        lambda st: st["segment"].pop("last_on"),
    ],
)
def test_bad_state_is_rejected(mutate):
    seg = make()
    seg.push(np.arange(5.0), np.full(5, HI))
    st = json.loads(json.dumps(seg.state()))
    mutate(st)
    with pytest.raises(SegmenterStateError):
        Segmenter.from_state(st)


def test_state_of_non_dict_is_rejected():
    with pytest.raises(SegmenterStateError):
        Segmenter.from_state("{}")


def test_resume_right_before_a_hole_keeps_the_sampling_interval():
    params = dict(on=0.6, off=0.4, merge_gap_s=5.0, max_sample_gap_s=3.0)
    seg = Segmenter("cam1", "ev", **params)
    seg.push(np.arange(0, 10.5, 0.5), np.full(21, HI))  # on 0..10 at 2 fps
    seg = Segmenter.from_state(json.loads(json.dumps(seg.state())))
    ups = seg.push(np.arange(30, 33.0), np.full(3, LO)) + seg.flush()
    assert [(u.kind, u.segment.start, u.segment.end) for u in ups] == [("close", 0.0, 10.25)]


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "times, scores, words",
    [
        ([0.0, 1.0], [0.5, float("nan")], "finite"),
        ([0.0, 1.0], [0.5, float("inf")], "finite"),
        ([0.0, 1.0], [0.5, 1.5], "[0, 1]"),
        ([0.0, 1.0], [-0.1, 0.5], "[0, 1]"),
        ([0.0, float("nan")], [0.5, 0.5], "finite"),
        ([0.0, 2.0, 1.0], [0.5, 0.5, 0.5], "increasing"),
        ([0.0, 1.0, 1.0], [0.5, 0.5, 0.5], "increasing"),
        ([0.0, 1.0], [0.5], "2 times but 1 scores"),
        ([[0.0, 1.0]], [[0.5, 0.5]], "1-D"),
        (["a"], [0.5], "numeric"),
    ],
)
def test_bad_samples_raise_typed_errors(times, scores, words):
    seg = make()
    with pytest.raises(SegmenterError) as info:
        seg.push(np.asarray(times, dtype=object) if times == ["a"] else times, scores)
    assert words in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, LongwatchError)
    assert seg.last_time is None  # a rejected push changes nothing


def test_bad_push_leaves_state_untouched():
    seg = make()
    seg.push(np.arange(3.0), np.full(3, HI))
    before = seg.state()
    with pytest.raises(SegmenterError):
        seg.push(np.array([3.0, 4.0]), np.array([HI, np.nan]))
    assert seg.state() == before


def test_push_after_flush_and_bad_flush():
    seg = make()
    assert [u.kind for u in seg.push(np.arange(3.0), np.full(3, HI))] == ["open"]
    with pytest.raises(SegmenterError, match="precedes"):
        seg.flush(1.0)
    assert [(u.kind, u.segment.end) for u in seg.flush(2.0)] == [("close", 2.0)]
    assert seg.flush() == []
    with pytest.raises(SegmenterError, match="after flush"):
        seg.push(np.array([5.0]), np.array([HI]))


def test_empty_push_is_a_no_op():
    seg = make()
    assert seg.push(np.array([]), np.array([])) == []
    assert seg.last_time is None


@pytest.mark.parametrize(
    "kw",
    [
        dict(on=0.3, off=0.5),
        dict(on=0.0, off=0.0),
        dict(on=1.2, off=0.4),
        dict(on=0.6, off=-0.1),
        dict(on=float("nan"), off=0.4),
        dict(on=0.6, off=0.4, min_duration_s=-1),
        dict(on=0.6, off=0.4, merge_gap_s=float("inf")),
        dict(on=0.6, off=0.4, max_sample_gap_s=0),
        dict(on=0.6, off=0.4, epoch=datetime(2024, 1, 1)),
        dict(on="high", off=0.4),
    ],
)
def test_bad_config_raises(kw):
    with pytest.raises(ConfigError):
        Segmenter("cam1", "ev", **kw)


def test_empty_names_rejected():
    with pytest.raises(ConfigError):
        Segmenter("", "ev", on=0.5, off=0.5)
    with pytest.raises(ConfigError):
        Segmenter("cam", "", on=0.5, off=0.5)


def test_segment_update_is_validated():
    seg_open = Segment("cam1", "ev", 1.0, 2.0, state="open")
    seg_closed = Segment("cam1", "ev", 1.0, 2.0, state="closed")
    assert SegmentUpdate("open", seg_open).id == seg_open.id
    SegmentUpdate("update", seg_open)
    SegmentUpdate("close", seg_closed)
    for kind, seg in [("close", seg_open), ("open", seg_closed), ("update", seg_closed), ("delete", seg_open)]:
        with pytest.raises(SegmenterError):
            SegmentUpdate(kind, seg)
    with pytest.raises(SegmenterError):
        SegmentUpdate("open", {"start": 1.0})
    u = SegmentUpdate("open", seg_open)
    with pytest.raises(AttributeError):
        u.kind = "close"  # frozen
