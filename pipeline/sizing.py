"""Frame counts and sizes, the Qwen2.5-VL way (qwen-vl-utils 0.0.14 semantics, reimplemented)."""

from __future__ import annotations

import math

from .config import FACTOR, TEMPORAL_PATCH_SIZE
from .errors import ClipError

MAX_RATIO = 200
VIDEO_MIN_PIXELS = 128 * FACTOR * FACTOR
VIDEO_MAX_PIXELS = 768 * FACTOR * FACTOR


def _round_by(x: float, f: int) -> int:
    return round(x / f) * f


def _ceil_by(x: float, f: int) -> int:
    return math.ceil(x / f) * f


def _floor_by(x: float, f: int) -> int:
    return math.floor(x / f) * f


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = FACTOR,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: float = VIDEO_MAX_PIXELS,
) -> tuple[int, int]:
    """(height, width): both multiples of ``factor``, area within [min_pixels, max_pixels], aspect kept."""
    if height <= 0 or width <= 0:
        raise ClipError(f"cannot size a {width}x{height} frame")
    if max_pixels < min_pixels:
        raise ClipError(f"max_pixels ({max_pixels}) < min_pixels ({min_pixels})")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ClipError(
            f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {max(height, width) / min(height, width)}"
        )
    h_bar = max(factor, _round_by(height, factor))
    w_bar = max(factor, _round_by(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, _floor_by(height / beta, factor))
        w_bar = max(factor, _floor_by(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_by(height * beta, factor)
        w_bar = _ceil_by(width * beta, factor)
    return h_bar, w_bar


def smart_nframes(
    total_frames: int,
    video_fps: float,
    *,
    fps: float | None = 2.0,
    nframes: int | None = None,
    min_frames: int = 4,
    max_frames: int = 768,
) -> int:
    """How many frames qwen-vl-utils samples from a bounded video (always a multiple of 2)."""
    f = TEMPORAL_PATCH_SIZE
    if nframes is not None:
        n = _round_by(nframes, f)
    else:
        lo = _ceil_by(min_frames, f)
        hi = _floor_by(min(max_frames, total_frames), f)
        raw = total_frames / video_fps * (fps if fps is not None else 2.0)
        raw = min(min(max(raw, lo), hi), total_frames)
        n = _floor_by(raw, f)
    if not (f <= n <= total_frames):
        raise ClipError(f"nframes should be in [{f}, {total_frames}], got {n}")
    return int(n)


def qwen_frame_indices(total_frames: int, nframes: int, start: int = 0, end: int | None = None) -> list[int]:
    """``torch.linspace(start, end, nframes).round()`` without torch (round half to even, like torch)."""
    import numpy as np

    end = total_frames - 1 if end is None else end
    if nframes == 1:
        return [start]
    # torch.linspace (float32): step in float32, first half counted up from start, second half
    # counted down from end. Emulated here so the rounding (half to even) picks the same frames.
    f32 = np.float32
    step = f32(f32(end - start) / f32(nframes - 1))
    half = nframes // 2
    i = np.arange(nframes)
    # torch's vectorised kernel uses fused multiply-add: one rounding, emulated via float64.
    f64 = np.float64
    up = (f64(start) + f64(step) * i).astype(f32)
    down = (f64(end) - f64(step) * (nframes - 1 - i)).astype(f32)
    lin = np.where(i < half, up, down).astype(f32)
    return [int(v) for v in np.round(lin)]


def qwen_video_max_pixels(
    nframes: int,
    *,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int | None = None,
    total_pixels: int | None = None,
    model_seq_len: int = 128000,
) -> float:
    """The per-frame pixel cap qwen-vl-utils derives from the total-video budget."""
    total = total_pixels if total_pixels is not None else model_seq_len * FACTOR * FACTOR * 0.9
    cap = max(min(VIDEO_MAX_PIXELS, total / nframes * TEMPORAL_PATCH_SIZE), int(min_pixels * 1.05))
    if max_pixels is not None:
        cap = min(max_pixels, cap)
    return cap


def tokens_per_frame_pair(height: int, width: int) -> int:
    """LLM tokens one temporal patch (two frames) costs after the 2×2 merge."""
    return (height // FACTOR) * (width // FACTOR)
