"""Dynamic-FPS sampler and the qwen-vl-utils-compatible mode."""

from __future__ import annotations

import typing

import numpy as np
import pytest
from conftest import footage_file

from longwatch.pipeline import QwenCompatConfig, SamplerConfig, Source, patchify, sample_clips, sample_qwen
from longwatch.pipeline.sampler import DynamicSampler, choose_skip, rate_ladder
from longwatch.pipeline.sizing import smart_nframes, smart_resize, tokens_per_frame_pair
from sample_videos.make_synthetic import read_barcode


def _clips(path, cfg, **kw):
    with Source.open(path, **kw) as src:
        return list(sample_clips(src, cfg, stream_id="t"))


def test_clips_are_contiguous_even_and_at_one_rate(person_clip):
    cfg = SamplerConfig()
    clips = _clips(person_clip, cfg)
    ladder = rate_ladder(cfg.min_fps, cfg.max_fps)
    assert clips[0].start == 0.0 and clips[-1].end >= 139.0
    for a, b in zip(clips[:-1], clips[1:]):
        assert b.start == pytest.approx(a.end)  # no hole, no double coverage
        assert b.index == a.index + 1
    for c in clips:
        assert any(c.fps == pytest.approx(r) for r in ladder)
        if c is not clips[-1]:
            assert c.n % 2 == 0
        if c.n > 1:
            assert np.allclose(np.diff(c.times), 1.0 / c.fps, atol=0.051)  # within half a source frame
        assert c.size == (756, 420)
    assert {c.fps for c in clips} == {0.5, 2.0, 2 / 3} or len({c.fps for c in clips}) >= 2


def test_activity_drives_the_rate(synthetic):
    spec = synthetic["cfr"]  # moving square during 5-9 s and 13.5-16 s, near-static otherwise
    cfg = SamplerConfig(min_fps=0.5, max_fps=4.0, clip_seconds=2.0, activity_low=0.01, activity_high=0.04)
    clips = _clips(spec.path, cfg)

    def overlap(c):
        return sum(max(0.0, min(c.end, e) - max(c.start, s)) for s, e in spec.events)

    busy = [c for c in clips if overlap(c) >= 1.0]
    calm = [c for c in clips if overlap(c) == 0.0]
    assert len(busy) >= 2 and len(calm) >= 2
    assert all(c.fps == 4.0 for c in busy), [(c.start, c.fps, c.activity) for c in busy]
    assert all(c.fps == 0.5 for c in calm), [(c.start, c.fps, c.activity) for c in calm]


def test_token_budget_caps_rate_and_size(person_clip):
    budget = 300.0
    cfg = SamplerConfig(min_fps=0.5, max_fps=4.0, tokens_per_second_budget=budget)
    clips = _clips(person_clip, cfg)
    for c in clips[:-1]:
        p = patchify(c)
        assert p.num_tokens / (c.end - c.start) <= budget + 1e-6
    # A budget too small even for min_fps at full size shrinks the frames instead.
    small = SamplerConfig(min_fps=1.0, max_fps=1.0, tokens_per_second_budget=20)
    h, w = (
        DynamicSampler(small, stream_id="s", width=768, height=432).height,
        DynamicSampler(small, stream_id="s", width=768, height=432).width,
    )
    assert tokens_per_frame_pair(h, w) * 1.0 / 2 <= 20


def test_pts_jump_never_inside_a_clip(synthetic):
    clips = _clips(synthetic["jump"].path, SamplerConfig(min_fps=2, max_fps=2, clip_seconds=3))
    for c in clips:
        assert c.times[-1] < 8.0 or c.times[0] >= 38.0
    assert any(38.0 <= c.start <= 38.1 for c in clips)
    assert max(c.times[-1] for c in clips if c.start < 8) == pytest.approx(7.96, abs=0.05)


def test_frames_in_clips_carry_their_own_time(synthetic):
    clips = _clips(synthetic["vfr"].path, SamplerConfig(min_fps=4, max_fps=4, clip_seconds=2, skip="DEFAULT"))
    truth = set(synthetic["vfr"].times)
    for c in clips:
        for t, img in zip(c.times, c.frames):
            assert t in truth  # a real frame's PTS, not a grid time
            assert read_barcode(img) == pytest.approx(t, abs=1e-9)
        if c.n > 1:  # VFR: each frame is the nearest to its grid time, so off by < one source interval
            assert np.all(np.abs(np.diff(c.times) - 0.25) <= 0.091)


def test_overlap(person_clip):
    clips = _clips(person_clip, SamplerConfig(min_fps=1, max_fps=1, clip_seconds=8, overlap_seconds=2))
    for a, b in zip(clips[:-1], clips[1:]):
        assert a.end - b.start == pytest.approx(2.0)


def test_source_slower_than_max_fps_is_not_upsampled():
    path = footage_file("vtest.avi")  # 10 fps MS-MPEG4
    clips = _clips(path, SamplerConfig(min_fps=12, max_fps=30, clip_seconds=4))
    assert {c.fps for c in clips} == {10.0}
    assert all(len(set(c.times)) == c.n for c in clips)


def test_buffer_is_bounded(person_clip):
    cfg = SamplerConfig(min_fps=0.5, max_fps=2.0, clip_seconds=8)
    with Source.open(person_clip) as src:
        sampler = DynamicSampler(cfg, stream_id="s", width=src.width, height=src.height, native_fps=src.native_fps)
        peak = 0
        for f in src.frames():
            sampler.push(f)
            peak = max(peak, len(sampler._buf))
    assert peak <= sampler.window + 4  # one window plus at most one stride of look-ahead


def test_skip_modes_chosen_from_the_source(synthetic, person_clip):
    with Source.open(synthetic["gop"].path) as src:  # regular 1 s keyframes
        assert choose_skip(src, SamplerConfig(min_fps=0.5, max_fps=1.0)) == "NONKEY"
        assert choose_skip(src, SamplerConfig(min_fps=0.5, max_fps=2.0)) == "DEFAULT"
    with Source.open(synthetic["cfr"].path) as src:  # 30 fps
        assert choose_skip(src, SamplerConfig(min_fps=0.5, max_fps=2.0)) == "NONREF"
        assert choose_skip(src, SamplerConfig(min_fps=0.5, max_fps=2.0, skip="DEFAULT")) == "DEFAULT"


def test_keyframe_only_sampling_gives_the_same_clips(synthetic):
    path = synthetic["gop"].path
    fast = _clips(path, SamplerConfig(min_fps=0.5, max_fps=1.0, clip_seconds=8))
    slow = _clips(path, SamplerConfig(min_fps=0.5, max_fps=1.0, clip_seconds=8, skip="DEFAULT"))
    assert len(fast) == len(slow) >= 3
    assert [c.times.tolist() for c in fast[:-1]] == [c.times.tolist() for c in slow[:-1]]
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(fast[:-1], slow[:-1]))
    # The very last frame (29.9 s) is not a keyframe, so only the full decode can add it.
    assert slow[-1].times.tolist()[: fast[-1].n] == fast[-1].times.tolist()


# ---- qwen-vl-utils-compatible mode --------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("one-by-one-person-detection.mp4", {"fps": 2.0}),
        ("bikes.mp4", {"fps": 2.0}),
        ("vtest.avi", {"fps": 0.5}),
        ("one-by-one-person-detection.mp4", {"fps": 4.0, "max_frames": 64}),
        ("car-detection.mp4", {"fps": 2.0, "total_pixels": 20480 * 28 * 28}),
    ],
)
def test_qwen_mode_matches_qwen_vl_utils(name, kwargs, monkeypatch):
    torch = pytest.importorskip("torch")
    qv = pytest.importorskip("qwen_vl_utils.vision_process")
    monkeypatch.setenv("FORCE_QWENVL_VIDEO_READER", "decord")
    qv.get_video_reader_backend.cache_clear() if hasattr(qv.get_video_reader_backend, "cache_clear") else None
    path = footage_file(name)
    ref, ref_fps = qv.fetch_video({"video": str(path), **kwargs}, return_video_sample_fps=True)
    with Source.open(path) as src:
        clip = sample_qwen(src, QwenCompatConfig(**kwargs))
    assert clip.frames.shape == (ref.shape[0], ref.shape[2], ref.shape[3], 3)
    assert clip.fps == pytest.approx(ref_fps)
    idx = torch.linspace(0, clip.meta["total_frames"] - 1, clip.n).round().long().tolist()
    assert clip.meta["indices"] == idx
    # Same frames (resizers differ slightly: swscale bicubic vs torchvision antialiased bicubic).
    ours = clip.frames.astype(np.float32).transpose(0, 3, 1, 2)
    diff = np.abs(ours - ref.numpy()).mean(axis=(1, 2, 3))
    assert diff.max() < 4.0, diff


def test_smart_nframes_and_resize_match_qwen_vl_utils():
    qv = pytest.importorskip("qwen_vl_utils.vision_process")
    rng = np.random.default_rng(0)
    for _ in range(300):
        total = int(rng.integers(8, 20000))
        vfps = float(rng.choice([7.5, 10, 12.5, 24, 25, 29.97, 30, 60]))
        ele = {
            "fps": float(rng.choice([0.5, 1, 2, 4])),
            "min_frames": int(rng.integers(2, 8)),
            "max_frames": int(rng.integers(8, 800)),
        }
        try:
            expect = qv.smart_nframes(ele, total_frames=total, video_fps=vfps)
        except ValueError:
            continue
        assert smart_nframes(total, vfps, **ele) == expect
        h, w = int(rng.integers(100, 2200)), int(rng.integers(100, 4000))
        lo, hi = 128 * 784, int(rng.integers(200, 2000)) * 784
        assert smart_resize(h, w, min_pixels=lo, max_pixels=hi) == qv.smart_resize(h, w, 28, lo, hi)


def test_resume_from_a_clip_boundary_gives_identical_clips(person_clip):
    """A worker restarted with the saved ``next_clip_t`` produces exactly the clips a clean run does."""
    cfg = SamplerConfig()
    holder, full, marks = {}, [], []
    with Source.open(person_clip) as src:
        for clip in sample_clips(src, cfg, on_sampler=lambda s: holder.setdefault("s", s)):
            full.append(clip)
            marks.append(holder["s"].next_clip_t)
    for i in (2, 9):
        with Source.open(person_clip) as src:
            rest = list(sample_clips(src, cfg, start_index=i + 1, resume_at=marks[i]))
        assert [c.index for c in rest] == [c.index for c in full[i + 1 :]]
        for a, b in zip(rest, full[i + 1 :]):
            assert a.fps == b.fps and np.array_equal(a.times, b.times) and np.array_equal(a.frames, b.frames)


class _Picture:
    """A decoded picture as the sampler sees one: a time and pixels (here a flat grey frame)."""

    def __init__(self, t: float):
        self.t = t

    def to_rgb(self, width=None, height=None):
        return np.full((height or 240, width or 320, 3), int(self.t * 10) % 256, dtype=np.uint8)


def test_a_clip_is_emitted_as_soon_as_its_last_frame_is_known():
    """Live streams need clips without delay: each clip leaves the sampler when the frame after its
    last sample arrives. Regression: when every grid slot is filled by the frame just BEFORE the grid
    time (the nearer one), finished clips were held back until the end of the stream."""
    cfg = SamplerConfig(min_fps=1, max_fps=1, clip_seconds=2)
    sampler = DynamicSampler(cfg, stream_id="s", width=320, height=240, native_fps=30.0)
    times = [0.0] + [k / 30 - 0.01 for k in range(1, 30 * 20)]  # each grid time is 0.01 s after a frame
    delays = []
    for t in times:
        for clip in sampler.push(_Picture(t)):
            delays.append(t - clip.times[-1])
    assert len(delays) >= 8
    assert max(delays) <= 0.05, delays


def test_unpaired_windows_hold_any_number_of_frames_and_tile_time(synthetic):
    """``pairs=False`` (a live stream's decision windows that no VLM sees): 1-s clips at 1 or 2 fps hold
    one or two frames, each clip covering exactly its window, in order; with pairs the same windows
    would be widened to two frames (2 s at 1 fps)."""
    spec = synthetic["cfr"]  # moving square during 5-9 s and 13.5-16 s, near-static otherwise
    kw = dict(min_fps=1.0, max_fps=2.0, clip_seconds=1.0, activity_low=0.01, activity_high=0.04)
    clips = _clips(spec.path, SamplerConfig(pairs=False, **kw))
    body = clips[:-1]  # the last may be cut short by the end of the file
    assert {c.n for c in body} == {1, 2}, sorted({(c.n, c.fps) for c in body})
    for c in body:
        assert c.n == round(c.fps * 1.0)  # one window of frames at the clip's rate
        assert c.end - c.start == pytest.approx(1.0, abs=0.06)
    for a, b in zip(clips[:-1], clips[1:]):
        assert b.start == pytest.approx(a.end, abs=0.06) and b.index == a.index + 1
    paired = _clips(spec.path, SamplerConfig(**kw))
    assert all(c.n % 2 == 0 for c in paired[:-1])
    assert any(c.end - c.start == pytest.approx(2.0, abs=0.06) for c in paired)
    with pytest.raises(ValueError, match="at least one frame per clip"):
        SamplerConfig(pairs=False, max_fps=2.0, clip_seconds=0.4)


class _CountingPicture(_Picture):
    converted: typing.ClassVar[list[float]] = []

    def to_rgb(self, width=None, height=None):
        _CountingPicture.converted.append(self.t)
        return super().to_rgb(width, height)

    def to_gray(self, width, height):  # the sampler's thumbnail, as a decoded frame gives it (no RGB)
        return np.full((height, width), int(self.t * 10) % 256, dtype=np.uint8)


@pytest.mark.parametrize("min_fps,spread", [(2.0, True), (0.5, False)])
def test_at_one_rate_each_frame_is_converted_as_it_is_taken_not_in_a_burst_per_clip(min_fps, spread):
    """At a fixed rate every candidate ends in a clip, so its RGB is made when the slot takes it; a clip's
    frames converted all at once when it completes stalled the decode-ahead thread (bench/ingest.py's
    2 fps row: 0.85 → 1.03 × ffmpeg). With several rates the choice waits for the window (lazy)."""
    _CountingPicture.converted = []
    cfg = SamplerConfig(min_fps=min_fps, max_fps=2, clip_seconds=8)
    sampler = DynamicSampler(cfg, stream_id="s", width=320, height=240, native_fps=30.0)
    conversions_at_emit = []
    for k in range(30 * 20):
        before = len(_CountingPicture.converted)
        clips = sampler.push(_CountingPicture(k / 30))
        if clips:
            conversions_at_emit.append(len(_CountingPicture.converted) - before)
    assert len(conversions_at_emit) == 2
    if spread:  # at most the frame just taken is converted by the push that completes a clip
        assert max(conversions_at_emit) <= 1, conversions_at_emit
    else:  # the clip's picks are converted when the window's rate is known
        assert min(conversions_at_emit) >= 4, conversions_at_emit
