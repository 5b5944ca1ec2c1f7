"""Cheap signals every stream gets: activity and scene cuts. NumPy + OpenCV only, no model.

Activity
    Mean absolute difference of consecutive downscaled grey frames, in 0..1 (the same measure the
    sampler uses to pick its rate). :func:`frame_activity` gives one value per frame of a clip (the
    change INTO that frame; the first frame takes the change from ``prev`` when given, else from the
    frame after it). The value depends on the time between frames: compare clips of the same rate.

Scene cuts
    A hard cut is an instantaneous change of the whole picture. :class:`CutDetector` compares HSV colour
    histograms (16×4×4 bins on a 64-pixel-wide thumbnail; Bhattacharyya distance) of consecutive frames
    and reports a cut when the distance is large in absolute terms (``threshold``), large against its
    neighbourhood (``ratio`` × the mean distance of the previous ``window`` and the next ``lookahead``
    frame pairs), and a clear peak (``peak_ratio`` × the larger of the two adjacent pairs' distances). Histograms ignore where things are, so motion (a person walking out
    of view fast, a pan) moves them little while a new shot moves them a lot; the neighbourhood test
    rejects sustained change (fast motion, flicker) that an absolute threshold alone would let through.

    It needs closely spaced frames: pairs more than ``max_gap_s`` apart (default 0.2 s, i.e. at least
    5 fps) are not judged, because at sampled rates a large object entering the view changes the
    histogram as much as a cut does. Feed it the decoded stream (cheap thumbnails, e.g.
    ``DecodedFrame.to_rgb(64, 36)``), not the 0.5–2 fps clip frames. Decisions lag ``lookahead``
    frames behind the input. Reported time: the first frame of the new shot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

THUMB_WIDTH = 64
HIST_BINS = (16, 4, 4)


def _thumb(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= width:
        return image
    size = (width, max(8, round(width * h / w)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _gray_thumb(image: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    t = _thumb(image, width)
    return t if t.ndim == 2 else cv2.cvtColor(t, cv2.COLOR_RGB2GRAY)


def frame_activity(
    frames: Sequence[np.ndarray] | np.ndarray, *, prev: np.ndarray | None = None, thumb_width: int = THUMB_WIDTH
) -> np.ndarray:
    """Per-frame activity (0..1) of RGB (or grey) frames: mean |Δ| of grey thumbnails, /255.

    ``prev``: the frame before ``frames[0]`` (e.g. the last frame of the previous clip), to give the
    first frame a real value; without it the first frame repeats the second's value.
    """
    n = len(frames)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    thumbs = [_gray_thumb(f, thumb_width) for f in frames]
    out = np.zeros(n, dtype=np.float64)
    for i in range(1, n):
        out[i] = float(np.mean(cv2.absdiff(thumbs[i - 1], thumbs[i]))) / 255.0
    if prev is not None:
        p = _gray_thumb(prev, thumb_width)
        if p.shape == thumbs[0].shape:
            out[0] = float(np.mean(cv2.absdiff(p, thumbs[0]))) / 255.0
        elif n > 1:
            out[0] = out[1]
    elif n > 1:
        out[0] = out[1]
    return out


def clip_activity(clip, prev_frame: np.ndarray | None = None) -> np.ndarray:
    """:func:`frame_activity` over a :class:`~pipeline.types.Clip`'s frames, aligned with ``clip.times``."""
    return frame_activity(clip.frames, prev=prev_frame)


def color_histogram(image: np.ndarray, *, thumb_width: int = THUMB_WIDTH) -> np.ndarray:
    """Normalised HSV histogram (16×4×4) of an RGB frame's thumbnail, float32."""
    t = _thumb(image, thumb_width)
    if t.ndim == 2:
        t = cv2.cvtColor(t, cv2.COLOR_GRAY2RGB)
    hsv = cv2.cvtColor(t, cv2.COLOR_RGB2HSV)
    h = cv2.calcHist([hsv], [0, 1, 2], None, list(HIST_BINS), [0, 180, 0, 256, 0, 256]).ravel()
    s = float(h.sum())
    return (h / s if s > 0 else h).astype(np.float32)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance of two normalised histograms: 0 same … 1 disjoint."""
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


@dataclass
class _Pair:
    t: float  # time of the later frame (the first frame of a new shot, if this is a cut)
    d: float  # histogram distance to the frame before
    d_before: float  # distance of the adjacent pair before (0 after a hole or at the start)


class CutDetector:
    """Streaming hard-cut detector: :meth:`push` frames in time order, collect cut times.

    ``threshold``: minimum Bhattacharyya distance of a cut (cuts in the test footage: ≥ 0.45; the
    largest non-cut change seen, a car driving into a top-down view at 6 fps: 0.34). ``ratio``: the
    distance must also be this many times the neighbourhood's mean (+ ``eps``), and ``peak_ratio`` times
    the larger adjacent distance (+ ``eps``; cuts ≥ 1.7, fast motion ≤ 1.3 at ≥ 5 fps). ``window``: previous
    pairs in the neighbourhood; ``lookahead``: following pairs (the decision delay). ``max_gap_s``:
    frames further apart are not compared. ``min_shot_s``: a second cut this soon after one is ignored.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.4,
        ratio: float = 2.0,
        peak_ratio: float = 1.5,
        eps: float = 0.02,
        window: int = 10,
        lookahead: int = 2,
        max_gap_s: float = 0.2,
        min_shot_s: float = 0.3,
        thumb_width: int = THUMB_WIDTH,
    ):
        if not (0 < threshold <= 1) or ratio < 1 or peak_ratio < 1 or window < 1 or lookahead < 1 or max_gap_s <= 0:
            raise ValueError(
                "CutDetector: need 0 < threshold ≤ 1, ratio ≥ 1, peak_ratio ≥ 1, window ≥ 1, "
                "lookahead ≥ 1, max_gap_s > 0"
            )
        self.threshold, self.ratio, self.peak_ratio, self.eps = threshold, ratio, peak_ratio, eps
        self.window, self.lookahead = window, lookahead
        self.max_gap_s, self.min_shot_s = max_gap_s, min_shot_s
        self.thumb_width = thumb_width
        self._prev_hist: np.ndarray | None = None
        self._prev_t: float | None = None
        self._past: deque[float] = deque(maxlen=window)  # distances of judged, decided, non-cut pairs
        self._pending: deque[_Pair] = deque()  # pairs waiting for their lookahead
        self._last_d = 0.0  # distance of the latest judged pair
        self._last_cut: float | None = None
        self.cuts: list[float] = []
        self.unjudged = 0  # pairs skipped because the frames were too far apart

    def push(self, t: float, image: np.ndarray) -> list[float]:
        """Add one frame (RGB uint8, any size; a thumbnail is enough). Returns cuts decided by it."""
        hist = color_histogram(image, thumb_width=self.thumb_width)
        out: list[float] = []
        if self._prev_hist is not None and self._prev_t is not None:
            if t <= self._prev_t:
                raise ValueError(f"frame times must increase: {t} after {self._prev_t}")
            gap = t - self._prev_t
            if gap > self.max_gap_s + 1e-3:
                # A hole: decide what is pending with what we have, and start a fresh neighbourhood.
                self.unjudged += 1
                out.extend(self._decide(final=True))
                self._past.clear()
                self._last_d = 0.0
            else:
                d = histogram_distance(self._prev_hist, hist)
                self._pending.append(_Pair(float(t), d, self._last_d))
                self._last_d = d
                out.extend(self._decide(final=False))
        self._prev_hist, self._prev_t = hist, t
        return out

    def flush(self) -> list[float]:
        """End of stream: decide the pairs still waiting for lookahead."""
        return self._decide(final=True)

    def _decide(self, *, final: bool) -> list[float]:
        out: list[float] = []
        while self._pending and (final or len(self._pending) > self.lookahead):
            pair = self._pending.popleft()
            ahead = [p.d for p in list(self._pending)[: self.lookahead]]
            neigh = list(self._past) + ahead
            base = float(np.mean(neigh)) if neigh else 0.0
            adjacent = max(pair.d_before, ahead[0] if ahead else 0.0)
            is_cut = (
                pair.d >= self.threshold
                and pair.d >= self.ratio * (base + self.eps)
                and pair.d >= self.peak_ratio * (adjacent + self.eps)
                and (self._last_cut is None or pair.t - self._last_cut >= self.min_shot_s)
            )
            if is_cut:
                self._last_cut = pair.t
                self.cuts.append(pair.t)
                out.append(pair.t)
                self._past.clear()  # a new shot: its own neighbourhood
            else:
                self._past.append(pair.d)
        return out


def scene_cuts(frames: Iterable[np.ndarray], times: Iterable[float], **kwargs) -> list[float]:
    """Cut times (first frame of each new shot) in a sequence of RGB frames with their times.

    ``kwargs`` go to :class:`CutDetector`. Frames must be at least ``max_gap_s`` (0.25 s) apart to be
    judged; see the module docstring.
    """
    det = CutDetector(**kwargs)
    for t, f in zip(times, frames):
        det.push(float(t), f)
    det.flush()
    return list(det.cuts)
