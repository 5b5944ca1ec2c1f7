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
    5. Background (float32), learned only where nothing differs from it: ``bg += α (frame − bg)`` with
       ``α = 1 − exp(−Δt / learn_s)``, Δt the actual time since the previous frame (so the rate does not depend
       on the frame rate). Under a moving thing (its mask, plus the raw difference within ~5 px of it: thin
       legs that the opening drops) the background does not learn at all: no partial absorption, so when a
       person who stood at a spot for 20 s leaves there is no "ghost" there (a running average that kept
       learning slowly under the foreground left one for many seconds, and merged visits into one).
       Specks away from any moving thing learn like the rest.
    6. Absorption: a fast running average of the frames (``still_s`` ≈ 0.75 s; uint16, 1/256 grey level)
       tells which held pixels changed lately (by more than half the foreground threshold). Held pixels are
       grouped (blobs within ~10 px of each other); a group in which no more than 2 pixels or 1 % of them
       (whichever is more) changed is *still*, and each pixel counts how long its group has stayed still
       (uint16, in 1/64 s). After ``absorb_s`` (30 s) of stillness the pixels are copied into the background
       at once (from the fast average, under the inverse of the lighting mapping). So a parked object
       becomes background after ``absorb_s`` (plus the ~2 s the fast average needs to settle), and so does
       a ghost; a person who stands or sits and moves even a little (hands, head, an edge shifting by a
       pixel) keeps the group from being still and stays foreground, however long. On the person clip the
       longest still stretch of a visitor is ~2.4 s.
    7. Ghosts: a still group along whose rim (±1 px) the background has edges that the frame lacks (the
       frame shows under half of the background's Sobel edge energy there) is where something the
       background learned has gone, not something that came; it is absorbed after ``ghost_absorb_s``
       (3 s) of stillness instead. People who pass a ghost every few seconds (its group is then not
       still) kept one for minutes where a camera started with someone in view; a real object that
       stopped shows its own outline in the frame and waits ``absorb_s``.

    The first frame (or a frame of another size) initialises the background and reports no motion
    (another size also sets ``global_change``). Known limits: something present when the background is
    (re-)initialised (the first frame, a global change) leaves a ghost where it stood once it moves away,
    until it is absorbed (``ghost_absorb_s`` once its group is still, step 7); a thing that never stops
    moving (a swaying bush, a flickering screen) next to a stopped object keeps that object from being
    absorbed.

State (:meth:`MotionModel.state`): the background (float32), the fast average and the stillness timer (both
uint16): 8 bytes a pixel, ~115 kB at 160×90 before base64. A version 1 state (background only) still loads.

Cost of one :meth:`MotionModel.push` at 160×90 on the development machine (2 cores, numpy 2.4, OpenCV 4.14),
4000 frames each, interleaved with the earlier model (the same frames) while other jobs loaded the machine
heavily (load average ~27, so medians are inflated): quiet scene min 255 µs / median 330 µs (earlier model
270 / 340); scene with a moving object min 350 µs / p25 720 µs / median 930 µs (earlier 460 / 570 / 710); the
person clip min 260 / median 830 µs (earlier 270 / 740). About half is the lighting fit (Python-level numpy
calls); the blob grouping and the stillness bookkeeping (~70 µs) run only when something moves.

:func:`motion_score` turns a :class:`MotionFrame` into a 0..1 score (≥ 0.5 exactly when the moving area in
the zone reaches ``min_area``); :func:`zone_mask` rasterises a normalised polygon for it.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import cv2
import numpy as np

from .errors import MotionError, MotionStateError

STATE_VERSION = 2
_TIMER_UNITS = 64  # the stillness timer counts 1/64 s (uint16: up to ~1024 s)
_TIMER_MAX = 65535
_RECENT_SCALE = 256  # the recent frames' average is kept as uint16 in 1/256 grey level
_STILL_FRAC = 0.01  # a group is still while no more of its pixels change than this fraction (or 2 px)
_GHOST_EDGE = 0.5  # a still group is a ghost where the frame shows less than this of the background's rim edges
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
    ``learn_s``: background time constant (s) where nothing moves (nothing is learned under moving things).
    ``absorb_s``: how long a foreground group must stay still before it becomes background (a parked object).
    ``ghost_absorb_s``: the same for a ghost (the background's outline there is not in the frame).
    ``still_s``: time constant of the fast average of recent frames that stillness is judged against. ``min_blob``: smallest moving group kept, fraction
    of the frame (0.001 ≈ 14 px at 160×90, so a 4×4 px object still counts). ``global_step``: a change of
    the lighting mapping between frames (grey levels) that counts as a global change. ``max_moving``: a
    moving fraction above this is a global change too.
    """

    def __init__(
        self,
        *,
        sensitivity: float = 0.5,
        learn_s: float = 4.0,
        absorb_s: float = 30.0,
        ghost_absorb_s: float = 3.0,
        still_s: float = 0.75,
        min_blob: float = 0.001,
        global_step: float = 10.0,
        max_moving: float = 0.6,
    ):
        self.sensitivity = _number("sensitivity", sensitivity, 0.0, 1.0)
        self.learn_s = _number("learn_s", learn_s, 0.0, 1e6, lo_open=True)
        self.absorb_s = _number("absorb_s", absorb_s, 0.0, _TIMER_MAX / _TIMER_UNITS, lo_open=True)
        self.ghost_absorb_s = _number("ghost_absorb_s", ghost_absorb_s, 0.0, _TIMER_MAX / _TIMER_UNITS, lo_open=True)
        self.still_s = _number("still_s", still_s, 0.0, 60.0, lo_open=True)
        self.min_blob = _number("min_blob", min_blob, 0.0, 1.0)
        self.global_step = _number("global_step", global_step, 0.0, 255.0, lo_open=True)
        self.max_moving = _number("max_moving", max_moving, 0.0, 1.0, lo_open=True)
        self.threshold = 4.0 + 32.0 * (1.0 - self.sensitivity)  # grey levels
        self._absorb = max(1, round(self.absorb_s * _TIMER_UNITS))  # in timer units
        self._ghost_absorb = max(1, round(min(self.ghost_absorb_s, self.absorb_s) * _TIMER_UNITS))
        self._bg: np.ndarray | None = None  # float32 (h, w), blurred grey levels
        self._recent: np.ndarray | None = None  # uint16 (h, w): fast running average (τ = still_s), 1/256 grey
        self._still: np.ndarray | None = None  # uint16 (h, w): how long a foreground pixel's blob has been still
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
        recent = self._recent.astype(np.float32) * np.float32(1 / _RECENT_SCALE)  # type: ignore[union-attr]
        still: np.ndarray = self._still  # type: ignore[assignment]
        a_bg = -math.expm1(-dt / self.learn_s)
        mask, boxes = empty, cast(tuple[MotionBox, ...], ())
        if raw.any():
            opened = cv2.morphologyEx(raw, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * u + 1,) * 2))
            closed = cv2.morphologyEx(
                opened, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * u + 1, 4 * u + 1))
            )
            mask, boxes = _blobs(closed, self.min_blob, 6 * u + 1) if closed.any() else (empty, ())
        if boxes:
            # Background: learn where nothing differs from it; never under a moving thing (its mask, and
            # the raw difference within a few pixels of it: thin legs the opening dropped): no partial
            # absorption, so no ghost where something stood. A group of held pixels (blobs within ~10 px
            # of each other) that has stayed still for absorb_s (a parked object, a ghost) is copied into
            # the background at once. Specks away from any moving thing learn as the rest does.
            near = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (10 * u + 1,) * 2))
            hold = cv2.bitwise_or(mask, cv2.bitwise_and(raw, near))
            fg = hold > 0
            bg += np.where(fg, np.float32(0.0), np.float32(a_bg)) * (f - bg)
            n, groups = cv2.connectedComponents(near, connectivity=8, ltype=cv2.CV_32S)
            stirred = (cv2.absdiff(f, recent) > 0.5 * max(self.threshold, 4.0 * noise)) & fg
            held = np.bincount(groups[fg], minlength=n)
            calm = np.bincount(groups[stirred], minlength=n) <= np.maximum(2, _STILL_FRAC * held)
            calm[0] = False
            if calm.any():
                tick = min(_TIMER_MAX, round(dt * _TIMER_UNITS))
                grown = np.minimum(still, np.uint16(_TIMER_MAX - tick)) + np.uint16(tick)  # saturating
                timer = np.where(calm[groups] & fg, grown, np.uint16(0))
                limit = np.full(n, self._absorb, np.int64)
                limit[_ghosts(f, bg, fg, groups, calm)] = self._ghost_absorb
                done = timer >= limit[groups]
                if done.any():
                    bg[done] = np.clip((recent[done] - np.float32(offset)) / np.float32(gain), 0, 255)
                    timer[done] = 0
                self._still = timer
            elif still.any():
                still[:] = 0
        else:
            bg += np.float32(a_bg) * (f - bg)
            if still.any():
                still[:] = 0
        recent += np.float32(-math.expm1(-dt / self.still_s)) * (f - recent)
        self._recent = np.rint(recent * np.float32(_RECENT_SCALE)).astype(np.uint16)
        # This frame's mapping as seen from the updated background (which moved a_bg towards the frame).
        self._gain, self._offset = 1.0 + (1.0 - a_bg) * (gain - 1.0), (1.0 - a_bg) * offset
        return _frame(t, boxes, float(np.count_nonzero(mask)) / mask.size, False, mask)

    def _reset(self, t: float, f: np.ndarray) -> None:
        self._bg, self._t, self._gain, self._offset = f.copy(), t, 1.0, 0.0
        self._recent = np.rint(f * np.float32(_RECENT_SCALE)).astype(np.uint16)
        self._still = np.zeros(f.shape, np.uint16)

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """JSON-safe snapshot (the images as base64 of their raw little-endian bytes: the background float32,
        the recent frames' average and the stillness timer uint16); :meth:`from_state` resumes from it
        bit-exactly."""
        return {
            "version": STATE_VERSION,
            "params": {
                "sensitivity": self.sensitivity,
                "learn_s": self.learn_s,
                "absorb_s": self.absorb_s,
                "ghost_absorb_s": self.ghost_absorb_s,
                "still_s": self.still_s,
                "min_blob": self.min_blob,
                "global_step": self.global_step,
                "max_moving": self.max_moving,
            },
            "t": self._t,
            "gain": self._gain,
            "offset": self._offset,
            "background": _encode(self._bg, "float32"),
            "recent": _encode(self._recent, "uint16"),
            "still": _encode(self._still, "uint16"),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MotionModel:
        """Rebuild a model from :meth:`state` (after a JSON round-trip or not). A version 1 state (the
        earlier model: a background only) is taken too: its background, with the recent frames' average
        started from it and no stillness."""
        if not isinstance(state, dict):
            raise MotionStateError(f"motion state must be a dict, got {type(state).__name__}")
        version = state.get("version")
        if version not in (1, STATE_VERSION) or isinstance(version, bool):
            raise MotionStateError(f"motion state version {version!r} is not {STATE_VERSION}")
        try:
            params = state["params"]
            if not isinstance(params, dict):
                raise MotionStateError(f"motion state 'params' must be a dict, got {params!r}")
            if version == 1:
                params = {k: v for k, v in params.items() if k != "fg_learn_s"}
            self = cls(**params)
            t, gain, offset, raw = state["t"], state["gain"], state["offset"], state["background"]
            images = (raw, None, None) if version == 1 else (raw, state["recent"], state["still"])
        except MotionStateError:
            raise
        except (KeyError, TypeError, MotionError) as exc:
            raise MotionStateError(f"malformed motion state: {exc}") from exc
        for name, v in (("gain", gain), ("offset", offset)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise MotionStateError(f"motion state {name!r} must be a finite number, got {v!r}")
        if all(x is None for x in images):
            if t is not None:
                raise MotionStateError("motion state has a time but no background")
            return self
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise MotionStateError(f"motion state 't' must be a finite number, got {t!r}")
        bg = _decode(images[0], "background", "float32", None)
        if version == 1:
            recent = np.rint(bg * np.float32(_RECENT_SCALE)).astype(np.uint16)
            still = np.zeros(bg.shape, np.uint16)
        else:
            recent = _decode(images[1], "recent", "uint16", bg.shape)
            still = _decode(images[2], "still", "uint16", bg.shape)
        if not np.all(np.isfinite(bg)) or bg.min() < 0 or bg.max() > 255:
            raise MotionStateError("motion state background must hold grey levels in [0, 255]")
        if recent.max() > 255 * _RECENT_SCALE:
            raise MotionStateError(f"motion state recent must hold grey levels in [0, 255] (× {_RECENT_SCALE})")
        self._bg, self._recent, self._still = bg, recent, still
        self._t, self._gain, self._offset = float(t), float(gain), float(offset)
        return self


def _encode(img: np.ndarray | None, dtype: str) -> dict[str, Any] | None:
    if img is None:
        return None
    data = np.ascontiguousarray(img, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return {"dtype": dtype, "shape": list(img.shape), "data": base64.b64encode(data).decode("ascii")}


def _decode(raw: Any, name: str, dtype: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """An image of :func:`_encode`, checked: its dtype, its shape (that of the background when given)."""
    try:
        if raw is None:
            raise MotionStateError(f"motion state {name} is missing")
        if raw["dtype"] != dtype:
            raise MotionStateError(f"motion state {name} dtype must be {dtype!r}, got {raw['dtype']!r}")
        got = tuple(raw["shape"])
        if len(got) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 8 for n in got):
            raise MotionStateError(f"motion state {name} shape must be [h ≥ 8, w ≥ 8], got {raw['shape']!r}")
        if shape is not None and got != shape:
            raise MotionStateError(f"motion state {name} shape {list(got)} is not the background's {list(shape)}")
        data = base64.b64decode(raw["data"], validate=True)
    except MotionStateError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise MotionStateError(f"malformed motion state {name}: {exc}") from exc
    dt = np.dtype(dtype).newbyteorder("<")
    if len(data) != dt.itemsize * got[0] * got[1]:
        raise MotionStateError(f"motion state {name} holds {len(data)} bytes, not {dt.itemsize * got[0] * got[1]}")
    return np.frombuffer(data, dtype=dt).astype(dtype).reshape(got)


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


def _ghosts(f: np.ndarray, bg: np.ndarray, fg: np.ndarray, groups: np.ndarray, calm: np.ndarray) -> np.ndarray:
    """Per group (``groups`` labels, ``calm`` those that are still), whether it is a *ghost*: along the rim
    of its held pixels the background has edges that the frame lacks. What the background learned
    there has gone (it stood there when the background was learned and left); a real object that stopped
    shows its own outline in the frame instead."""
    held = fg.astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    rim = (cv2.dilate(held, k) > 0) & (cv2.erode(held, k) == 0)  # a band ±1 px around the held region
    grown = cv2.dilate(groups.astype(np.float32), k).astype(np.int64)  # rim pixels outside take their group
    on = rim & calm[grown]
    if not on.any():
        return np.zeros(len(calm), bool)

    def edges(img: np.ndarray) -> np.ndarray:
        return np.abs(cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3))

    ids = grown[on]
    in_frame = np.bincount(ids, weights=edges(f)[on], minlength=len(calm))
    in_bg = np.bincount(ids, weights=edges(bg)[on], minlength=len(calm))
    return calm & (in_bg > 0) & (in_frame < _GHOST_EDGE * in_bg)


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
