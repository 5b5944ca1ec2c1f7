"""Per stream, between the sampler and the models: motion events, and where and when the detector looks.

:class:`MotionGate` runs the stream's background model(s) (:class:`~.motion.MotionModel`, one per
``sensitivity`` the events use) over the grey thumbnails the sampler collects at
``detection.motion_fps`` (``clip.meta["thumbs"]``), and for each clip gives (:class:`GateResult`):

* the scores of every ``backend: motion`` event at the thumbnails' own times (8 per second by
  default), so a motion segment starts and ends within a thumbnail interval of the movement, not on
  the 0.5–2 fps sampling grid; and the times of its global changes (a cut, the light), where the
  worker ends its segment as at a scene cut (the cut detector's verdict comes later than the
  thumbnails that follow it);
* ``detect``: which of the clip's sampled frames the detector must see. With ``detection.gate`` a frame
  is skipped only when nothing moved in the half second before it, no object event of the stream is
  open or being built (an object that stopped moving is still looked at), and it is not the first
  sampled frame of a ``full_check_s`` slot of stream time (objects that arrived unseen, or stand still
  from the start);
* ``regions``: per sampled frame, the boxes around what moved in that half second (fractions of the
  frame); the detector also looks at crops around them at the frame's own resolution.
* ``hold`` (``detection.hold_s``, with the gate): a sampled frame whose moving things are the same as
  at the sampled frame before it (each blob meets one of the other's, grown by half its size, and of
  a like area; nothing appeared, vanished or cut in between), that frame being one the detector sees
  or one holding it in turn, may reuse the detections of the frame the detector saw, at most
  ``hold_s`` earlier (any time earlier where nothing moves at any of them). The chain follows a
  walking person from sampled frame to sampled frame, where comparing with the looked-at frame
  itself lost them after a step or two. The detector backend checks the rest: it reuses them only where its
  confident boxes at that frame cover every blob (what moved was an object it saw), and otherwise
  looks at the frame itself. So a walking person is looked at when they appear, stop or leave, and
  every ``hold_s`` or so, not at every sampled frame. In a file the first frame of a clip is always
  looked at (a clip needs nothing from another clip's detections, so a resumed file is exact). A live
  stream's short decision windows would then look at least once a window; there :meth:`judge` may be
  given the ``prior``: the time of the last frame of an earlier clip the detector looked at and
  explained (its confident boxes covered every blob), with no change since, and the blobs of the last
  frame of the chain that holds it (that frame itself, or the last sampled frame before this clip). A
  frame may hold it (``hold`` = -1) by the same rules; the worker copies that frame's scores and boxes.

Everything is a function of the thumbnails and of the state committed with the previous clip
(:meth:`state`: the background images, the last thumbnail time, the last half second of motion
boxes, the last full-check slot), so a worker resumed from its watermark continues exactly like an
uninterrupted one: thumbnails at or before the saved time (the decoder's pre-roll) are skipped.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import DetectionConfig
from .errors import MotionError
from .events import EventSpec, EventsSpec
from .motion import MotionBox, MotionModel, motion_score, zone_mask

Box4 = tuple[float, float, float, float]  # a normalised box (x0, y0, x1, y1)

__all__ = ["GateResult", "MotionGate", "Observation"]

REGION_WINDOW_S = 0.5  # a sampled frame sees the motion of the thumbnails this far back
STATE_VERSION = 1
DEFAULT_SENSITIVITY = 0.5


@dataclass
class Observation:
    """What one clip's thumbnails showed (:meth:`MotionGate.observe`), before the detector's plan."""

    times: np.ndarray  # thumbnail times processed for this clip (stream s)
    scores: dict[str, np.ndarray]  # motion event → score per thumbnail time
    breaks: dict[str, list[float]]  # motion event → its global changes (stream s)
    boxes: dict[str, np.ndarray]  # motion event → (N, 4) box around what moved
    frame_times: list[float]  # the clip's sampled frames
    near: list[bool]  # per sampled frame: something moved in the half second before it
    regions: list[list[tuple[float, float, float, float]]]  # per sampled frame: small moving boxes (crops)
    blobs: list[list[tuple[float, float, float, float]]]  # per sampled frame: what moved at it
    changes: list[float]  # scene cuts and global changes (no detections are reused across them)
    state: dict[str, Any]  # the models' state after this clip ({} without a snapshot)


@dataclass
class GateResult:
    """What :meth:`MotionGate.process` found for one clip."""

    times: np.ndarray  # thumbnail times processed for this clip (stream s)
    scores: dict[str, np.ndarray]  # motion event → score per thumbnail time
    detect: np.ndarray  # bool per sampled frame of the clip: the detector looks at it
    regions: list[list[tuple[float, float, float, float]]] = field(default_factory=list)  # per sampled frame
    breaks: dict[str, list[float]] = field(default_factory=dict)  # motion event → its global changes (stream s)
    boxes: dict[str, np.ndarray] = field(default_factory=dict)  # motion event → (N, 4) box around what moved
    hold: list[int | None] = field(default_factory=list)  # per sampled frame: the frame whose detections it may reuse
    blobs: list[list[tuple[float, float, float, float]]] = field(default_factory=list)  # per frame: what moved

    @property
    def detected_frames(self) -> int:
        """The frames the detector sees (a held frame only where the backend must look after all)."""
        return int(np.count_nonzero(self.detect))


class MotionGate:
    """The motion stage of one stream (see the module docstring)."""

    def __init__(self, events: EventsSpec, config: DetectionConfig, state: dict[str, Any] | None = None):
        self.config = config
        self.motion_events: list[EventSpec] = events.motion_events
        self.gating = bool(config.gate and events.detector_events)
        sens = sorted({float(e.motion.sensitivity) for e in self.motion_events if e.motion is not None})
        self._gate_sens = DEFAULT_SENSITIVITY if DEFAULT_SENSITIVITY in sens or not sens else sens[0]
        if self.gating or (config.regions and events.detector_events):  # the detector's regions need a model
            sens = sorted(set(sens) | {self._gate_sens})
        self.models: dict[float, MotionModel] = {s: MotionModel(sensitivity=s) for s in sens}
        self.last_t: float | None = None
        self.recent: list[tuple[float, list[list[float]]]] = []  # (t, boxes) of the last REGION_WINDOW_S
        self.check_slot: int | None = None
        self._zones: dict[tuple, np.ndarray | None] = {}
        self._judged: dict[str, Any] | None = None
        if state:
            self._restore(state)

    @property
    def active(self) -> bool:
        """Whether this stream needs thumbnails at all."""
        return bool(self.models)

    # -- state --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The state after the last clip :meth:`judge` saw (the watermark's; :meth:`observe` may already
        be a clip further), or, before any, the state it was made with."""
        if self._judged is not None:
            return self._judged
        return {**self._seen_state(), "check_slot": self.check_slot}

    def _seen_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "models": {repr(s): m.state() for s, m in self.models.items()},
            "last_t": self.last_t,
            "recent": [[t, boxes] for t, boxes in self.recent],
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise MotionError(
                f"motion gate state version {state.get('version') if isinstance(state, dict) else state!r}"
            )
        saved = state.get("models") or {}
        for s in list(self.models):
            if repr(s) in saved:
                self.models[s] = MotionModel.from_state(saved[repr(s)])
        self.last_t = None if state.get("last_t") is None else float(state["last_t"])
        self.recent = [(float(t), [list(map(float, b)) for b in boxes]) for t, boxes in state.get("recent") or []]
        self.check_slot = None if state.get("check_slot") is None else int(state["check_slot"])

    def reset(self) -> None:
        """A live stream came back after an outage: learn the background afresh."""
        self.models = {s: MotionModel(sensitivity=s) for s in self.models}
        self.recent = []
        self._judged = None

    # -- per clip ------------------------------------------------------------------------------

    def _zone(self, ev: EventSpec, width: int, height: int) -> np.ndarray | None:
        poly = ev.motion.polygon if ev.motion is not None else None
        key = (ev.event, width, height)
        if key not in self._zones:
            self._zones[key] = zone_mask([tuple(p) for p in poly], width, height) if poly else None
        return self._zones[key]

    def process(
        self,
        times: np.ndarray,
        thumbs: np.ndarray,
        frame_times: Sequence[float],
        *,
        tracking: bool,
        cuts: Sequence[float] = (),
    ) -> GateResult:
        """:meth:`observe` then :meth:`judge`, for one clip."""
        return self.judge(self.observe(times, thumbs, frame_times, cuts=cuts), tracking=tracking)

    def observe(
        self,
        times: np.ndarray,
        thumbs: np.ndarray,
        frame_times: Sequence[float],
        *,
        cuts: Sequence[float] = (),
        snapshot: bool = True,
    ) -> Observation:
        """Run the thumbnails (``times`` (N,), ``thumbs`` (N, h, w) uint8, in time order) through the
        models and say what moved around the clip's sampled frames (``frame_times``). ``cuts``: the
        clip's scene cuts (stream s; no frame reuses detections from across one). The heavy half, and
        independent of the detector: a worker runs it in its reading thread, a clip ahead of
        :meth:`judge` (the observation carries the models' state after it, for the watermark;
        ``snapshot=False``: not, where no watermark keeps it — a live stream's)."""
        keep = [i for i, t in enumerate(times) if self.last_t is None or t > self.last_t]
        out_t = np.array([float(times[i]) for i in keep], dtype=np.float64)
        scores = {ev.event: np.zeros(len(keep), dtype=np.float64) for ev in self.motion_events}
        breaks: dict[str, list[float]] = {ev.event: [] for ev in self.motion_events}
        where = {ev.event: np.full((len(keep), 4), np.nan, dtype=np.float32) for ev in self.motion_events}
        gate_model = self.models.get(self._gate_sens)
        floor = self.config.region_min_area
        changes = [float(c) for c in cuts]  # cuts and global changes: no detections are reused across them
        # what moved at each thumbnail, from the end of the last clip on (for the frames' blobs)
        seen: list[tuple[float, list[list[float]]]] = list(self.recent[-1:])
        for k, i in enumerate(keep):
            t, img = float(times[i]), thumbs[i]
            frames = {s: m.push(t, img) for s, m in self.models.items()}
            for ev in self.motion_events:
                assert ev.motion is not None
                fr = frames[float(ev.motion.sensitivity)]
                h, w = fr.mask.shape[:2]
                scores[ev.event][k] = motion_score(fr, min_area=ev.motion.min_area, zone=self._zone(ev, w, h))
                if fr.global_change:  # a new shot (or the light): what moved before is another scene
                    breaks[ev.event].append(t)
                elif fr.boxes:  # drawn on the segment's picture
                    b = fr.boxes
                    where[ev.event][k] = (
                        min(x.x0 for x in b),
                        min(x.y0 for x in b),
                        max(x.x1 for x in b),
                        max(x.y1 for x in b),
                    )
            if gate_model is not None:
                fr = frames[self._gate_sens]
                boxes = [] if fr.global_change else [_box(b) for b in fr.boxes if b.area >= floor]
                self.recent.append((t, boxes))
                seen.append((t, boxes))
                if fr.global_change:
                    changes.append(t)
            self.last_t = t
        near: list[bool] = []
        blobs: list[list[tuple[float, float, float, float]]] = []
        regions: list[list[tuple[float, float, float, float]]] = []
        seen_t = [t for t, _ in seen]
        for ft in frame_times:
            k = bisect.bisect_right(seen_t, float(ft) + 1e-9) - 1
            blobs.append([tuple(b) for b in seen[k][1]] if k >= 0 else [])  # type: ignore[misc]
            moved = [tuple(b) for t, boxes in self.recent if ft - REGION_WINDOW_S <= t <= ft for b in boxes]
            near.append(bool(moved))
            if self.config.regions:  # crops only for what the whole-frame pass sees too small
                rmax = self.config.region_max
                small = {b for b in moved if b[2] - b[0] <= rmax and b[3] - b[1] <= rmax}
                regions.append(sorted(small))  # type: ignore[arg-type]
            else:
                regions.append([])
        if len(frame_times):
            horizon = float(max(frame_times[-1], self.last_t or -math.inf)) - REGION_WINDOW_S
            self.recent = [(t, b) for t, b in self.recent if t >= horizon]
        return Observation(
            times=out_t,
            scores=scores,
            breaks=breaks,
            boxes=where,
            frame_times=[float(t) for t in frame_times],
            near=near,
            regions=regions,
            blobs=blobs,
            changes=sorted(changes),
            state=self._seen_state() if snapshot else {},
        )

    def judge(self, obs: Observation, *, tracking: bool, prior: tuple[float, list[Box4]] | None = None) -> GateResult:
        """Which of the clip's sampled frames the detector sees, and which may reuse an earlier frame's
        detections (see the module docstring). ``tracking``: an object event of the stream is open or
        being built (the detector keeps looking). ``prior``: (time, blobs) of an earlier clip's frame
        the detector looked at and explained, nothing changed since (live streams), with the blobs of
        the last frame that held it (the chain's end): a frame holding it gets ``hold`` -1. Cheap; run
        in order, clip after clip."""
        ft = obs.frame_times
        detect = np.ones(len(ft), dtype=bool)
        hold: list[int | None] = [None] * len(ft)
        times, blobs = list(ft), list(obs.blobs)
        if prior is not None:  # the prior frame as index -1: the last of these lists
            times.append(float(prior[0]))
            blobs.append(list(prior[1]))
        ref: int | None = -1 if prior is not None else None  # the last frame the detector sees
        for j, t in enumerate(ft):
            slot = math.floor(t / self.config.full_check_s + 1e-9)
            check = self.check_slot is None or slot > self.check_slot
            if check:
                self.check_slot = slot
            if not self.gating:
                continue
            # the previous frame: it is ref itself or held ref, so each link of the chain from ref to here
            # is the same moving things a sampling interval later
            if (
                ref is not None
                and not check
                and self._may_hold(ref, ref if j == 0 else j - 1, j, times, blobs, obs.changes)
            ):
                hold[j], detect[j] = ref, False
            elif ref is not None and ref >= 0:  # what moves changed since the detector last looked: look again
                detect[j] = True
            else:
                detect[j] = obs.near[j] or tracking or check
                ref = None  # the prior's picture has changed unseen: no later frame may reuse it
            if detect[j]:
                ref = j
        self._judged = {**obs.state, "check_slot": self.check_slot}
        return GateResult(obs.times, obs.scores, detect, obs.regions, obs.breaks, obs.boxes, hold, obs.blobs)

    def _may_hold(
        self,
        i: int,
        k: int,
        j: int,
        frame_times: Sequence[float],
        blobs: list[list[Box4]],
        changes: list[float],
    ) -> bool:
        """Whether frame ``j`` may reuse the detections of frame ``i``, the frame before it (``k``) being
        ``i`` or holding them (see the module docstring)."""
        ti, tj = float(frame_times[i]), float(frame_times[j])
        if self.config.hold_s <= 0 or any(ti < c <= tj for c in changes):
            return False
        if not blobs[k] and not blobs[j]:  # nothing moves: the picture is the one the detector saw
            return True
        return tj - ti <= self.config.hold_s + 1e-9 and _same_things(blobs[k], blobs[j])


def _grown(b: Sequence[float]) -> tuple[float, float, float, float]:
    w, h = (b[2] - b[0]) / 2.0, (b[3] - b[1]) / 2.0
    return (b[0] - w, b[1] - h, b[2] + w, b[3] + h)


def _meets(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _area(b: Sequence[float]) -> float:
    return max(b[2] - b[0], 1e-6) * max(b[3] - b[1], 1e-6)


def _like(x: Sequence[float], y: Sequence[float]) -> bool:
    """``x`` is ``y`` a little later: it meets ``y`` grown by half its size, and neither is more than
    twice the other's area (something entering, leaving or joining changes its blob's size)."""
    return _meets(x, _grown(y)) and 0.5 <= _area(x) / _area(y) <= 2.0


def _same_things(a: list, b: list) -> bool:
    """Two frames' blobs are the same moving things (:func:`_like`), both ways. No blobs on either
    side: nothing moves."""
    return all(any(_like(x, y) for y in a) for x in b) and all(any(_like(y, x) for x in b) for y in a)


def _box(b: MotionBox) -> list[float]:
    return [round(float(b.x0), 6), round(float(b.y0), 6), round(float(b.x1), 6), round(float(b.y1), 6)]
