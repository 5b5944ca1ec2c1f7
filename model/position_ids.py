"""Qwen2.5-VL 3-D MRoPE position IDs (t, h, w) with absolute-time temporal IDs.

Temporal ID of temporal patch k: ``floor((ts[2k] − ts[0]) × tokens_per_second)`` where ``ts`` are the
frames' own PTS times. For uniform sampling this equals the original Qwen2.5-VL rule
``floor(k × second_per_grid_t × tokens_per_second)``, with ``second_per_grid_t = 2 / fps`` kept as a
float (fps > 2 gives second_per_grid_t < 1; truncating it to an int would collapse every patch onto
position 0). Text after a video starts at ``max(all ids so far) + 1`` (the original transformers 4.x
``get_rope_index``; transformers 5.x continues text at ``start + video token count`` instead).

Plain numpy: usable without torch; the model backend turns the result into a tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from longwatch.pipeline.config import MERGE_SIZE, TEMPORAL_PATCH_SIZE, TOKENS_PER_SECOND
from longwatch.pipeline.errors import ClipError

# Guard against float error in (ts[2k] − ts[0]) × tps landing a hair under an integer
# (e.g. 3 × (2/3) × 2 = 3.9999999999999996); far below any real timing resolution.
_EPS = 1e-6


def temporal_ids(
    times: Sequence[float] | np.ndarray,
    *,
    tokens_per_second: float = TOKENS_PER_SECOND,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> np.ndarray:
    """MRoPE temporal IDs, one per temporal patch, from the clip's frame times (stream seconds)."""
    ts = np.asarray(times, dtype=np.float64)
    if ts.ndim != 1 or len(ts) == 0:
        raise ClipError("temporal_ids needs a non-empty 1-D array of frame times")
    starts = ts[::temporal_patch_size]
    rel = (starts - starts[0]) * float(tokens_per_second)
    if np.any(rel < 0):
        raise ClipError("frame times must not decrease")
    return np.floor(rel + _EPS).astype(np.int64)


def uniform_temporal_ids(
    grid_t: int, second_per_grid_t: float, *, tokens_per_second: float = TOKENS_PER_SECOND
) -> np.ndarray:
    """The original Qwen2.5-VL rule for uniformly sampled frames: floor(k × spgt × tps)."""
    k = np.arange(grid_t, dtype=np.float64)
    return np.floor(k * float(second_per_grid_t) * float(tokens_per_second) + _EPS).astype(np.int64)


@dataclass(frozen=True)
class VideoSpan:
    """A video inside a token sequence: its patch grid (before merge) and temporal IDs."""

    grid_thw: tuple[int, int, int]
    t_ids: np.ndarray
    merge_size: int = MERGE_SIZE

    def __post_init__(self) -> None:
        t, h, w = self.grid_thw
        if len(self.t_ids) != t:
            raise ClipError(f"{len(self.t_ids)} temporal ids for grid_t={t}")
        if h % self.merge_size or w % self.merge_size:
            raise ClipError(f"grid {self.grid_thw} not divisible by merge size {self.merge_size}")

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid_thw
        return t * (h // self.merge_size) * (w // self.merge_size)

    def ids(self, offset: int) -> np.ndarray:
        """(3, num_tokens) ids: rows t, h, w; order temporal patch, then merged rows, then columns."""
        t, h, w = self.grid_thw
        lh, lw = h // self.merge_size, w // self.merge_size
        tt = np.repeat(np.asarray(self.t_ids, dtype=np.int64), lh * lw)
        hh = np.tile(np.repeat(np.arange(lh, dtype=np.int64), lw), t)
        ww = np.tile(np.arange(lw, dtype=np.int64), t * lh)
        return np.stack([tt, hh, ww]) + offset


def position_ids(parts: Sequence[int | VideoSpan]) -> np.ndarray:
    """3-D position IDs (3, L) for a sequence of text runs (token counts) and videos.

    Text tokens get the same id on all three axes, counting on from the previous maximum + 1;
    a video's ids start right after the preceding text (offset = that text's next id).
    """
    chunks: list[np.ndarray] = []
    next_id = 0
    for part in parts:
        if isinstance(part, VideoSpan):
            block = part.ids(next_id)
        else:
            n = int(part)
            if n < 0:
                raise ClipError("text run length must be >= 0")
            block = np.broadcast_to(np.arange(next_id, next_id + n, dtype=np.int64), (3, n))
        if block.shape[1]:
            chunks.append(block)
            next_id = int(block.max()) + 1
    if not chunks:
        return np.zeros((3, 0), dtype=np.int64)
    return np.concatenate(chunks, axis=1)


def model_time_to_clip_seconds(t_id: float, *, tokens_per_second: float = TOKENS_PER_SECOND) -> float:
    """Clip-relative seconds of a temporal position (inverse of the temporal-ID rule)."""
    if not math.isfinite(t_id) or t_id < 0:
        raise ClipError(f"temporal position must be a finite number >= 0, got {t_id!r}")
    return float(t_id) / float(tokens_per_second)
