"""The embedded CPU default backend: YOLOv3-tiny (COCO) on sampled frames, through onnxruntime (the
default) or OpenCV DNN.

Weights: the stock darknet files, found, fetched and verified by :mod:`.weights`. The onnxruntime engine
runs them as an ONNX graph that :mod:`.darknet` writes (and caches under the data dir) and decodes its
outputs as OpenCV's region layer does, so both engines give the same rows, boxes and scores (to about
1e-4). On the 2-core dev machine (Intel Xeon, one thread) a 320×192 frame takes about 16 ms in
onnxruntime and 38 ms in OpenCV DNN.

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

Regions (``detect(images, regions=...)``): the whole frame at ``input_size`` misses small, distant
people (person recall ≈ 0.2 on vtest.avi at 320). Each image may also name regions (normalised boxes,
e.g. motion boxes or :func:`tile_regions`); a region lying mostly within a confident box of the
whole-frame pass (≥ :data:`EXPLAINS_SCORE`: a walking person's moving legs) is not looked at again;
each other one is widened by a context margin, made at least
``region_min`` frame pixels a side, overlapping ones are merged, and the crop is run at (about) its own
resolution — input long side ``min(crop long side rounded up to 32, region_cap)``, so a crop is never
upscaled and downscaled at most ``crop / region_cap``. Crop boxes are mapped back to the frame and
merged with the whole-frame boxes by per-class NMS (with the containment rule); a crop box cut by a
crop edge that is not a frame edge is dropped where a complete box covers it, else down-weighted.
See bench/accuracy.py for what each configuration finds and costs.

Not thread-safe: one detector per thread/actor (OpenCV nets keep per-call state).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from longwatch.pipeline.errors import ModelError
from longwatch.pipeline.events import EventSpec, EventsSpec
from longwatch.pipeline.thumbs import BoxedScores
from longwatch.pipeline.types import Clip

from . import darknet
from .weights import DetectorWeights

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = 320
PAD_VALUE = 127

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the frame


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


EXPLAINS_SCORE = 0.5  # a box this sure explains what moved on it (no crop there; a held frame may reuse it)


def _inside(r: Sequence[float], b: Sequence[float], frac: float = 0.8) -> bool:
    """At least ``frac`` of box ``r``'s area lies within box ``b`` (both normalised x0, y0, x1, y1)."""
    w = min(r[2], b[2]) - max(r[0], b[0])
    h = min(r[3], b[3]) - max(r[1], b[1])
    area = max(r[2] - r[0], 1e-9) * max(r[3] - r[1], 1e-9)
    return w > 0 and h > 0 and w * h >= frac * area


def _covers(detections: Sequence[Detection], blobs: Sequence[Sequence[float]]) -> bool:
    """Every blob (normalised box of what moved) overlaps one of the confident detections' boxes."""
    sure = [d.box for d in detections if d.score >= EXPLAINS_SCORE]
    return all(any(b[0] < x[2] and x[0] < b[2] and b[1] < x[3] and x[1] < b[3] for x in sure) for b in blobs)


def _round_up(x: float, m: int) -> int:
    return max(m, int(math.ceil(x / m)) * m)


def tile_regions(cols: int = 2, rows: int = 2, overlap: float = 0.15) -> list[Box]:
    """A ``cols × rows`` grid of normalised tiles covering the frame, row by row; neighbours overlap by
    ``overlap`` of a tile's size (so an object on a seam is whole in one of them). Regions for
    :meth:`YoloDetector.detect` where there is no motion to guide it (e.g. a periodic full check)."""
    if cols < 1 or rows < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"need cols, rows >= 1 and 0 <= overlap < 1, got {cols}, {rows}, {overlap}")

    def spans(n: int) -> list[tuple[float, float]]:
        w = 1.0 / n
        pad = overlap * w / 2.0
        return [(max(0.0, k * w - pad), min(1.0, (k + 1) * w + pad)) for k in range(n)]

    return [(x0, y0, x1, y1) for y0, y1 in spans(rows) for x0, x1 in spans(cols)]


def _merge_rects(rects: list[list[int]], frac: float, cap: int) -> list[list[int]]:
    """Merge overlapping pixel rects [x0, y0, x1, y1] into their bounding box: where the union's long side is
    at most ``cap`` (one crop, no resolution lost) or they overlap by at least ``frac`` of the smaller one."""
    rects = [list(r) for r in rects]
    merged = True
    while merged and len(rects) > 1:
        merged = False
        for i in range(len(rects)):
            for j in range(i + 1, len(rects)):
                a, b = rects[i], rects[j]
                iw = min(a[2], b[2]) - max(a[0], b[0])
                ih = min(a[3], b[3]) - max(a[1], b[1])
                if iw <= 0 or ih <= 0:
                    continue
                u = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
                if max(u[2] - u[0], u[3] - u[1]) <= cap or iw * ih >= frac * small:
                    rects[i] = u
                    del rects[j]
                    merged = True
                    break
            if merged:
                break
    return rects


ENGINES = ("onnxruntime", "opencv")
ONNX_CACHE_SUBDIR = Path("models") / "onnx"  # under the data dir: onnxruntime's graph of the weights


class YoloDetector:
    """YOLOv3-tiny on the CPU. ``detect`` takes RGB uint8 frames of any size.

    ``engine``: ``"onnxruntime"`` (default) or ``"opencv"`` (OpenCV DNN); same network, same results.
    ``cache_dir``: where onnxruntime's graph is kept between starts (None: this process only).

    ``input_size``: the network input's long side (a multiple of 32; 320 default, 416 is the stock size).
    ``rect``: keep the frames' aspect in the network input (short side rounded up to 32) instead of a
    square. ``conf``: lowest class confidence kept (OpenCV's region layer already zeroes those below
    about 0.2). ``nms``: IoU threshold of per-class NMS. ``contain``: a box of the same class that
    lies this much (intersection / its own area) inside a better one is dropped too: YOLOv3-tiny's two
    heads often give one person a full-body and a nested torso box whose IoU is under ``nms`` (None: off).
    ``threads``: ``cv2.setNumThreads`` (process-wide) and onnxruntime's intra-op threads (None: OpenCV
    left alone, onnxruntime's default). ``max_batch``: frames per forward pass.

    Regions (see the module doc): ``region_margin`` widens each region by this fraction of its size on
    every side; ``region_min``: a crop's least side, frame pixels; ``region_merge``: overlapping regions are
    merged where the union fits ``region_cap`` or they overlap by at least this fraction of the smaller one;
    ``region_cap``: the crop input's long side at most (a multiple of 32); ``cut_penalty``: score
    factor of a crop box cut by an inner crop edge that no complete box covers.

    ``tiny_masks``: the anchors of the second (stride-16) ``[yolo]`` head. The cfg that ships beside the
    weights says ``mask = 0,1,2``; the COCO weights were trained with pjreddie's original ``1,2,3``, and
    with 0,1,2 that head, the one that finds small objects, draws boxes about half their true width and
    height (on vtest.avi an 18×35 px box for a 31×75 px person, so IoU fails; scores are the same). The
    default, ``(1, 2, 3)``, loads the cfg from memory with that line corrected (bench/accuracy.py: person
    recall 0.20 → 0.68 at the same cost); None keeps the file as it is.
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
        region_margin: float = 0.25,
        region_min: int = 128,
        region_merge: float = 0.8,
        region_cap: int = 416,
        cut_penalty: float = 0.75,
        tiny_masks: tuple[int, int, int] | None = (1, 2, 3),
        engine: str = "onnxruntime",
        cache_dir: str | os.PathLike | None = None,
    ):
        if engine not in ENGINES:
            raise ModelError(f"unknown detector engine {engine!r}; known: {', '.join(ENGINES)}")
        if engine == "opencv" and int(cv2.__version__.split(".")[0]) >= 5:
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
        if int(region_cap) <= 0 or int(region_cap) % 32 or region_min < 1 or region_margin < 0:
            raise ModelError(
                f"region_cap must be a positive multiple of 32, region_min >= 1 and region_margin >= 0, got "
                f"{region_cap!r}, {region_min!r}, {region_margin!r}"
            )
        self.region_margin = float(region_margin)
        self.region_min = int(region_min)
        self.region_merge = float(region_merge)
        self.region_cap = int(region_cap)
        self.cut_penalty = float(cut_penalty)
        self.class_names = weights.class_names
        if threads is not None:
            cv2.setNumThreads(int(threads))
        self.tiny_masks = None if tiny_masks is None else tuple(int(m) for m in tiny_masks)
        self.engine = engine
        self.session = None  # onnxruntime's InferenceSession (engine "onnxruntime")
        try:
            cfg = Path(weights.cfg).read_text()
        except OSError as exc:
            raise ModelError(f"could not read the detector cfg {weights.cfg}: {exc}") from exc
        if self.tiny_masks is not None:
            cfg = _with_tiny_masks(cfg, self.tiny_masks)
        if engine == "onnxruntime":
            self._infer = self._onnxruntime(cfg, threads, cache_dir)
        else:
            self._infer = self._opencv(cfg)
        self.frames_done = 0
        self.crops_done = 0

    def _opencv(self, cfg: str):
        """OpenCV DNN's forward pass: blob (N, 3, H, W) → region rows (N, rows, 5 + classes)."""
        try:
            net = cv2.dnn.readNetFromDarknet(
                np.frombuffer(cfg.encode(), np.uint8), np.fromfile(str(self.weights.weights), np.uint8)
            )
        except (cv2.error, OSError) as exc:
            raise ModelError(
                f"OpenCV could not load YOLOv3-tiny from {self.weights.cfg} / {self.weights.weights}: {exc}"
            ) from exc
        if net.empty():
            raise ModelError(f"OpenCV loaded an empty network from {self.weights.cfg}")
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        names = list(net.getUnconnectedOutLayersNames())

        def infer(blob: np.ndarray) -> np.ndarray:
            net.setInput(blob)
            outs = [o if o.ndim == 3 else o[None] for o in net.forward(names)]
            return np.concatenate(outs, axis=1)

        return infer

    def _onnxruntime(self, cfg: str, threads: int | None, cache_dir: str | os.PathLike | None):
        """onnxruntime's forward pass on the graph :mod:`.darknet` writes, decoded as OpenCV's region layer."""
        import onnxruntime as ort

        try:
            model = darknet.cached_onnx_model(cfg, self.weights.weights, cache_dir, weights_sha256=self.weights.sha256)
            heads = darknet.yolo_heads(cfg)
        except OSError as exc:
            raise ModelError(f"could not read the detector weights {self.weights.weights}: {exc}") from exc
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: no notes about the graph's optimisations
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        # threads between calls sleep rather than spin: the stream workers want those cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        except Exception as first:  # onnxruntime raises its own exception types
            # a damaged cache file: write the graph again, once
            log.warning("the cached detector graph in %s does not load (%s); writing it again", cache_dir, first)
            try:
                model = darknet.cached_onnx_model(
                    cfg, self.weights.weights, cache_dir, weights_sha256=self.weights.sha256, rebuild=True
                )
                session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise ModelError(f"onnxruntime could not load the detector graph: {exc}") from exc
        self.session = session

        def infer(blob: np.ndarray) -> np.ndarray:
            outs = session.run(None, {darknet.INPUT_NAME: blob})
            return darknet.region_rows(outs, heads, blob.shape[3], blob.shape[2])

        return infer

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

    def crop_rects(
        self, width: int, height: int, regions: Sequence[Sequence[float]]
    ) -> list[tuple[int, int, int, int]]:
        """Pixel crops ``(x0, y0, x1, y1)`` for normalised ``regions`` of a ``width × height`` frame: each
        widened by ``region_margin`` (not beyond ``region_cap`` pixels a side), at least ``region_min`` a side, clamped, overlapping ones merged, then
        grown to the network's 32-pixel grid where it runs unscaled. A crop the whole-frame pass already
        sees at (nearly) the same scale is left out."""
        rects: list[list[int]] = []
        for r in regions:
            x0, y0, x1, y1 = (float(v) for v in r)
            if not (x1 > x0 and y1 > y0):
                continue
            cx, cy = (x0 + x1) / 2 * width, (y0 + y1) / 2 * height
            rw, rh = (x1 - x0) * width, (y1 - y0) * height
            grow = 1 + 2 * self.region_margin  # context, but not past region_cap (it would cost resolution)
            bw = max(min(rw * grow, max(rw, self.region_cap)), self.region_min)
            bh = max(min(rh * grow, max(rh, self.region_cap)), self.region_min)
            rects.append(_place(cx, cy, bw, bh, width, height))
        whole_scale = self.input_shape(width, height)[0] / width
        out = []
        for x0, y0, x1, y1 in _merge_rects(rects, self.region_merge, self.region_cap):
            cw, ch = x1 - x0, y1 - y0
            if max(cw, ch) <= self.region_cap:  # unscaled: take whole grid cells of the frame itself
                x0, y0, x1, y1 = _place(
                    (x0 + x1) / 2, (y0 + y1) / 2, _round_up(cw, 32), _round_up(ch, 32), width, height
                )
            W, _ = self.crop_input_shape(x1 - x0, y1 - y0)
            if W / (x1 - x0) > 1.1 * whole_scale:
                out.append((x0, y0, x1, y1))
        return out

    def crop_input_shape(self, width: int, height: int) -> tuple[int, int]:
        """(W, H) of the network input for a ``width × height`` crop: its own size rounded up to 32, long side
        at most ``region_cap`` (aspect kept)."""
        long = max(width, height)
        s = min(_round_up(long, 32), self.region_cap)
        r = s / long
        if width >= height:
            return s, min(s, _round_up(height * r, 32))
        return min(s, _round_up(width * r, 32)), s

    def detect(
        self, images: Sequence[np.ndarray], *, regions: Sequence[Sequence[Sequence[float]] | None] | None = None
    ) -> list[list[Detection]]:
        """Detections per image (RGB uint8 (H, W, 3)), best first. Images of different sizes are fine.

        ``regions``: per image, normalised boxes (x0, y0, x1, y1) to look at closely in addition to the whole
        frame (None or empty: the whole frame only, as without). See the module doc."""
        results: list[list[Detection]] = [[] for _ in images]
        if regions is not None and len(regions) != len(images):
            raise ModelError(f"regions must have one entry per image: {len(regions)} for {len(images)} images")
        # jobs: (image index, picture, crop rect or None for the whole frame), grouped by network input shape
        groups: dict[tuple[int, int], list[tuple[int, np.ndarray, tuple[int, int, int, int] | None]]] = {}
        for i, img in enumerate(images):
            if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ModelError(
                    f"detector input {i} must be an RGB uint8 (H, W, 3) array, got "
                    f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', type(img).__name__)}"
                )
            groups.setdefault(self.input_shape(img.shape[1], img.shape[0]), []).append((i, img, None))
        crops: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._forward(images, groups, results, crops)
        # Then the crops, where the whole-frame pass has not already explained what moved: a region
        # lying within a confident box (a walking person's moving legs) needs no closer look.
        groups = {}
        for i, regs in enumerate(regions or ()):
            sure = [d.box for d in results[i] if d.score >= EXPLAINS_SCORE]
            regs = [r for r in regs or () if not any(_inside(r, b) for b in sure)]
            if not regs:
                continue
            h, w = images[i].shape[:2]
            crops[i] = []
            for rect in self.crop_rects(w, h, regs):
                x0, y0, x1, y1 = rect
                shape = self.crop_input_shape(x1 - x0, y1 - y0)
                groups.setdefault(shape, []).append((i, images[i][y0:y1, x0:x1], rect))
        self._forward(images, groups, results, crops)
        for i, parts in crops.items():
            if parts:
                results[i] = self._merge(results[i], parts)
        return results

    def _forward(self, images, groups, results, crops) -> None:
        """Run the jobs (image index, picture, crop rect or None for the whole frame), grouped by network
        input shape, in batches; whole frames' detections go to ``results``, crops' to ``crops``."""
        for (W, H), jobs in groups.items():
            for k in range(0, len(jobs), self.max_batch):
                chunk = jobs[k : k + self.max_batch]
                boxed, geo = [], []
                for _, pic, _ in chunk:
                    lb, g = self._letterbox(pic, W, H)
                    boxed.append(lb)
                    geo.append(g)
                # RGB in, no swap: darknet weights expect RGB in [0, 1].
                blob = cv2.dnn.blobFromImages(boxed, 1.0 / 255.0, (W, H), swapRB=False, crop=False)
                rows = self._infer(blob)  # (B, N, 5 + classes)
                for b, (i, _, job_rect) in enumerate(chunk):
                    if job_rect is None:
                        results[i] = self._decode(rows[b], W, H, geo[b])
                        self.frames_done += 1
                    else:
                        h, w = images[i].shape[:2]
                        crops[i].append(self._decode_crop(rows[b], W, H, geo[b], job_rect, w, h))
                        self.crops_done += 1

    def _candidates(
        self, rows: np.ndarray, W: int, H: int, geo: tuple[float, float, float, float]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw boxes (N, 4) as fractions of the letterboxed picture (not clipped), confidences, classes."""
        scores = rows[:, 5:]
        r_idx, c_idx = np.nonzero(scores >= max(self.conf, 1e-6))
        conf = scores[r_idx, c_idx].astype(np.float64)
        px, py, nw, nh = geo
        cx, cy, bw, bh = (rows[r_idx, j].astype(np.float64) for j in range(4))
        boxes = np.stack(
            [
                (cx * W - bw * W / 2 - px) / nw,
                (cy * H - bh * H / 2 - py) / nh,
                (cx * W + bw * W / 2 - px) / nw,
                (cy * H + bh * H / 2 - py) / nh,
            ],
            axis=1,
        ).reshape(-1, 4)
        return boxes, conf, c_idx

    def _decode(self, rows: np.ndarray, W: int, H: int, geo: tuple[float, float, float, float]) -> list[Detection]:
        boxes, conf, c_idx = self._candidates(rows, W, H, geo)
        if conf.size == 0:
            return []
        boxes = np.clip(boxes, 0.0, 1.0)
        keep = _nms_per_class(boxes, conf, c_idx, self.nms, self.contain)
        out = [Detection(int(c_idx[k]), self.class_names[int(c_idx[k])], float(conf[k]), _box4(boxes[k])) for k in keep]
        out.sort(key=lambda d: -d.score)
        return out

    def _decode_crop(
        self,
        rows: np.ndarray,
        W: int,
        H: int,
        geo: tuple[float, float, float, float],
        rect: tuple[int, int, int, int],
        width: int,
        height: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A crop's boxes after its own NMS, as frame fractions: (boxes (N, 4), scores, classes, cut flags).
        Cut: the raw box reaches within 3 pixels of a crop edge that is not a frame edge."""
        boxes, conf, c_idx = self._candidates(rows, W, H, geo)
        x0, y0, x1, y1 = rect
        cw, ch = x1 - x0, y1 - y0
        tol_x, tol_y = 3.0 / cw, 3.0 / ch
        cut = np.zeros(len(conf), bool)
        if x0 > 0:
            cut |= boxes[:, 0] <= tol_x
        if y0 > 0:
            cut |= boxes[:, 1] <= tol_y
        if x1 < width:
            cut |= boxes[:, 2] >= 1.0 - tol_x
        if y1 < height:
            cut |= boxes[:, 3] >= 1.0 - tol_y
        boxes = np.clip(boxes, 0.0, 1.0)
        keep = np.array(_nms_per_class(boxes, conf, c_idx, self.nms, self.contain), dtype=np.int64)
        scale = np.array([cw / width, ch / height, cw / width, ch / height])
        offset = np.array([x0 / width, y0 / height, x0 / width, y0 / height])
        if keep.size == 0:
            return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool)
        return boxes[keep] * scale + offset, conf[keep], c_idx[keep], cut[keep]

    def _merge(
        self, whole: list[Detection], parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    ) -> list[Detection]:
        """Whole-frame detections plus the crops' boxes, through per-class NMS. A cut crop box that a complete
        box of its class covers (half its area or more) is dropped; one that none covers keeps
        ``cut_penalty`` of its score."""
        boxes = np.concatenate([np.array([d.box for d in whole]).reshape(-1, 4)] + [p[0] for p in parts])
        conf = np.concatenate([np.array([d.score for d in whole], np.float64)] + [p[1] for p in parts])
        cls = np.concatenate([np.array([d.class_id for d in whole], np.int64)] + [p[2] for p in parts])
        cut = np.concatenate([np.zeros(len(whole), bool)] + [p[3] for p in parts])
        if conf.size == 0:
            return []
        alive = np.ones(len(conf), bool)
        whole_idx = np.nonzero(~cut)[0]
        for k in np.nonzero(cut)[0]:
            same = whole_idx[cls[whole_idx] == cls[k]]
            ix0 = np.maximum(boxes[k, 0], boxes[same, 0])
            iy0 = np.maximum(boxes[k, 1], boxes[same, 1])
            ix1 = np.minimum(boxes[k, 2], boxes[same, 2])
            iy1 = np.minimum(boxes[k, 3], boxes[same, 3])
            inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
            area = max((boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1]), 1e-12)
            if same.size and inter.max() >= 0.5 * area:
                alive[k] = False
            else:
                conf[k] *= self.cut_penalty
        alive &= conf >= self.conf
        idx = np.nonzero(alive)[0]
        keep = idx[_nms_per_class(boxes[idx], conf[idx], cls[idx], self.nms, self.contain)]
        out = [Detection(int(cls[k]), self.class_names[int(cls[k])], float(conf[k]), _box4(boxes[k])) for k in keep]
        out.sort(key=lambda d: -d.score)
        return out


def _box4(row: np.ndarray) -> tuple[float, float, float, float]:
    return float(row[0]), float(row[1]), float(row[2]), float(row[3])


def _with_tiny_masks(cfg: str, masks: tuple[int, ...]) -> str:
    """The cfg text with its last ``[yolo]`` section's ``mask`` set to ``masks``."""
    import re

    found = list(re.finditer(r"^mask\s*=.*$", cfg, flags=re.M))
    if len(found) < 2:
        raise ModelError("the detector cfg has fewer than two [yolo] masks: not a yolov3-tiny cfg")
    last = found[-1]
    return cfg[: last.start()] + "mask = " + ",".join(map(str, masks)) + cfg[last.end() :]


def _place(cx: float, cy: float, bw: float, bh: float, width: int, height: int) -> list[int]:
    """A ``bw × bh`` pixel rect centred on (cx, cy), shifted to lie inside the frame (clipped where larger)."""
    bw, bh = min(int(round(bw)), width), min(int(round(bh)), height)
    x0 = int(round(min(max(cx - bw / 2, 0), width - bw)))
    y0 = int(round(min(max(cy - bh / 2, 0), height - bh)))
    return [x0, y0, x0 + bw, y0 + bh]


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


def in_polygon(x: float, y: float, poly: Sequence[Sequence[float]]) -> bool:
    """Whether (x, y) lies inside the polygon (even-odd rule; points on an edge may fall either way)."""
    inside = False
    n = len(poly)
    for k in range(n):
        xa, ya = poly[k][0], poly[k][1]
        xb, yb = poly[k - 1][0], poly[k - 1][1]
        if (ya > y) != (yb > y) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
            inside = not inside
    return inside


def event_detections(ev: EventSpec, detections: Sequence[Detection]) -> list[Detection]:
    """The boxes that count for ``ev``, best first (stable: equals keep their order): its class, score at
    least its floor (and > 0), area at least ``min_box_area``, centre inside ``roi`` and bottom-centre
    (where the object stands, as Frigate does) inside ``zone`` (a polygon of normalised (x, y) points).
    ``zone`` is read with getattr, so specs without it work."""
    p = ev.detector
    if p is None:
        return []
    cid, floor = p.class_id, ev.score_floor
    min_area, roi, zone = p.min_box_area, p.roi, getattr(p, "zone", None)
    out = []
    for d in detections:
        if d.class_id != cid or d.score < floor or d.score <= 0.0:
            continue
        if min_area is not None and d.area < min_area:
            continue
        if roi is not None:
            cx, cy = d.center
            x0, y0, x1, y1 = roi
            if not (x0 <= cx <= x1 and y0 <= cy <= y1):
                continue
        if zone and not in_polygon((d.box[0] + d.box[2]) / 2.0, d.box[3], zone):
            continue
        out.append(d)
    out.sort(key=lambda d: -d.score)
    return out


def event_detection(ev: EventSpec, detections: Sequence[Detection]) -> Detection | None:
    """The detection that gives ``ev``'s score: the ``min_count``-th best of :func:`event_detections`
    (``ev.detector.min_count``, default 1: the best), else None (fewer boxes pass)."""
    p = ev.detector
    n = max(1, int(getattr(p, "min_count", None) or 1)) if p is not None else 1
    passing = event_detections(ev, detections)
    return passing[n - 1] if len(passing) >= n else None


def event_score(ev: EventSpec, detections: Sequence[Detection]) -> float:
    """``ev``'s frame score: the ``min_count``-th best confidence of the boxes passing its class / floor /
    min_box_area / roi / zone filters, else 0 (:func:`event_detection`)."""
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
            if data_dir is not None:
                detector_kwargs.setdefault("cache_dir", Path(data_dir) / ONNX_CACHE_SUBDIR)
            detector = YoloDetector(weights, conf=conf, **detector_kwargs)
        elif floors and detector.conf > min(floors) + 1e-9:
            log.warning(
                "detector conf %.2f is above the lowest event floor %.2f; weaker boxes are lost",
                detector.conf,
                min(floors),
            )
        self.detector = detector
        self.frames_seen: list[int] = []
        self.explained: list[list[bool]] = []

    @property
    def event_names(self) -> list[str]:
        return [e.event for e in self.events]

    @property
    def stats(self) -> dict[str, int]:
        """Forward passes so far: whole frames and crops (the pool's ``stats()`` reports them)."""
        return {"frames": self.detector.frames_done, "crops": self.detector.crops_done}

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
        return self.detect_clips([clip])[0]

    def detect_clips(self, clips: Sequence[Clip]) -> list[list[list[Detection]]]:
        """Per clip, per frame, its detections, in as few forward passes as possible. A clip's
        ``meta["detect"]`` (bool per frame) skips the frames marked False (no detections) unless held; its
        ``meta["regions"]`` (per frame, normalised (x0, y0, x1, y1) boxes) are looked at closely
        (:meth:`YoloDetector.detect`). ``meta["hold"]`` (per frame, None or the index of an earlier frame
        of the clip) with ``meta["blobs"]`` (per frame, the boxes of what moved;
        :class:`~longwatch.pipeline.motion_gate.MotionGate`): a held frame reuses that frame's detections
        where its confident ones (≥ :data:`EXPLAINS_SCORE`) cover every blob there (what moved was an object the detector saw); otherwise it is
        looked at in a second pass. :attr:`frames_seen`: per clip, the frames the last call looked at;
        :attr:`explained`: per clip, per frame, looked at and its confident boxes covered every blob there."""
        plan: list[list[tuple[str, int | None]]] = []  # per clip, per frame: ("skip"|"detect"|"hold", ref)
        for c in clips:
            meta = getattr(c, "meta", None) or {}
            mask, hold = meta.get("detect"), meta.get("hold")
            rows: list[tuple[str, int | None]] = []
            for k in range(len(c.frames)):
                if hold is not None and hold[k] is not None:
                    rows.append(("hold", int(hold[k])))
                elif mask is not None and not bool(mask[k]):
                    rows.append(("skip", None))
                else:
                    rows.append(("detect", None))
            plan.append(rows)
        out: list[list[list[Detection]]] = [[[] for _ in c.frames] for c in clips]
        first = [(ci, k) for ci, rows in enumerate(plan) for k, (what, _) in enumerate(rows) if what == "detect"]
        self._detect_into(clips, first, out)
        second = []
        for ci, rows in enumerate(plan):
            blobs = (getattr(clips[ci], "meta", None) or {}).get("blobs")
            for k, (what, ref) in enumerate(rows):
                if what != "hold":
                    continue
                assert ref is not None
                if blobs is not None and _covers(out[ci][ref], blobs[ref]):
                    out[ci][k] = list(out[ci][ref])
                else:
                    second.append((ci, k))
        self._detect_into(clips, second, out)
        self.frames_seen = [0] * len(clips)
        self.explained = [[False] * len(c.frames) for c in clips]
        for ci, k in first + second:
            self.frames_seen[ci] += 1
            blobs = (getattr(clips[ci], "meta", None) or {}).get("blobs")
            self.explained[ci][k] = blobs is not None and _covers(out[ci][k], blobs[k])
        return out

    def _detect_into(self, clips: Sequence[Clip], which: list[tuple[int, int]], out: list) -> None:
        """Detect the frames ``which`` ((clip, frame) pairs) in one call and put their boxes in ``out``."""
        if not which:
            return
        frames = [clips[ci].frames[k] for ci, k in which]
        regions = []
        for ci, k in which:
            regs = (getattr(clips[ci], "meta", None) or {}).get("regions")
            regions.append(regs[k] if regs is not None else None)
        if any(regions):
            dets = self.detector.detect(frames, regions=regions)
        else:  # the plain call: any object with ``detect(frames)`` will do
            dets = self.detector.detect(frames)
        for (ci, k), d in zip(which, dets, strict=True):
            out[ci][k] = d

    def score(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        """Per clip ``{event: per-frame scores}`` (with their ``boxes``, :class:`BoxedScores`): clips of any
        streams and sizes in as few forward passes as possible (:class:`~.backend.Backend`'s verb).
        Frames a clip's ``meta["detect"]`` skips score 0 (box NaN); see :meth:`detect_clips`."""
        if not self.events:
            return [BoxedScores() for _ in clips]
        answers = [self.scores_from_detections(d) for d in self.detect_clips(clips)]
        for answer, seen, explained in zip(answers, self.frames_seen, self.explained, strict=True):
            answer.frames_seen = seen  # the worker's count of what the detector looked at
            answer.explained = explained  # what a live stream's next clips may reuse
        return list(answers)
