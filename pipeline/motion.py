"""Motion detection on small grey thumbnails, with a state that can be saved after any frame.

Input
    Grey thumbnails (uint8, shape (h, w), tuned for ~160 px wide) of one stream in time order, with their
    stream times in seconds; the worker feeds ~8 fps (the first frame of each 1/8 s slot).

Model (deterministic, so a restored model continues bit-exactly: no MOG2, whose state cannot be exported)
    1. The frame is blurred a little (Gaussian, σ ≈ 1 px) and kept as float32.
    2. Lighting compensation: a robust linear fit ``frame ≈ gain × background + offset`` (a median offset,
       then least squares twice, each on the previous fit's inliers; saturated pixels left out; offset only
       where the background is too flat for a gain) predicts the background under the frame's lighting, so
       exposure drift and gradual light changes are not motion. Moving objects are outliers of the fit as
       long as they cover less than about half of the picture.
    3. A *global change*: the fitted mapping moved by more than ``global_step`` grey levels since the
       previous frame (a brightness step, an exposure jump, a light switched on), or more than
       ``max_moving`` of the picture differs even after compensation (the camera moved; an object covering
       more than about half of the picture at once reads as one too). Such a frame
       reports no motion and the background is re-learned at once (it becomes this frame).
    4. Per pixel, ``|frame − predicted background|`` above a threshold is foreground. The threshold is
       ``max(4 + 32 × (1 − sensitivity), 4 × noise)`` grey levels (20 at the default sensitivity 0.5; the
       noise is the frame's robust σ of that difference), then morphological open (drops specks) and
       close (fills holes). Connected blobs within ~3 px of each other form one box; groups smaller than
       ``min_blob`` (fraction of the frame) are dropped.
    5. Running-average background (float32): ``bg += α (frame − bg)`` with ``α = 1 − exp(−Δt / τ)``, Δt the
       actual time since the previous frame (so the rate does not depend on the frame rate). τ is
       ``learn_s`` where nothing moves and ``fg_learn_s`` (much longer) under the foreground mask: a person
       who stops stays foreground for tens of seconds, a parked object fades into the background after
       about ``fg_learn_s × ln(contrast / threshold)`` (≈ 1 min for a contrast of 50 grey levels).

    The first frame (or a frame of another size) initialises the background and reports no motion
    (another size also sets ``global_change``). Known limit: something present when the background is
    (re-)initialised leaves a "ghost" where it stood once it moves away, until the slow foreground
    learning absorbs it.

Cost of one :meth:`MotionModel.push` at 160×90 on the development machine (2 cores, numpy 2.4, OpenCV 4.14),
4000 frames each, measured while other jobs loaded it (load average ~8): quiet scene min 260 µs / median
410 µs; scene with a moving object min 270 µs / median 590 µs (≈ 0.5 % of a core per stream at 8 fps). About
half is the lighting fit (Python-level numpy calls), the blob grouping runs only when something moves.

:func:`motion_score` turns a :class:`MotionFrame` into a 0..1 score (≥ 0.5 exactly when the moving area in
the zone reaches ``min_area``); :func:`zone_mask` rasterises a normalised polygon for it.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from .errors import MotionError, MotionStateError

STATE_VERSION = 1
_FIT_MIN_STD = 8.0  # background std (grey levels) below which only an offset is fitted
_FIT_STRIDE = 3  # the lighting fit uses every 3rd pixel of every 3rd row (~1600 at 160×90)


@dataclass(frozen=True, slots=True)
class MotionBox:
    """A moving region: its bounds as fractions of the frame's width (x) and height (y), 0 = left/top,
    and ``area``, the fraction of the whole frame covered by moving pixels inside it."""

    x0: float
    y0: float
    x1: float
    y1: float
    area: float

    def __post_init__(self) -> None:
        vals = (self.x0, self.y0, self.x1, self.y1, self.area)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in vals):
            raise MotionError(f"MotionBox values must be fractions in [0, 1], got {vals}")
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise MotionError(f"MotionBox needs x0 < x1 and y0 < y1, got {vals[:4]}")


@dataclass(frozen=True, eq=False)
class MotionFrame:
    """What moved in one frame. ``t``: stream seconds; ``boxes``: largest area first; ``moving``: fraction of
    the frame's pixels that move; ``global_change``: the picture changed as a whole (brightness step,
    exposure, lights, camera moved: not motion, nothing else reported); ``mask``: uint8 0/255 foreground at
    the thumbnail's size (read-only)."""

    t: float
    boxes: tuple[MotionBox, ...]
    moving: float
    global_change: bool
    mask: np.ndarray

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MotionFrame):
            return NotImplemented
        return (
            self.t == other.t
            and self.boxes == other.boxes
            and self.moving == other.moving
            and self.global_change == other.global_change
            and self.mask.shape == other.mask.shape
            and bool(np.array_equal(self.mask, other.mask))
        )

    __hash__ = None  # type: ignore[assignment]


def _number(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MotionError(f"{name} must be a finite number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo):
        raise MotionError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")
    return float(value)


class MotionModel:
    """Streaming motion detector: :meth:`push` grey thumbnails in time order, get a :class:`MotionFrame` each.

    ``sensitivity`` 0..1: 0 only strong changes (threshold 36 grey levels) … 1 faint ones (4 levels).
    ``learn_s``: background time constant (s) where nothing moves. ``fg_learn_s``: the same under moving
    pixels (how long a stopped object stays foreground). ``min_blob``: smallest moving group kept, fraction
    of the frame (0.001 ≈ 14 px at 160×90, so a 4×4 px object still counts). ``global_step``: a change of
    the lighting mapping between frames (grey levels) that counts as a global change. ``max_moving``: a
    moving fraction above this is a global change too.
    """

    def __init__(
        self,
        *,
        sensitivity: float = 0.5,
        learn_s: float = 4.0,
        fg_learn_s: float = 60.0,
        min_blob: float = 0.001,
        global_step: float = 10.0,
        max_moving: float = 0.6,
    ):
        self.sensitivity = _number("sensitivity", sensitivity, 0.0, 1.0)
        self.learn_s = _number("learn_s", learn_s, 0.0, 1e6, lo_open=True)
        self.fg_learn_s = _number("fg_learn_s", fg_learn_s, 0.0, 1e9, lo_open=True)
        self.min_blob = _number("min_blob", min_blob, 0.0, 1.0)
        self.global_step = _number("global_step", global_step, 0.0, 255.0, lo_open=True)
        self.max_moving = _number("max_moving", max_moving, 0.0, 1.0, lo_open=True)
        self.threshold = 4.0 + 32.0 * (1.0 - self.sensitivity)  # grey levels
        self._bg: np.ndarray | None = None  # float32 (h, w), blurred grey levels
        self._t: float | None = None
        self._gain, self._offset = 1.0, 0.0  # the previous frame's lighting mapping, against the current bg

    # ------------------------------------------------------------------ frames

    def push(self, t: float, gray: np.ndarray) -> MotionFrame:
        """Add the frame at stream time ``t`` (seconds; never less than the previous one) and say what moves."""
        if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)) or not math.isfinite(t):
            raise MotionError(f"frame time must be a finite number of seconds, got {t!r}")
        t = float(t)
        if self._t is not None and t < self._t:
            raise MotionError(f"frame times must not go backwards: {t} s after {self._t} s")
        if not isinstance(gray, np.ndarray):
            raise MotionError(f"frame must be a numpy array, got {type(gray).__name__}")
        if gray.dtype != np.uint8:
            raise MotionError(f"frame must be uint8 (grey levels 0..255), got dtype {gray.dtype}")
        if gray.ndim != 2:
            raise MotionError(f"frame must be 2-D (h, w) grey, got shape {gray.shape}")
        if min(gray.shape) < 8:
            raise MotionError(f"frame must be at least 8×8 pixels, got shape {gray.shape}")
        h, w = gray.shape
        u = max(1, round(w / 160))  # kernels grow with the thumbnail
        f = cv2.GaussianBlur(np.ascontiguousarray(gray), (4 * u + 1, 4 * u + 1), u).astype(np.float32)
        empty = np.zeros((h, w), np.uint8)
        if self._bg is None or self._bg.shape != f.shape:
            changed = self._bg is not None
            self._reset(t, f)
            return _frame(t, (), 0.0, changed, empty)
        bg, dt = self._bg, t - self._t  # type: ignore[operator]
        self._t = t
        sub = bg[::_FIT_STRIDE, ::_FIT_STRIDE]
        gain, offset, noise = _fit_lighting(f[::_FIT_STRIDE, ::_FIT_STRIDE], sub)
        m, s = float(sub.mean()), float(sub.std())  # the change of the mapping at mean ± std of the background
        step = max(abs((gain - self._gain) * v + (offset - self._offset)) for v in (max(0.0, m - s), min(255.0, m + s)))
        if step > self.global_step:
            self._reset(t, f)
            return _frame(t, (), 0.0, True, empty)
        pred = bg if (gain, offset) == (1.0, 0.0) else np.clip(bg * np.float32(gain) + np.float32(offset), 0, 255)
        diff = cv2.absdiff(f, pred)
        raw: np.ndarray = (diff > max(self.threshold, 4.0 * noise)).astype(np.uint8)
        if float(raw.mean()) > self.max_moving:
            self._reset(t, f)
            return _frame(t, (), 0.0, True, empty)
        if raw.any():
            raw = cv2.morphologyEx(raw, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * u + 1,) * 2))
            raw = cv2.morphologyEx(
                raw, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * u + 1, 4 * u + 1))
            )
            mask, boxes = _blobs(raw, self.min_blob, 6 * u + 1)
        else:
            mask, boxes = empty, ()
        # Learn: fast where nothing moves, slow under the foreground.
        a_bg, a_fg = -math.expm1(-dt / self.learn_s), -math.expm1(-dt / self.fg_learn_s)
        alpha = np.where(mask > 0, np.float32(a_fg), np.float32(a_bg)) if boxes else np.float32(a_bg)
        bg += alpha * (f - bg)
        # This frame's mapping as seen from the updated background (which moved a_bg towards the frame).
        self._gain, self._offset = 1.0 + (1.0 - a_bg) * (gain - 1.0), (1.0 - a_bg) * offset
        return _frame(t, boxes, float(np.count_nonzero(mask)) / mask.size, False, mask)

    def _reset(self, t: float, f: np.ndarray) -> None:
        self._bg, self._t, self._gain, self._offset = f.copy(), t, 1.0, 0.0

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """JSON-safe snapshot (the background as base64 of its raw float32 bytes); :meth:`from_state`
        resumes from it bit-exactly."""
        bg = self._bg
        return {
            "version": STATE_VERSION,
            "params": {
                "sensitivity": self.sensitivity,
                "learn_s": self.learn_s,
                "fg_learn_s": self.fg_learn_s,
                "min_blob": self.min_blob,
                "global_step": self.global_step,
                "max_moving": self.max_moving,
            },
            "t": self._t,
            "gain": self._gain,
            "offset": self._offset,
            "background": None
            if bg is None
            else {
                "dtype": "float32",
                "shape": list(bg.shape),
                "data": base64.b64encode(np.ascontiguousarray(bg, dtype="<f4").tobytes()).decode("ascii"),
            },
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MotionModel:
        """Rebuild a model from :meth:`state` (after a JSON round-trip or not)."""
        if not isinstance(state, dict):
            raise MotionStateError(f"motion state must be a dict, got {type(state).__name__}")
        if state.get("version") != STATE_VERSION:
            raise MotionStateError(f"motion state version {state.get('version')!r} is not {STATE_VERSION}")
        try:
            params = state["params"]
            if not isinstance(params, dict):
                raise MotionStateError(f"motion state 'params' must be a dict, got {params!r}")
            self = cls(**params)
            t, gain, offset, raw = state["t"], state["gain"], state["offset"], state["background"]
        except MotionStateError:
            raise
        except (KeyError, TypeError, MotionError) as exc:
            raise MotionStateError(f"malformed motion state: {exc}") from exc
        for name, v in (("gain", gain), ("offset", offset)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise MotionStateError(f"motion state {name!r} must be a finite number, got {v!r}")
        if raw is None:
            if t is not None:
                raise MotionStateError("motion state has a time but no background")
            return self
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise MotionStateError(f"motion state 't' must be a finite number, got {t!r}")
        try:
            if raw["dtype"] != "float32":
                raise MotionStateError(f"motion state background dtype must be 'float32', got {raw['dtype']!r}")
            shape = tuple(raw["shape"])
            if len(shape) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 8 for n in shape):
                raise MotionStateError(f"motion state background shape must be [h ≥ 8, w ≥ 8], got {raw['shape']!r}")
            data = base64.b64decode(raw["data"], validate=True)
        except MotionStateError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise MotionStateError(f"malformed motion state background: {exc}") from exc
        if len(data) != 4 * shape[0] * shape[1]:
            raise MotionStateError(f"motion state background holds {len(data)} bytes, not {4 * shape[0] * shape[1]}")
        bg = np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(shape)
        if not np.all(np.isfinite(bg)) or bg.min() < 0 or bg.max() > 255:
            raise MotionStateError("motion state background must hold grey levels in [0, 255]")
        self._bg, self._t, self._gain, self._offset = bg, float(t), float(gain), float(offset)
        return self


def _fit_lighting(f: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Robust ``f ≈ gain·b + offset`` over unsaturated pixels: an offset (median), then least squares twice,
    each on the inliers (≤ 3 robust σ) of the fit before; and the robust σ (grey levels) of the inliers'
    residual. Pixels of moving objects (up to nearly half the picture) fall out as outliers."""
    f, b = f.ravel().astype(np.float64), b.ravel().astype(np.float64)
    ok = (f > 3) & (f < 252) & (b > 3) & (b < 252)
    if np.count_nonzero(ok) < 16:
        ok = np.ones_like(ok)
    gain, offset = 1.0, float(np.median(f[ok] - b[ok]))
    for _ in range(2):
        r = np.abs(f - (gain * b + offset))
        inl = ok & (r <= max(3.0 * 1.4826 * float(np.median(r[ok])), 3.0))
        if np.count_nonzero(inl) >= 16:
            ok = inl
        fo, bo = f[ok], b[ok]
        db = bo - bo.mean()
        var = float(np.dot(db, db)) / db.size
        if var >= _FIT_MIN_STD**2:
            gain = min(4.0, max(0.25, float(np.dot(db, fo)) / db.size / var))
            offset = float(fo.mean()) - gain * float(bo.mean())
        else:
            gain, offset = 1.0, float(np.median(fo - bo))
    return gain, offset, 1.4826 * float(np.median(np.abs(f[ok] - (gain * b[ok] + offset))))


def _blobs(raw: np.ndarray, min_blob: float, group_px: int) -> tuple[np.ndarray, tuple[MotionBox, ...]]:
    """Group foreground blobs lying within ``group_px`` of each other, drop groups under ``min_blob`` of the
    frame; the cleaned 0/255 mask and the groups' boxes, largest first."""
    h, w = raw.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats(raw, connectivity=8)
    mask = np.zeros((h, w), np.uint8)
    if n <= 1:
        return mask, ()
    if n > 2:  # several blobs: group the near ones by labelling a dilated mask
        grown = cv2.dilate(raw, cv2.getStructuringElement(cv2.MORPH_RECT, (group_px, group_px)))
        _, glabels = cv2.connectedComponents(grown, connectivity=8)
        group = np.zeros(n, np.int64)
        for i in range(1, n):  # a blob's group: the grown label of one of its pixels (in its top row)
            x, y, bw = int(stats[i, 0]), int(stats[i, 1]), int(stats[i, 2])
            group[i] = glabels[y, x + int(np.argmax(labels[y, x : x + bw] == i))]
    else:
        group = np.array([0, 1])
    groups: dict[int, list[int]] = {}
    for i in range(1, n):
        g = groups.setdefault(int(group[i]), [w, h, 0, 0, 0])
        x, y, bw, bh, area = (int(v) for v in stats[i])
        g[0], g[1], g[2], g[3], g[4] = min(g[0], x), min(g[1], y), max(g[2], x + bw), max(g[3], y + bh), g[4] + area
    keep = np.zeros(n, bool)
    boxes = []
    total = float(h * w)
    for gid, (x0, y0, x1, y1, area) in groups.items():
        if area >= min_blob * total:
            keep[1:] |= group[1:] == gid
            boxes.append(MotionBox(x0 / w, y0 / h, x1 / w, y1 / h, area / total))
    mask[keep[labels]] = 255
    boxes.sort(key=lambda b: (-b.area, b.y0, b.x0))
    return mask, tuple(boxes)


def _frame(t: float, boxes: tuple[MotionBox, ...], moving: float, changed: bool, mask: np.ndarray) -> MotionFrame:
    mask.setflags(write=False)
    return MotionFrame(t, boxes, moving, changed, mask)


def zone_mask(zone: Sequence[Sequence[float]] | None, width: int, height: int) -> np.ndarray | None:
    """A polygon of ``(x, y)`` fractions of the frame (≥ 3 points, 0..1) rasterised to ``width``×``height``
    pixels: a read-only bool array (h, w), True inside (pixel centres; edges included). None → None (the
    whole frame). Cached by its arguments."""
    if zone is None:
        return None
    try:
        pts = tuple((float(x), float(y)) for x, y in zone)
    except (TypeError, ValueError) as exc:
        raise MotionError(f"zone must be a sequence of (x, y) fractions, got {zone!r}") from exc
    if len(pts) < 3 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for p in pts for v in p):
        raise MotionError(f"zone must be ≥ 3 (x, y) points with fractions in [0, 1], got {pts}")
    for name, n in (("width", width), ("height", height)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise MotionError(f"zone {name} must be a positive integer, got {n!r}")
    return _zone_mask(pts, width, height)


@lru_cache(maxsize=256)
def _zone_mask(pts: tuple[tuple[float, float], ...], width: int, height: int) -> np.ndarray:
    shift = 4  # sub-pixel vertices (1/16 px)
    xy = np.array([[x * width - 0.5, y * height - 0.5] for x, y in pts])
    xy = np.clip(xy, 0, [width - 1, height - 1])
    img = np.zeros((height, width), np.uint8)
    cv2.fillPoly(img, [np.round(xy * (1 << shift)).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=shift)
    out = img.astype(bool)
    out.setflags(write=False)
    return out


def motion_score(frame: MotionFrame, *, min_area: float, zone: np.ndarray | None = None) -> float:
    """0..1 motion score of a frame: with ``area`` the moving pixels inside ``zone`` (a :func:`zone_mask`,
    None for the whole frame) as a fraction of ALL the frame's pixels, ``min(1, 0.5 × area / min_area)``;
    so ``score ≥ 0.5`` exactly when ``area ≥ min_area``. 0 on a global change."""
    min_area = _number("min_area", min_area, 0.0, 1.0, lo_open=True)
    if zone is not None and (not isinstance(zone, np.ndarray) or zone.shape != frame.mask.shape):
        got = zone.shape if isinstance(zone, np.ndarray) else type(zone).__name__
        raise MotionError(f"zone must be an array of the frame's shape {frame.mask.shape}, got {got}")
    if frame.global_change or frame.moving == 0.0:
        return 0.0
    if zone is None:
        area = frame.moving
    else:
        area = float(np.count_nonzero((frame.mask > 0) & (zone != 0))) / frame.mask.size
    score = min(1.0, 0.5 * area / min_area)
    # Exactly: ≥ 0.5 iff area ≥ min_area (the division may round across 0.5).
    return max(score, 0.5) if area >= min_area else min(score, math.nextafter(0.5, 0.0))
