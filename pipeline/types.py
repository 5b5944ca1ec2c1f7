"""The data that flows through the pipeline. Dataclasses, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from .errors import ClipError
from .timebase import UNIX_EPOCH, clip_to_stream_seconds, to_utc


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture: RGB uint8 (H, W, 3) and its stream time from PTS."""

    t: float
    image: np.ndarray
    pts: int | None = None
    pts_estimated: bool = False
    keyframe: bool = False

    def __post_init__(self) -> None:
        if not math.isfinite(self.t):
            raise ClipError(f"frame time must be finite, got {self.t!r}")
        img = self.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ClipError(
                f"frame image must be an (H, W, 3) uint8 array, got "
                f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', type(img).__name__)}"
            )
        if img.shape[0] < 1 or img.shape[1] < 1:
            raise ClipError(f"frame image is empty: {img.shape}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.image.shape[1], self.image.shape[0]


@dataclass(frozen=True)
class Clip:
    """A run of frames of one stream sampled at ONE nominal rate, ready to patchify.

    ``times`` are the frames' own PTS times in stream seconds (strictly increasing); ``fps`` is the
    sampling rate the frames were picked at, so ``second_per_grid_t = temporal_patch_size / fps``.
    The sampler emits an even number of frames except, possibly, for the last clip of a bounded
    source; patchify repeats the last frame of an odd clip, exactly as transformers does.
    """

    stream_id: str
    index: int
    fps: float
    times: np.ndarray
    frames: np.ndarray
    epoch: datetime = UNIX_EPOCH
    activity: float = 0.0
    motion: np.ndarray | None = None  # per frame: mean |Δ| of its thumbnail vs the candidate before (0..1)
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        times = np.asarray(self.times, dtype=np.float64)
        object.__setattr__(self, "times", times)
        if self.motion is not None:
            motion = np.asarray(self.motion, dtype=np.float64)
            if motion.shape != times.shape or not np.all(np.isfinite(motion)) or np.any((motion < 0) | (motion > 1)):
                raise ClipError("clip motion must be one value in [0, 1] per frame")
            object.__setattr__(self, "motion", motion)
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ClipError(f"clip fps must be a positive number, got {self.fps!r}")
        if times.ndim != 1 or len(times) < 1:
            raise ClipError("a clip needs at least one frame time")
        if not np.all(np.isfinite(times)):
            raise ClipError("clip frame times must be finite")
        if len(times) > 1 and not np.all(np.diff(times) > 0):
            raise ClipError("clip frame times must be strictly increasing")
        f = self.frames
        if not isinstance(f, np.ndarray) or f.ndim != 4 or f.shape[3] != 3 or f.dtype != np.uint8:
            raise ClipError(f"clip frames must be an (N, H, W, 3) uint8 array, got {getattr(f, 'shape', None)}")
        if f.shape[0] != len(times):
            raise ClipError(f"{f.shape[0]} frames but {len(times)} times")
        if self.epoch.tzinfo is None:
            raise ClipError("clip epoch must be timezone-aware")

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def start(self) -> float:
        """Stream seconds of the first frame."""
        return float(self.times[0])

    @property
    def end(self) -> float:
        """Stream seconds where the clip's coverage ends: last frame + one sampling interval."""
        return float(self.times[-1]) + 1.0 / self.fps

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        return self.frames.shape[2], self.frames.shape[1]

    def stream_seconds(self, clip_relative: float) -> float:
        """Stream seconds of a clip-relative time (the model's time axis starts at 0 per clip)."""
        return clip_to_stream_seconds(self.start, clip_relative)

    def utc(self, clip_relative: float = 0.0) -> datetime:
        """Absolute UTC time of a clip-relative time."""
        return to_utc(self.epoch, self.stream_seconds(clip_relative))


SEGMENT_STATES = ("open", "closed")


@dataclass(frozen=True)
class Segment:
    """An event on one stream over [start, end] stream seconds (absolute via ``epoch``).

    ``id`` is deterministic from (stream, event, start in ms), so replaying a stretch of footage
    after a crash overwrites the same segment instead of adding a duplicate.
    """

    stream_id: str
    event: str
    start: float
    end: float
    epoch: datetime = UNIX_EPOCH
    score: float = 0.0
    state: str = "closed"

    def __post_init__(self) -> None:
        if not self.stream_id or not self.event:
            raise ClipError("a segment needs a stream id and an event name")
        if not (math.isfinite(self.start) and math.isfinite(self.end)):
            raise ClipError(f"segment times must be finite, got {self.start!r}..{self.end!r}")
        if self.end < self.start:
            raise ClipError(f"segment ends ({self.end}) before it starts ({self.start})")
        if self.state not in SEGMENT_STATES:
            raise ClipError(f"segment state must be one of {SEGMENT_STATES}, got {self.state!r}")
        if self.epoch.tzinfo is None:
            raise ClipError("segment epoch must be timezone-aware")

    @property
    def id(self) -> str:
        import hashlib

        key = f"{self.stream_id}\x1f{self.event}\x1f{round(self.start * 1000)}"
        return hashlib.sha1(key.encode()).hexdigest()[:20]

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def start_utc(self) -> datetime:
        return to_utc(self.epoch, self.start)

    @property
    def end_utc(self) -> datetime:
        return to_utc(self.epoch, self.end)
