"""Patches: a clip → Qwen2.5-VL's flattened temporal patches (``pixel_values_videos``).

Layout is exactly transformers' ``Qwen2VLVideoProcessor.patchify``: rows in the order
(temporal patch, 2×2 merge block in raster order, patch inside the block), columns in the order
(channel, frame of the pair, 14×14 pixels). Values are rescaled by 1/255 and normalised with the
model's mean/std (the fused ``(x − 255·mean) / (255·std)`` form transformers' fast processors use).
An odd frame count repeats the last frame, as transformers does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from .config import CLIP_MEAN, CLIP_STD, MERGE_SIZE, PATCH_SIZE, TEMPORAL_PATCH_SIZE
from .errors import ClipError
from .timebase import to_utc
from .types import Clip


@dataclass(frozen=True)
class VideoPatches:
    """One clip's model input: ``pixel_values`` (rows × C·T·P·P), its grid and its times."""

    pixel_values: np.ndarray
    grid_thw: tuple[int, int, int]
    second_per_grid_t: float
    patch_times: np.ndarray  # stream seconds of the first frame of each temporal patch (ts[2k])
    clip_start: float
    epoch: datetime
    stream_id: str = ""
    clip_index: int = 0

    def __post_init__(self) -> None:
        t, h, w = self.grid_thw
        if min(t, h, w) < 1:
            raise ClipError(f"invalid grid {self.grid_thw}")
        if self.pixel_values.ndim != 2 or self.pixel_values.shape[0] != t * h * w:
            raise ClipError(f"pixel_values {self.pixel_values.shape} does not match grid {self.grid_thw}")
        if len(self.patch_times) != t:
            raise ClipError(f"{len(self.patch_times)} patch times for grid_t={t}")
        if not self.second_per_grid_t > 0:
            raise ClipError(f"second_per_grid_t must be positive, got {self.second_per_grid_t}")

    @property
    def num_tokens(self) -> int:
        """LLM tokens after the 2×2 merge."""
        t, h, w = self.grid_thw
        return t * (h // MERGE_SIZE) * (w // MERGE_SIZE)

    def patch_utc(self) -> list[datetime]:
        """Absolute UTC start time of each temporal patch."""
        return [to_utc(self.epoch, float(s)) for s in self.patch_times]


def normalize(frames: np.ndarray, mean=CLIP_MEAN, std=CLIP_STD) -> np.ndarray:
    """uint8 (N, H, W, 3) → float32 (N, 3, H, W), rescaled and normalised."""
    x = frames.astype(np.float32).transpose(0, 3, 1, 2)
    m = (np.asarray(mean, dtype=np.float32) * np.float32(255.0)).reshape(1, 3, 1, 1)
    s = (np.asarray(std, dtype=np.float32) * np.float32(255.0)).reshape(1, 3, 1, 1)
    return (x - m) / s


def patchify(
    clip: Clip,
    *,
    mean=CLIP_MEAN,
    std=CLIP_STD,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> VideoPatches:
    """Flatten a clip into temporal patches with their grid, second_per_grid_t and absolute times."""
    n, height, width, _ = clip.frames.shape
    unit = patch_size * merge_size
    if height % unit or width % unit:
        raise ClipError(f"frame size {width}x{height} is not a multiple of {unit}: resize with smart_resize first")
    frames = clip.frames
    if pad := -n % temporal_patch_size:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)], axis=0)
    gt, gh, gw = frames.shape[0] // temporal_patch_size, height // patch_size, width // patch_size
    m = merge_size
    # Rearrange the uint8 pixels first (a quarter of the bytes of float32), then normalise in place:
    # the same (x − 255·mean) / (255·std) per element as before, so the values are bit-identical.
    p = frames.reshape(gt, temporal_patch_size, gh // m, m, patch_size, gw // m, m, patch_size, 3)
    p = p.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7).astype(np.float32)  # t, hb, wb, hm, wm, c, tp, ph, pw
    shape = (1, 1, 1, 1, 1, 3, 1, 1, 1)
    p -= (np.asarray(mean, dtype=np.float32) * np.float32(255.0)).reshape(shape)
    p /= (np.asarray(std, dtype=np.float32) * np.float32(255.0)).reshape(shape)
    flat = p.reshape(gt * gh * gw, 3 * temporal_patch_size * patch_size * patch_size)
    return VideoPatches(
        pixel_values=flat,
        grid_thw=(gt, gh, gw),
        second_per_grid_t=temporal_patch_size / clip.fps,
        patch_times=clip.times[::temporal_patch_size].copy(),
        clip_start=clip.start,
        epoch=clip.epoch,
        stream_id=clip.stream_id,
        clip_index=clip.index,
    )
