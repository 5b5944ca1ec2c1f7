"""File sources: times equal PTS, on synthetic clips with known times and on real footage."""

from __future__ import annotations

from datetime import UTC, datetime

import av
import numpy as np
import pytest
from conftest import footage_file

from longwatch.pipeline import Source, SourceConfig
from sample_videos.make_synthetic import read_barcode


@pytest.mark.parametrize("name", ["cfr", "vfr", "jump"])
def test_frame_times_equal_encoded_pts(synthetic, name):
    spec = synthetic[name]
    with Source.open(spec.path) as src:
        frames = list(src.frames())
    times = [f.t for f in frames]
    assert times == pytest.approx(spec.times, abs=1e-9)
    # Each picture shows the time it was encoded at: the right picture has the right time.
    for f in frames[:: max(1, len(frames) // 40)]:
        assert read_barcode(f.to_rgb()) == pytest.approx(f.t, abs=1e-9)
    assert src.stats.pts_estimated == 0 and src.stats.pts_discontinuities == 0


def test_vfr_intervals_are_not_nominal(synthetic):
    spec = synthetic["vfr"]
    with Source.open(spec.path) as src:
        diffs = np.diff([f.t for f in src.frames()])
    assert diffs.min() < 0.025 and diffs.max() > 0.08  # truly variable: index/fps would be wrong


def test_pts_jump_is_kept(synthetic):
    with Source.open(synthetic["jump"].path) as src:
        times = np.array([f.t for f in src.frames()])
    gap = np.diff(times).max()
    assert gap == pytest.approx(30.04, abs=1e-6)


def _pyav_times(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start = s.start_time or 0
        return [float((f.pts - start) * s.time_base) for f in c.decode(s)]


@pytest.mark.parametrize("name", ["one-by-one-person-detection.mp4", "vtest.avi", "car-detection.mp4", "bikes.mp4"])
def test_real_footage_times_match_container_pts(name):
    path = footage_file(name)
    with Source.open(path) as src:
        ours = [f.t for f in src.frames()]
        declared = src.frame_count
    assert ours == pytest.approx(_pyav_times(path), abs=1e-9)
    assert len(ours) == declared
    assert np.all(np.diff(ours) > 0)


def test_epoch_from_creation_time_and_start_at():
    path = footage_file("one-by-one-person-detection.mp4")
    with Source.open(path) as src:
        assert src.epoch == datetime(2017, 9, 26, 16, 57, 49, tzinfo=UTC)
    with Source.open(path, start_at="2026-11-22T14:02:00Z") as src:
        assert src.epoch == datetime(2026, 11, 22, 14, 2, tzinfo=UTC)


def test_no_creation_time_means_unix_zero(synthetic):
    with Source.open(synthetic["vfr"].path) as src:
        assert src.epoch == datetime(1970, 1, 1, tzinfo=UTC)


def test_audio_track_is_ignored():
    path = footage_file("car-detection.mp4")
    with Source.open(path) as src:
        assert (src.width, src.height) == (768, 432)
        n = sum(1 for _ in src.frames())
    assert n == 377


def test_keyframe_only_decoding_keeps_true_times(synthetic):
    spec = synthetic["gop"]
    with Source.open(spec.path) as src:
        assert src.keyframe_interval() == pytest.approx(1.0)
        keys = list(src.frames(skip="NONKEY"))
    assert [f.t for f in keys] == pytest.approx([float(i) for i in range(30)])
    assert all(f.keyframe for f in keys)
    for f in keys[::7]:
        assert read_barcode(f.to_rgb()) == pytest.approx(f.t)


def test_nonref_skip_keeps_true_times(person_clip):
    with Source.open(person_clip) as src:
        frames = list(src.frames(skip="NONREF"))
    all_times = set(round(t, 6) for t in _pyav_times(person_clip))
    assert 0 < len(frames) < 1394  # some frames were skipped ...
    assert all(round(f.t, 6) in all_times for f in frames)  # ... and the rest keep their own PTS


def test_resume_from_a_time_gives_the_same_frames(synthetic):
    spec = synthetic["cfr"]
    with Source.open(spec.path) as src:
        full = [(f.t, f.to_rgb()[:16].tobytes()) for f in src.frames()]
    with Source.open(spec.path) as src:
        tail = [(f.t, f.to_rgb()[:16].tobytes()) for f in src.frames(start_s=12.0)]
    expect = [x for x in full if x[0] >= 12.0]
    assert [t for t, _ in tail] == pytest.approx([t for t, _ in expect])
    assert [b for _, b in tail] == [b for _, b in expect]


def test_raw_elementary_stream_without_pts_is_flagged(tmp_path):
    from sample_videos.make_synthetic import Synthetic, cfr_times, write

    spec = write(Synthetic(str(tmp_path / "raw.h264"), cfr_times(2, 25)), rate=25)
    with Source.open(spec.path) as src:
        frames = list(src.frames())
    assert len(frames) == 50
    assert all(f.pts_estimated for f in frames)  # no PTS at all in an Annex-B stream: said, not hidden
    assert np.all(np.diff([f.t for f in frames]) > 0)


def test_frames_are_rgb_at_requested_size(person_clip):
    with Source.open(person_clip) as src:
        frame = next(iter(src.frames()))
        rgb = frame.to_rgb(448, 252)
        src.stop()
    assert rgb.shape == (252, 448, 3) and rgb.dtype == np.uint8
    full = frame.to_frame()
    assert full.size == (768, 432) and full.t == 0.0


def test_decoder_threads_config_is_used(person_clip):
    # decode_ahead=0: no decoding thread, so the codec context can be read safely between frames
    with Source.open(person_clip, config=SourceConfig(decoder_threads=2, decode_ahead=0)) as src:
        frames = iter(src.frames())
        next(frames)
        assert src._container.streams.video[0].codec_context.thread_count == 2
        assert 1 + sum(1 for _ in frames) == 1394
    with Source.open(person_clip, config=SourceConfig(decode_ahead=0)) as src:  # 0 = auto: FFmpeg's choice
        frames = iter(src.frames())
        next(frames)
        assert src.decoder_threads == 0
        assert src._container.streams.video[0].codec_context.thread_count > 1  # FFmpeg's choice on 2+ cores
        src.stop()


def test_thumbnails_share_halvings_and_stay_within_a_grey_level_of_a_direct_area_resize(person_clip):
    """A frame's thumbnails come from 2× area halvings of each plane where the factor allows (the 768 px
    clip: 64 px = 12×, two halvings then 3×; 160 px = 4.8×, directly), shared between them; each is
    within one grey level of OpenCV's direct area resize."""
    import cv2

    with Source.open(person_clip, config=SourceConfig(decode_ahead=0)) as src:
        frame = next(iter(src.frames()))
        src.stop()
    assert (frame.width, frame.height) == (768, 432)
    plane = np.frombuffer(memoryview(frame.av_frame.planes[0]), np.uint8)
    plane = plane.reshape(432, frame.av_frame.planes[0].line_size)[:, :768]
    for w, h in ((160, 90), (64, 36), (96, 54)):
        direct = cv2.resize(plane, (w, h), interpolation=cv2.INTER_AREA)
        shared = frame._plane(0, w, h)
        assert shared.shape == (h, w)
        assert np.abs(shared.astype(int) - direct).max() <= 1, (w, h)
    assert [a.shape for a in frame._halves[0]] == [(216, 384), (108, 192), (54, 96)]  # 96 px = 8×: reuses 64 px's two
    rgb = frame.to_small_rgb(64, 36)
    ref = frame.av_frame.reformat(width=64, height=36, format="rgb24", interpolation="AREA").to_ndarray()
    assert rgb.shape == (36, 64, 3) and np.abs(rgb.astype(int) - ref).mean() < 3
    assert [a.shape for a in frame._halves[1]] == [(108, 192)]  # chroma 384×216 → 64×36: 6× = 2 × 3


def test_a_file_decoded_without_non_reference_frames_beside_decode_ahead_gets_one_thread(person_clip):
    """Every frame a NONREF decode keeps is a reference the next one waits for: frame threads bought 4 %
    of wall time for 23 % more CPU, and the decode-ahead thread's consumer needs the other core."""
    with Source.open(person_clip, config=SourceConfig(decode_gops=1)) as src:
        assert src.threads_for("NONREF") == 1
        assert src.threads_for("DEFAULT") == 0 and src.threads_for("NONKEY") == 0  # FFmpeg's choice
        frames = src.frames(skip="NONREF")
        next(frames)
        assert src._container.streams.video[0].codec_context.thread_count == 1
        frames.close()
    with Source.open(person_clip, config=SourceConfig(decode_ahead=0)) as src:  # nothing runs beside it
        assert src.threads_for("NONREF") == 0
    with Source.open(person_clip, config=SourceConfig(decoder_threads=3)) as src:  # as configured
        assert src.threads_for("NONREF") == 3


def test_an_h264_file_is_decoded_a_gop_per_thread_on_one_thread_decoders(person_clip):
    """The default for an H.264 file beside a decode-ahead: two GOP workers (pipeline/gops.py), each
    decoder on one thread; keyframes-only decoding and a decode without a decode-ahead stay in order."""
    with Source.open(person_clip) as src:
        assert src.gop_workers("DEFAULT") == 2 and src.gop_workers("NONREF") == 2
        assert src.threads_for("DEFAULT") == 1 and src.threads_for("NONREF") == 1
        assert src.gop_workers("NONKEY") == 1 and src.threads_for("NONKEY") == 0
    with Source.open(person_clip, config=SourceConfig(decode_ahead=0)) as src:
        assert src.gop_workers("DEFAULT") == 1 and src.threads_for("DEFAULT") == 0
