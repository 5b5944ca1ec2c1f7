"""Our patches equal transformers' Qwen2-VL video processor output on the same frames."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor  # noqa: E402

from longwatch.pipeline import ClipError, SamplerConfig, Source, patchify, sample_clips  # noqa: E402
from longwatch.pipeline.types import Clip  # noqa: E402


@pytest.fixture(scope="module")
def processor():
    return Qwen2VLVideoProcessor()


def _reference(processor, clip: Clip):
    video = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)  # (T, C, H, W) uint8
    out = processor(videos=[video], return_tensors="pt", do_sample_frames=False, cap_pixels_per_frame=True)
    return out["pixel_values_videos"].numpy(), tuple(out["video_grid_thw"][0].tolist())


def _clips(path, fps, seconds=4.0, limit=2):
    with Source.open(path) as src:
        out = []
        for clip in sample_clips(src, SamplerConfig(min_fps=fps, max_fps=fps, clip_seconds=seconds)):
            out.append(clip)
            if len(out) == limit:
                src.stop()
                break
    return out


@pytest.mark.parametrize("fps", [1.0, 2.0, 4.0])
def test_patches_equal_transformers_on_real_footage(processor, person_clip, fps):
    for clip in _clips(person_clip, fps):
        ours = patchify(clip)
        ref, grid = _reference(processor, clip)
        assert ours.grid_thw == grid
        assert ours.pixel_values.shape == ref.shape
        assert np.abs(ours.pixel_values - ref).max() <= 1e-6


def test_patches_equal_transformers_on_synthetic(processor, synthetic):
    for clip in _clips(synthetic["vfr"].path, 8.0, seconds=1.5, limit=3):
        ours = patchify(clip)
        ref, grid = _reference(processor, clip)
        assert ours.grid_thw == grid and np.abs(ours.pixel_values - ref).max() <= 1e-6


@pytest.mark.parametrize("n", [1, 3, 5])
def test_odd_frame_counts_repeat_the_last_frame_like_transformers(processor, person_clip, n):
    clip = _clips(person_clip, 2.0, limit=1)[0]
    odd = dataclasses.replace(clip, times=clip.times[:n], frames=clip.frames[:n], motion=clip.motion[:n])
    ours = patchify(odd)
    ref, grid = _reference(processor, odd)
    assert ours.grid_thw == grid == ((n + 1) // 2, 30, 54)
    assert np.abs(ours.pixel_values - ref).max() <= 1e-6
    assert ours.patch_times.tolist() == odd.times[::2].tolist()


def test_patch_layout_is_channel_frame_pixel():
    # Build frames whose values encode (frame, channel, row, col) and check a patch row by hand.
    t, h, w = 4, 56, 56
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    for f in range(t):
        for c in range(3):
            frames[f, :, :, c] = (f * 60 + c * 20) % 256
    frames[:, :, 28:, :] += 1  # right half differs
    clip = Clip("s", 0, fps=2.0, times=np.arange(t) * 0.5, frames=frames)
    p = patchify(clip, mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255))  # identity normalisation
    assert p.grid_thw == (2, 4, 4)
    row = p.pixel_values[0].reshape(3, 2, 14, 14)  # channel, frame of the pair, 14x14
    for c in range(3):
        for f in range(2):
            assert np.all(row[c, f] == (f * 60 + c * 20) % 256)
    # Row order: merge block raster, then patch inside the block: row 4 is block (0,1) -> right half.
    assert p.pixel_values[4].reshape(3, 2, 14, 14)[0, 0, 0, 0] == 1
    assert p.pixel_values[16].reshape(3, 2, 14, 14)[0, 0, 0, 0] == (120 % 256)  # second temporal patch


def test_second_per_grid_t_is_not_truncated():
    frames = np.zeros((8, 28, 28, 3), dtype=np.uint8)
    for fps, spgt in [(1.0, 2.0), (2.0, 1.0), (4.0, 0.5), (8.0, 0.25)]:
        clip = Clip("s", 0, fps=fps, times=np.arange(8) / fps, frames=frames)
        assert patchify(clip).second_per_grid_t == spgt


def test_sizes_must_be_multiples_of_28():
    clip = Clip("s", 0, fps=2.0, times=[0.0, 0.5], frames=np.zeros((2, 30, 56, 3), dtype=np.uint8))
    with pytest.raises(ClipError, match="multiple of 28"):
        patchify(clip)


def test_patch_times_are_absolute(person_clip):
    clip = _clips(person_clip, 2.0, limit=2)[1]
    p = patchify(clip)
    assert p.patch_times[0] == clip.start == 4.0
    assert p.patch_utc()[0].isoformat() == "2017-09-26T16:57:53+00:00"
