"""The embedded CPU default backend: YOLOv3-tiny (COCO) through OpenCV DNN, on sampled frames.

Weights: the stock darknet files, found, fetched and verified by :mod:`.weights`.

:class:`YoloDetector` runs batches of RGB frames through one ``blobFromImages`` call each. Frames are
letterboxed (aspect kept, grey padding, as darknet trains): on the reference footage that finds people
that a plain stretch to a square misses. With ``rect=True`` (default) the network input keeps the
frame's aspect (long side ``input_size``, short side rounded up to a multiple of 32), which wastes no
compute on padding. Boxes come back normalised to the original frame, after per-class NMS.

Input size (measured on the 2-core dev machine, 756×420 frames, OpenCV 4.14 CPU): 320 with ``rect``
(320×192 input) runs ≈ 35 frames per CPU-second, the stock 416×416 ≈ 19 (416×256: ≈ 21; 320×320: ≈ 21).
On one-by-one-person-detection.mp4 at 2 fps the two miss nearly the same frames (11 vs 10 of 215
frames well inside a visit at min_score 0.4, all at partial exits; none of 50 empty frames fires),
so 320/rect is the default. Use 416 (or more) for small, distant objects.

Not thread-safe: one detector per thread/actor (OpenCV nets keep per-call state).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from longwatch.pipeline.errors import ModelError
from longwatch.pipeline.events import EventSpec, EventsSpec
from longwatch.pipeline.thumbs import BoxedScores
from longwatch.pipeline.types import Clip

from .weights import DetectorWeights

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = 320
PAD_VALUE = 127


# ----------------------------------------------------------------------------------------------
# The network


@dataclass(frozen=True, slots=True)
class Detection:
    """One box: COCO class, confidence, and (x0, y0, x1, y1) as fractions of the frame's width/height."""

    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0


def _round_up(x: float, m: int) -> int:
    return max(m, int(math.ceil(x / m)) * m)


class YoloDetector:
    """YOLOv3-tiny on OpenCV DNN (CPU). ``detect`` takes RGB uint8 frames of any size.

    ``input_size``: the network input's long side (a multiple of 32; 320 default, 416 is the stock size).
    ``rect``: keep the frames' aspect in the network input (short side rounded up to 32) instead of a
    square. ``conf``: lowest class confidence kept (OpenCV's region layer already zeroes those below
    about 0.2). ``nms``: IoU threshold of per-class NMS. ``contain``: a box of the same class that
    lies this much (intersection / its own area) inside a better one is dropped too: YOLOv3-tiny's two
    heads often give one person a full-body and a nested torso box whose IoU is under ``nms`` (None: off). ``threads``: ``cv2.setNumThreads`` (process-wide;
    None leaves it alone). ``max_batch``: frames per forward pass.
    """

    def __init__(
        self,
        weights: DetectorWeights,
        *,
        input_size: int = DEFAULT_INPUT_SIZE,
        rect: bool = True,
        conf: float = 0.25,
        nms: float = 0.45,
        contain: float | None = 0.9,
        threads: int | None = None,
        max_batch: int = 16,
    ):
        if int(cv2.__version__.split(".")[0]) >= 5:
            raise ModelError(
                f"OpenCV {cv2.__version__} has no readNetFromDarknet; the CPU detector needs opencv-python-headless<5"
            )
        if int(input_size) <= 0 or int(input_size) % 32:
            raise ModelError(f"input_size must be a positive multiple of 32, got {input_size!r}")
        if not (0.0 <= conf <= 1.0 and 0.0 < nms <= 1.0):
            raise ModelError(f"conf must be in [0, 1] and nms in (0, 1], got conf={conf!r} nms={nms!r}")
        if max_batch < 1:
            raise ModelError(f"max_batch must be >= 1, got {max_batch!r}")
        self.weights = weights
        self.input_size = int(input_size)
        self.rect = bool(rect)
        self.conf = float(conf)
        self.nms = float(nms)
        self.contain = None if contain is None else float(contain)
        self.max_batch = int(max_batch)
        self.class_names = weights.class_names
        if threads is not None:
            cv2.setNumThreads(int(threads))
        try:
            self.net = cv2.dnn.readNetFromDarknet(str(weights.cfg), str(weights.weights))
        except cv2.error as exc:
            raise ModelError(
                f"OpenCV could not load YOLOv3-tiny from {weights.cfg} / {weights.weights}: {exc}"
            ) from exc
        if self.net.empty():
            raise ModelError(f"OpenCV loaded an empty network from {weights.cfg}")
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.out_names = list(self.net.getUnconnectedOutLayersNames())
        self.frames_done = 0

    def input_shape(self, width: int, height: int) -> tuple[int, int]:
        """(W, H) of the network input for frames of ``width × height``."""
        s = self.input_size
        if not self.rect:
            return s, s
        if width >= height:
            return s, min(s, _round_up(s * height / width, 32))
        return min(s, _round_up(s * width / height, 32)), s

    @staticmethod
    def _letterbox(img: np.ndarray, W: int, H: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """Fit ``img`` inside W×H keeping its aspect, centred on grey; return it and (pad_x, pad_y, new_w, new_h)."""
        h, w = img.shape[:2]
        r = min(W / w, H / h)
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        px, py = (W - nw) // 2, (H - nh) // 2
        out = np.full((H, W, 3), PAD_VALUE, np.uint8)
        interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
        out[py : py + nh, px : px + nw] = cv2.resize(img, (nw, nh), interpolation=interp)
        return out, (float(px), float(py), float(nw), float(nh))

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per image (RGB uint8 (H, W, 3)), best first. Images of different sizes are fine."""
        results: list[list[Detection]] = [[] for _ in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ModelError(
                    f"detector input {i} must be an RGB uint8 (H, W, 3) array, got "
                    f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', type(img).__name__)}"
                )
            groups.setdefault(self.input_shape(img.shape[1], img.shape[0]), []).append(i)
        for (W, H), idx in groups.items():
            for k in range(0, len(idx), self.max_batch):
                chunk = idx[k : k + self.max_batch]
                boxed, geo = [], []
                for i in chunk:
                    lb, g = self._letterbox(images[i], W, H)
                    boxed.append(lb)
                    geo.append(g)
                # RGB in, no swap: darknet weights expect RGB in [0, 1].
                blob = cv2.dnn.blobFromImages(boxed, 1.0 / 255.0, (W, H), swapRB=False, crop=False)
                self.net.setInput(blob)
                outs = self.net.forward(self.out_names)
                outs = [o if o.ndim == 3 else o[None] for o in outs]
                rows = np.concatenate(outs, axis=1)  # (B, N, 5 + classes)
                for b, i in enumerate(chunk):
                    results[i] = self._decode(rows[b], W, H, geo[b])
                self.frames_done += len(chunk)
        return results

    def _decode(self, rows: np.ndarray, W: int, H: int, geo: tuple[float, float, float, float]) -> list[Detection]:
        scores = rows[:, 5:]
        r_idx, c_idx = np.nonzero(scores >= max(self.conf, 1e-6))
        if r_idx.size == 0:
            return []
        conf = scores[r_idx, c_idx].astype(np.float64)
        px, py, nw, nh = geo
        cx, cy, bw, bh = (rows[r_idx, j].astype(np.float64) for j in range(4))
        x0 = np.clip((cx * W - bw * W / 2 - px) / nw, 0.0, 1.0)
        x1 = np.clip((cx * W + bw * W / 2 - px) / nw, 0.0, 1.0)
        y0 = np.clip((cy * H - bh * H / 2 - py) / nh, 0.0, 1.0)
        y1 = np.clip((cy * H + bh * H / 2 - py) / nh, 0.0, 1.0)
        keep = _nms_per_class(np.stack([x0, y0, x1, y1], axis=1), conf, c_idx, self.nms, self.contain)
        out = [
            Detection(
                int(c_idx[k]),
                self.class_names[int(c_idx[k])],
                float(conf[k]),
                (float(x0[k]), float(y0[k]), float(x1[k]), float(y1[k])),
            )
            for k in keep
        ]
        out.sort(key=lambda d: -d.score)
        return out


def _nms_per_class(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, contain: float | None = None
) -> list[int]:
    """Greedy NMS within each class (boxes (N, 4) x0y0x1y1); indices kept. ``contain``: also drop boxes
    whose area lies at least this much inside a kept one."""
    keep: list[int] = []
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    for c in np.unique(classes):
        idx = np.nonzero(classes == c)[0]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        while idx.size:
            i = idx[0]
            keep.append(int(i))
            if idx.size == 1:
                break
            rest = idx[1:]
            ix0 = np.maximum(boxes[i, 0], boxes[rest, 0])
            iy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
            ix1 = np.minimum(boxes[i, 2], boxes[rest, 2])
            iy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
            inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
            union = area[i] + area[rest] - inter
            ov = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
            drop = ov > iou
            if contain is not None:
                drop |= inter >= contain * np.maximum(area[rest], 1e-12)
            idx = rest[~drop]
    return keep


# ----------------------------------------------------------------------------------------------
# Events


def event_detection(ev: EventSpec, detections: Sequence[Detection]) -> Detection | None:
    """The detection that gives ``ev``'s score: the most confident box of its class passing its floor /
    min_box_area / roi (the first of equals), else None."""
    p = ev.detector
    if p is None:
        return None
    cid, floor = p.class_id, ev.score_floor
    best: Detection | None = None
    for d in detections:
        if d.class_id != cid or d.score < floor or (best is not None and d.score <= best.score) or d.score <= 0.0:
            continue
        if p.min_box_area is not None and d.area < p.min_box_area:
            continue
        if p.roi is not None:
            cx, cy = d.center
            x0, y0, x1, y1 = p.roi
            if not (x0 <= cx <= x1 and y0 <= cy <= y1):
                continue
        best = d
    return best


def event_score(ev: EventSpec, detections: Sequence[Detection]) -> float:
    """Highest confidence of ``ev``'s class passing its floor / min_box_area / roi, else 0."""
    d = event_detection(ev, detections)
    return 0.0 if d is None else d.score


class DetectorBackend:
    """Scores the detector events of an :class:`EventsSpec` on clips; a :class:`~.backend.Backend`.

    ``score(clips)`` → per clip ``{event: per-frame scores}`` aligned with ``clip.times`` (float64, 0..1), for
    the events whose backend is ``detector`` (others are left to their own backends), as a
    :class:`~longwatch.pipeline.thumbs.BoxedScores`: the dict plus ``boxes``, ``{event: (N, 4) float32}``,
    each frame's box that gave its score (x0, y0, x1, y1 as fractions of the frame; NaN: none), which the
    worker draws on the segment's thumbnail. The detector's confidence floor is set to the lowest floor
    any event needs. ``detector_kwargs`` go to
    :class:`YoloDetector` (``input_size``, ``rect``, ``threads``, ``max_batch``, ``nms``).
    """

    def __init__(
        self,
        events: EventsSpec,
        weights: DetectorWeights | None = None,
        *,
        detector: YoloDetector | None = None,
        data_dir: str | os.PathLike | None = None,
        **detector_kwargs,
    ):
        self.events = [e for e in events.events if e.backend == "detector"]
        floors = [e.score_floor for e in self.events]
        if detector is None:
            if weights is None:
                weights = DetectorWeights.locate(data_dir)
            conf = detector_kwargs.pop("conf", None)
            if conf is None:
                conf = min(floors) if floors else 0.25
            elif floors:
                conf = min(conf, min(floors))
            detector = YoloDetector(weights, conf=conf, **detector_kwargs)
        elif floors and detector.conf > min(floors) + 1e-9:
            log.warning(
                "detector conf %.2f is above the lowest event floor %.2f; weaker boxes are lost",
                detector.conf,
                min(floors),
            )
        self.detector = detector

    @property
    def event_names(self) -> list[str]:
        return [e.event for e in self.events]

    def scores_from_detections(self, detections: Sequence[Sequence[Detection]]) -> BoxedScores:
        """Per event, each frame's score and the box that gave it (:class:`BoxedScores`)."""
        scores: dict[str, np.ndarray] = {}
        boxes: dict[str, np.ndarray] = {}
        for ev in self.events:
            best = [event_detection(ev, dets) for dets in detections]
            scores[ev.event] = np.array([0.0 if d is None else d.score for d in best], dtype=np.float64)
            boxes[ev.event] = np.array([(np.nan,) * 4 if d is None else d.box for d in best], dtype=np.float32).reshape(
                len(best), 4
            )
        return BoxedScores(scores, boxes)

    def detect_clip(self, clip) -> list[list[Detection]]:
        return self.detector.detect(list(clip.frames))

    def score(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        """Per clip ``{event: per-frame scores}`` (with their ``boxes``, :class:`BoxedScores`): clips of any
        streams and sizes in as few forward passes as possible (:class:`~.backend.Backend`'s verb)."""
        if not self.events:
            return [BoxedScores() for _ in clips]
        frames: list[np.ndarray] = []
        bounds: list[tuple[int, int]] = []
        for c in clips:
            start = len(frames)
            frames.extend(c.frames)
            bounds.append((start, len(frames)))
        dets = self.detector.detect(frames)
        return [self.scores_from_detections(dets[a:b]) for a, b in bounds]
