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

Everything is a function of the thumbnails and of the state committed with the previous clip
(:meth:`state`: the background images, the last thumbnail time, the last half second of motion
boxes, the last full-check slot), so a worker resumed from its watermark continues exactly like an
uninterrupted one: thumbnails at or before the saved time (the decoder's pre-roll) are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import DetectionConfig
from .errors import MotionError
from .events import EventSpec, EventsSpec
from .motion import MotionBox, MotionModel, motion_score, zone_mask

__all__ = ["GateResult", "MotionGate"]

REGION_WINDOW_S = 0.5  # a sampled frame sees the motion of the thumbnails this far back
STATE_VERSION = 1
DEFAULT_SENSITIVITY = 0.5


@dataclass
class GateResult:
    """What :meth:`MotionGate.process` found for one clip."""

    times: np.ndarray  # thumbnail times processed for this clip (stream s)
    scores: dict[str, np.ndarray]  # motion event → score per thumbnail time
    detect: np.ndarray  # bool per sampled frame of the clip
    regions: list[list[tuple[float, float, float, float]]] = field(default_factory=list)  # per sampled frame
    breaks: dict[str, list[float]] = field(default_factory=dict)  # motion event → its global changes (stream s)
    boxes: dict[str, np.ndarray] = field(default_factory=dict)  # motion event → (N, 4) box around what moved

    @property
    def detected_frames(self) -> int:
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
        if state:
            self._restore(state)

    @property
    def active(self) -> bool:
        """Whether this stream needs thumbnails at all."""
        return bool(self.models)

    # -- state --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "models": {repr(s): m.state() for s, m in self.models.items()},
            "last_t": self.last_t,
            "recent": [[t, boxes] for t, boxes in self.recent],
            "check_slot": self.check_slot,
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

    # -- per clip ------------------------------------------------------------------------------

    def _zone(self, ev: EventSpec, width: int, height: int) -> np.ndarray | None:
        poly = ev.motion.polygon if ev.motion is not None else None
        key = (ev.event, width, height)
        if key not in self._zones:
            self._zones[key] = zone_mask([tuple(p) for p in poly], width, height) if poly else None
        return self._zones[key]

    def process(
        self, times: np.ndarray, thumbs: np.ndarray, frame_times: Sequence[float], *, tracking: bool
    ) -> GateResult:
        """Run the thumbnails (``times`` (N,), ``thumbs`` (N, h, w) uint8, in time order) through the
        models, then judge the clip's sampled frames (``frame_times``). ``tracking``: an object event of
        the stream is open or being built (the detector keeps looking)."""
        keep = [i for i, t in enumerate(times) if self.last_t is None or t > self.last_t]
        out_t = np.array([float(times[i]) for i in keep], dtype=np.float64)
        scores = {ev.event: np.zeros(len(keep), dtype=np.float64) for ev in self.motion_events}
        breaks: dict[str, list[float]] = {ev.event: [] for ev in self.motion_events}
        where = {ev.event: np.full((len(keep), 4), np.nan, dtype=np.float32) for ev in self.motion_events}
        gate_model = self.models.get(self._gate_sens)
        floor = self.config.region_min_area
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
            self.last_t = t
        detect = np.ones(len(frame_times), dtype=bool)
        regions: list[list[tuple[float, float, float, float]]] = []
        for j, ft in enumerate(frame_times):
            near = [tuple(b) for t, boxes in self.recent if ft - REGION_WINDOW_S <= t <= ft for b in boxes]
            if self.config.regions:  # crops only for what the whole-frame pass sees too small
                rmax = self.config.region_max
                small = {b for b in near if b[2] - b[0] <= rmax and b[3] - b[1] <= rmax}
                regions.append(sorted(small))  # type: ignore[arg-type]
            else:
                regions.append([])
            slot = math.floor(float(ft) / self.config.full_check_s + 1e-9)
            check = self.check_slot is None or slot > self.check_slot
            if check:
                self.check_slot = slot
            if self.gating:
                detect[j] = bool(near) or tracking or check
        if frame_times is not None and len(frame_times):
            horizon = float(max(frame_times[-1], self.last_t or -math.inf)) - REGION_WINDOW_S
            self.recent = [(t, b) for t, b in self.recent if t >= horizon]
        return GateResult(out_t, scores, detect, regions, breaks, where)


def _box(b: MotionBox) -> list[float]:
    return [round(float(b.x0), 6), round(float(b.y0), 6), round(float(b.x1), 6), round(float(b.y1), 6)]
