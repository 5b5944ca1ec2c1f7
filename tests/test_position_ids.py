"""Absolute-time MRoPE IDs: the original Qwen2.5-VL rule, no truncation, text at max+1."""

from __future__ import annotations

import numpy as np
import pytest

from longwatch.model.position_ids import (
    VideoSpan,
    model_time_to_clip_seconds,
    position_ids,
    temporal_ids,
    uniform_temporal_ids,
)
from longwatch.pipeline.errors import ClipError


@pytest.mark.parametrize(
    "fps,expected",
    [
        (1.0, [0, 4, 8, 12, 16]),
        (2.0, [0, 2, 4, 6, 8]),
        (4.0, [0, 1, 2, 3, 4]),
        (8.0, [0, 0, 1, 1, 2]),  # second_per_grid_t = 0.25: fractional steps, not all zeros
    ],
)
def test_temporal_ids_at_fps(fps, expected):
    times = 100.0 + np.arange(10) / fps  # absolute stream times; ids are relative to the clip
    assert temporal_ids(times).tolist() == expected
    assert uniform_temporal_ids(5, 2.0 / fps).tolist() == expected


@pytest.mark.parametrize("n,expected", [(1, [0]), (3, [0, 2]), (7, [0, 2, 4, 6]), (9, [0, 2, 4, 6, 8])])
def test_odd_frame_counts(n, expected):
    assert temporal_ids(np.arange(n) * 0.5).tolist() == expected


def test_ids_follow_real_times_not_nominal():
    # VFR / jittered times: ts[2k] - ts[0] decides, not k * nominal.
    times = [0.0, 0.4, 1.3, 1.6, 2.05, 2.5, 9.0, 9.5]
    assert temporal_ids(times).tolist() == [0, 2, 4, 18]


def test_float_error_does_not_drop_a_position():
    # 3 x (2/3) x 2 = 3.9999999999999996 in floating point; the id is 4.
    assert uniform_temporal_ids(4, 2.0 / 3.0).tolist() == [0, 1, 2, 4]


def test_video_block_matches_transformers_vision_ids():
    torch = pytest.importorskip("torch")
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    for fps in (1.0, 2.0, 4.0, 8.0):
        grid = (5, 6, 8)
        spgt = 2.0 / fps
        span = VideoSpan(grid, uniform_temporal_ids(5, spgt))
        ref = Qwen2_5_VLModel.get_vision_position_ids(None, 7, torch.tensor(grid), 1, 2, time_interval=2 * spgt).numpy()
        assert np.array_equal(span.ids(7), ref)


def test_text_after_video_starts_at_max_plus_one():
    span = VideoSpan((3, 4, 4), np.array([0, 4, 8]))  # fps 1: ids grow past the spatial extent
    ids = position_ids([2, span, 3])
    assert ids.shape == (3, 2 + 3 * 2 * 2 + 3)
    assert ids[:, :2].tolist() == [[0, 1]] * 3
    video = ids[:, 2:14]
    assert video[0].tolist() == [2] * 4 + [6] * 4 + [10] * 4
    assert video[1].tolist() == [2, 2, 3, 3] * 3
    assert video[2].tolist() == [2, 3, 2, 3] * 3
    assert ids[:, 14:].tolist() == [[11, 12, 13]] * 3  # max(10) + 1, on all three axes


def test_two_videos_in_one_sequence():
    a = VideoSpan((2, 2, 2), np.array([0, 2]))
    b = VideoSpan((2, 2, 2), np.array([0, 1]))
    ids = position_ids([1, a, 1, b])
    assert ids[0].tolist() == [0, 1, 3, 4, 5, 6]  # text, video a (t 0,2), text at 3+1, video b (t 0,1)
    assert ids.max() == 6


def test_model_time_maps_back_to_clip_seconds():
    assert model_time_to_clip_seconds(9) == 4.5
    with pytest.raises(ClipError):
        model_time_to_clip_seconds(-1)
    with pytest.raises(ClipError):
        VideoSpan((2, 2, 2), np.array([0]))
