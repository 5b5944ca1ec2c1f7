"""Segment pictures: each segment's best frame as a small JPEG (its detection box drawn), and the frames
of its strip (first, best, last), chosen as the clips go by and committed with the segment.

What is stored (one Redis hash per segment, ``<prefix>:{<stream>}:thumb:<segment id>``, :mod:`.keys`;
:meth:`Thumbnail.fields`): the best frame (highest score of the event over the sampled frames inside
the segment; the earliest of equals) as a JPEG at most :data:`THUMB_WIDTH` px wide, quality
:data:`JPEG_QUALITY`, with the box of that detection drawn in :data:`BOX_RGB` for detector events; the
frame's stream seconds, its score and its box (fractions of the frame); the stream seconds of the
segment's first and last sampled frames (and their boxes). For a source with no recording to go back
to (a camera, any URL) the first and last frames are stored as JPEGs too: they make the segment's
strip (``strip.jpg``); while the segment is open its stored last frame is re-rendered at most every
:data:`LAST_EVERY_S` of stream time (or when the best frame overtakes it), and when it closes it is the
true last one (a camera's worker killed mid-segment leaves one up to that old, with its own time). A
file's strip is decoded from the file itself, at those times. 4-12 KB per
segment (8.4 KB on average) for 640×272 street footage (320×139 JPEGs), about 3× that for a camera's
(three JPEGs).

When: :class:`ThumbTracker` follows each event's segment being built (:attr:`.Segmenter.running`,
announced or not yet) and, clip by clip, keeps its best frame so far; the worker hands what changed to
:meth:`.SegmentStore.commit`, which writes it in the SAME MULTI/EXEC as the segment and the watermark.
So a segment is never stored without its picture, and a worker killed between clips resumes with the
picture of its open segment as it was committed: on resume, :meth:`ThumbTracker.restore` reads it back
(a segment not yet announced, still shorter than ``min_duration_s``, has its picture stored too, as
``provisional``: with a TTL of :data:`PROVISIONAL_TTL_S`, deleted in the commit where the segmenter
drops it, made permanent when it is announced). Commits are idempotent: a replayed clip writes the same
bytes to the same key. Retention and purge delete a segment's pictures with it.

The detector's boxes reach the tracker as :class:`BoxedScores`: the usual ``{event: per-frame scores}``
plus ``boxes``, ``{event: (N, 4) float32}`` (x0, y0, x1, y1 as fractions; a row of NaN where the frame
has no box for the event). A plain dict (other backends) means no boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .types import Clip, Segment

__all__ = [
    "BOX_RGB",
    "JPEG_QUALITY",
    "PROVISIONAL_TTL_S",
    "THUMB_WIDTH",
    "BoxedScores",
    "ThumbTracker",
    "Thumbnail",
    "boxes_of",
    "compose_strip",
    "decode_jpeg",
    "encode_jpeg",
    "picture",
    "render",
    "segment_id",
]

THUMB_WIDTH = 320  # px, at most (a narrower frame keeps its width)
JPEG_QUALITY = 80
BOX_RGB = (255, 0, 255)  # magenta: rare in street footage, survives JPEG's chroma subsampling at 2 px
BOX_THICKNESS = 2
PROVISIONAL_TTL_S = 7 * 86400  # the picture of a segment not announced yet (see the module doc)
STRIP_GAP = 4  # px of dark grey between the frames of a strip
_EPS = 1e-9

Box = tuple[float, float, float, float]


class BoxedScores(dict):
    """A backend's answer for one clip: ``{event: per-frame scores}`` (a dict, as every consumer expects)
    plus ``boxes``: ``{event: (N, 4) float32}``, the box that gave each frame's score (NaN: none), and
    ``frames_seen``: how many of the clip's frames the detector looked at (None: not counted), and
    ``explained``: per frame, whether the detector looked at it and its confident boxes covered every
    blob of what moved there (None: not said; a live stream may reuse such a frame's answer in later
    clips, see :mod:`.motion_gate`). Pickles with all of them (Ray Serve's transport)."""

    def __init__(
        self,
        scores: Mapping[str, np.ndarray] | None = None,
        boxes: Mapping[str, np.ndarray] | None = None,
        *,
        frames_seen: int | None = None,
        explained: Sequence[bool] | None = None,
    ):
        super().__init__(scores or {})
        self.boxes: dict[str, np.ndarray] = dict(boxes or {})
        self.frames_seen = frames_seen
        self.explained: list[bool] | None = None if explained is None else [bool(x) for x in explained]


def boxes_of(scores: Any) -> dict[str, np.ndarray]:
    """The ``boxes`` of a score function's answer (:class:`BoxedScores` or anything with ``boxes``), else {}."""
    return dict(getattr(scores, "boxes", None) or {})


def segment_id(stream_id: str, event: str, start: float) -> str:
    """The id of the segment of ``event`` on ``stream_id`` that starts at ``start`` (:attr:`Segment.id`)."""
    return Segment(stream_id, event, start, start).id


# ---- pictures ---------------------------------------------------------------------------------------


def _box(value: Any) -> Box | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size != 4 or not np.all(np.isfinite(arr)):
        return None
    x0, y0, x1, y1 = (float(min(1.0, max(0.0, v))) for v in arr)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """A box (fractions) as inclusive pixel bounds (x0, y0, x1, y1) in a ``width`` × ``height`` picture."""
    x0 = min(width - 1, max(0, int(round(box[0] * width))))
    y0 = min(height - 1, max(0, int(round(box[1] * height))))
    x1 = min(width - 1, max(x0, int(round(box[2] * width)) - 1))
    y1 = min(height - 1, max(y0, int(round(box[3] * height)) - 1))
    return x0, y0, x1, y1


def picture(
    image: np.ndarray, box: Box | None = None, *, width: int = THUMB_WIDTH, height: int | None = None
) -> np.ndarray:
    """An RGB uint8 frame scaled to at most ``width`` px wide (aspect kept; or to exactly ``width`` ×
    ``height``), ``box`` (fractions) drawn."""
    import cv2  # here: the store imports this module for its record type, without OpenCV

    h, w = image.shape[:2]
    if height is not None and (w, h) != (width, height):
        small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    elif w > width:
        nh = max(1, round(h * width / w))
        small = cv2.resize(image, (width, nh), interpolation=cv2.INTER_AREA)
    else:
        small = np.array(image, dtype=np.uint8, copy=True, order="C")
    if box is not None:  # a BOX_THICKNESS px line just inside the box, so it stays whole at the frame's edges
        th, tw = small.shape[:2]
        x0, y0, x1, y1 = _pixels(box, tw, th)
        for k in range(BOX_THICKNESS):
            cv2.rectangle(small, (x0 + k, y0 + k), (max(x0 + k, x1 - k), max(y0 + k, y1 - k)), BOX_RGB, 1)
    return small


def encode_jpeg(image: np.ndarray) -> bytes:
    """An RGB uint8 array as a JPEG (quality :data:`JPEG_QUALITY`)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def render(image: np.ndarray, box: Box | None = None, *, width: int = THUMB_WIDTH) -> tuple[bytes, int, int]:
    """An RGB uint8 frame as a JPEG at most ``width`` px wide (aspect kept), ``box`` (fractions) drawn;
    returns (jpeg, width, height)."""
    small = picture(image, box, width=width)
    return encode_jpeg(small), small.shape[1], small.shape[0]


def decode_jpeg(data: bytes) -> np.ndarray:
    """A JPEG as an RGB uint8 array."""
    import cv2  # here: the store imports this module for its record type, without OpenCV

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a JPEG")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def compose_strip(images: Sequence[np.ndarray], *, height: int | None = None) -> bytes:
    """RGB frames side by side (scaled to one height, :data:`STRIP_GAP` px apart) as one JPEG."""
    import cv2  # here: the store imports this module for its record type, without OpenCV

    if not images:
        raise ValueError("a strip needs at least one frame")
    h = height or min(img.shape[0] for img in images)
    cells = []
    for i, img in enumerate(images):
        if img.shape[0] != h:
            w = max(1, round(img.shape[1] * h / img.shape[0]))
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        if i:
            cells.append(np.full((h, STRIP_GAP, 3), 32, np.uint8))
        cells.append(img)
    return encode_jpeg(np.concatenate(cells, axis=1))


# ---- the stored record ------------------------------------------------------------------------------


def _num(x: float) -> str:
    return repr(float(x))


def _box_text(box: Box | None) -> str:
    return "" if box is None else ",".join(_num(v) for v in box)


def _parse_box(text: str) -> Box | None:
    if not text:
        return None
    parts = [float(v) for v in text.split(",")]
    return (parts[0], parts[1], parts[2], parts[3]) if len(parts) == 4 else None


@dataclass(frozen=True)
class Thumbnail:
    """The pictures of one segment (see the module doc). ``provisional``: its segment is not announced yet
    (stored with a TTL; not a stored field)."""

    event: str
    start: float  # the segment's start (stream s): with stream and event, the segment's id
    t: float  # stream seconds of the best frame
    score: float
    jpeg: bytes
    width: int
    height: int
    box: Box | None = None
    first_t: float | None = None  # the segment's first and last sampled frames (stream s) …
    last_t: float | None = None
    first_box: Box | None = None
    last_box: Box | None = None
    first: bytes | None = None  # … as JPEGs, for a source without a recording (a camera)
    last: bytes | None = None
    provisional: bool = False

    @property
    def has_strip_frames(self) -> bool:
        return self.first is not None and self.last is not None

    @property
    def nbytes(self) -> int:
        """Bytes of picture stored (the JPEGs)."""
        return len(self.jpeg) + len(self.first or b"") + len(self.last or b"")

    def fields(self) -> dict[str, Any]:
        """The Redis hash (bytes values for the JPEGs)."""
        out: dict[str, Any] = {
            "v": "1",
            "event": self.event,
            "start": _num(self.start),
            "t": _num(self.t),
            "score": _num(self.score),
            "w": str(int(self.width)),
            "h": str(int(self.height)),
            "box": _box_text(self.box),
            "jpeg": self.jpeg,
            "first_t": "" if self.first_t is None else _num(self.first_t),
            "last_t": "" if self.last_t is None else _num(self.last_t),
            "first_box": _box_text(self.first_box),
            "last_box": _box_text(self.last_box),
        }
        if self.first is not None:
            out["first"] = self.first
        if self.last is not None:
            out["last"] = self.last
        return out

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> Thumbnail | None:
        """From a hash read without decoding (bytes keys and values) or decoded; None if empty or partial."""
        f = {(k.decode() if isinstance(k, (bytes, bytearray)) else str(k)): v for k, v in (raw or {}).items()}
        if "jpeg" not in f:
            return None

        def txt(name: str) -> str:
            v = f.get(name, b"")
            return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)

        def opt(name: str) -> float | None:
            v = txt(name)
            return float(v) if v else None

        def blob(name: str) -> bytes | None:
            v = f.get(name)
            return None if v is None else (bytes(v) if isinstance(v, (bytes, bytearray)) else v.encode("latin-1"))

        jpeg = blob("jpeg")
        assert jpeg is not None
        return cls(
            event=txt("event"),
            start=float(txt("start")),
            t=float(txt("t")),
            score=float(txt("score")),
            jpeg=jpeg,
            width=int(txt("w")),
            height=int(txt("h")),
            box=_parse_box(txt("box")),
            first_t=opt("first_t"),
            last_t=opt("last_t"),
            first_box=_parse_box(txt("first_box")),
            last_box=_parse_box(txt("last_box")),
            first=blob("first"),
            last=blob("last"),
        )


# ---- choosing the frames ----------------------------------------------------------------------------


@dataclass
class _Candidate:
    seg_id: str
    start: float
    thumb: Thumbnail | None = None
    stored: bool = False  # written as announced (no TTL)
    # strip frames: the segment's newest frame, not yet rendered as its ``last`` (time, box, RGB frame)
    tail: tuple[float, Box | None, np.ndarray] | None = None


LAST_EVERY_S = 5.0  # an open segment's stored last frame (strip frames) is re-rendered this often, at most


class ThumbTracker:
    """Keeps, per event, the best frame of the segment being built, and says what to write with each
    commit (:meth:`changes`). ``strip_frames``: also keep the first and last frames as JPEGs (a source
    with no recording)."""

    def __init__(self, stream_id: str, *, strip_frames: bool = False, width: int = THUMB_WIDTH):
        self.stream_id = stream_id
        self.strip_frames = bool(strip_frames)
        self.width = int(width)
        self._cands: dict[str, dict[str, _Candidate]] = {}  # event → seg id → candidate
        self._pending: dict[str, Thumbnail | None] = {}  # seg id → what to write (None: delete)
        self._previous: Clip | None = None  # the clip before the one in hand (:meth:`point`)

    # -- resume

    def wanted(self, segmenter: Any) -> str | None:
        """The id of the segment ``segmenter`` is building (whose stored picture :meth:`restore` takes)."""
        run = segmenter.running
        return None if run is None else segment_id(self.stream_id, segmenter.event, run[0])

    def restore(self, segmenter: Any, thumb: Thumbnail | None) -> None:
        """After a resume: the stored picture of the segment ``segmenter`` is building (None: none stored)."""
        run = segmenter.running
        if run is None:
            return
        sid = segment_id(self.stream_id, segmenter.event, run[0])
        if thumb is not None and abs(thumb.start - run[0]) > 1e-6:
            thumb = None
        self._cands.setdefault(segmenter.event, {})[sid] = _Candidate(sid, run[0], thumb, stored=run[2])

    # -- clips

    def observe(
        self,
        segmenter: Any,
        updates: Sequence[Any],
        *,
        clip: Clip | None = None,
        scores: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
    ) -> None:
        """After ``segmenter`` took a clip's samples (``push``; or ``flush`` / ``interrupt``, no clip) and
        gave ``updates``: fold the clip's frames (``scores``: the event's raw per-frame scores, ``boxes``
        its boxes) into the pictures of the segments concerned, and note what to write."""
        event = segmenter.event
        cands = self._cands.setdefault(event, {})
        spans: dict[str, tuple[float, float, bool, bool]] = {}  # id → (start, end, announced, closed)
        for u in updates:
            seg = u.segment
            spans[seg.id] = (seg.start, seg.end, True, u.kind == "close")
        run = segmenter.running
        if run is not None:
            sid = segment_id(self.stream_id, event, run[0])
            announced = run[2] or sid in spans
            spans[sid] = (run[0], run[1], announced, False)
        for sid, (start, end, announced, closed) in spans.items():
            cand = cands.get(sid) or _Candidate(sid, start)
            cands[sid] = cand
            changed = False
            if clip is not None and scores is not None:
                changed = self._fold(cand, event, clip, scores, boxes, start, end)
            if cand.thumb is not None and announced and not cand.stored:
                changed = True
            if closed and cand.tail is not None and cand.thumb is not None:  # its true last frame, now
                cand.thumb, changed = self._render_tail(cand, cand.thumb), True
            if changed and cand.thumb is not None:
                cand.stored = cand.stored or announced
                cand.thumb = replace(cand.thumb, provisional=not cand.stored)
                self._pending[sid] = cand.thumb
            if closed:
                del cands[sid]
        for sid in [s for s in cands if s not in spans]:  # dropped (too short), or closed earlier
            gone = cands.pop(sid)
            if not gone.stored and gone.thumb is not None:  # its provisional picture goes with it
                self._pending[sid] = None

    def point(self, segment: Segment, clip: Clip, boxes: np.ndarray | None = None) -> None:
        """A segment made whole from one clip (a scene cut, an outage): its picture is the first sampled frame
        at or after its start (the new scene; the first frame after the outage), looked for in the previous
        clip too (:meth:`after_clip`: a cut is handed to the clip being cut when it is found, which may be
        the one after the frames that show it), else the clip's last frame."""
        for c in (self._previous, clip):
            if c is None or c.stream_id != clip.stream_id:
                continue
            after = np.nonzero(c.times >= segment.start - _EPS)[0]
            if after.size:
                src, i = c, int(after[0])
                break
        else:
            src, i = clip, clip.n - 1
        thumb = self._picture(segment.event, segment.start, src, i, float(segment.score), None)
        thumb = replace(thumb, first_t=thumb.t, last_t=thumb.t)
        if self.strip_frames:
            thumb = replace(thumb, first=thumb.jpeg, last=thumb.jpeg)
        self._pending[segment.id] = thumb

    def after_clip(self, clip: Clip) -> None:
        """The clip is done with: kept (one) for :meth:`point`."""
        self._previous = clip

    def changes(self) -> dict[str, Thumbnail | None]:
        """What to write with the next commit (seg id → picture, or None: delete), and forget it."""
        out, self._pending = self._pending, {}
        return out

    # -- helpers

    def _picture(
        self, event: str, start: float, clip: Clip, i: int, score: float, boxes: np.ndarray | None
    ) -> Thumbnail:
        box = _box(boxes[i]) if boxes is not None and i < len(boxes) else None
        jpeg, w, h = render(clip.frames[i], box, width=self.width)
        return Thumbnail(event, start, float(clip.times[i]), score, jpeg, w, h, box)

    def _fold(
        self,
        cand: _Candidate,
        event: str,
        clip: Clip,
        scores: np.ndarray,
        boxes: np.ndarray | None,
        start: float,
        end: float,
    ) -> bool:
        times = clip.times
        s = np.asarray(scores, dtype=np.float64)
        inside = np.nonzero((times >= start - _EPS) & (times <= end + _EPS))[0]
        changed = False
        thumb = cand.thumb
        if inside.size:
            i = int(inside[int(np.argmax(s[inside]))])  # the first of equal maxima
            if thumb is None or s[i] > thumb.score:
                new = self._picture(event, cand.start, clip, i, float(s[i]), boxes)
                if thumb is not None:  # keep what the strip already has
                    new = replace(
                        new,
                        first_t=thumb.first_t,
                        last_t=thumb.last_t,
                        first_box=thumb.first_box,
                        last_box=thumb.last_box,
                        first=thumb.first,
                        last=thumb.last,
                    )
                thumb, changed = new, True
            a, b = int(inside[0]), int(inside[-1])
            if thumb.first_t is None or times[a] < thumb.first_t - _EPS:
                thumb = replace(thumb, first_t=float(times[a]), first_box=self._box_at(boxes, a))
                if self.strip_frames:
                    thumb = replace(thumb, first=render(clip.frames[a], thumb.first_box, width=self.width)[0])
                changed = True
            newest = thumb.last_t if cand.tail is None else cand.tail[0]
            if newest is None or times[b] > newest + _EPS:
                if not self.strip_frames:
                    thumb = replace(thumb, last_t=float(times[b]), last_box=self._box_at(boxes, b))
                    changed = True
                else:  # rendered now and then while open (LAST_EVERY_S), and when it closes
                    cand.tail = (float(times[b]), self._box_at(boxes, b), clip.frames[b])
                    if thumb.last is None or times[b] >= (thumb.last_t or 0.0) + LAST_EVERY_S - _EPS:
                        thumb, changed = self._render_tail(cand, thumb), True
            if cand.tail is not None and thumb.last_t is not None and thumb.t > thumb.last_t + _EPS:
                # the best frame is newer than the stored last one: the strip stays in time order
                if abs(cand.tail[0] - thumb.t) < _EPS:  # the same frame, the same box: the same picture
                    cand.tail = None
                    thumb = replace(thumb, last_t=thumb.t, last_box=thumb.box, last=thumb.jpeg)
                else:
                    thumb = self._render_tail(cand, thumb)
        elif thumb is None and len(times):  # nothing of it in this clip and no picture yet: the nearest frame
            i = _nearest(times, start, end)
            thumb = self._picture(event, cand.start, clip, i, float(s[i]), boxes)
            thumb = replace(thumb, first_t=thumb.t, last_t=thumb.t, first_box=thumb.box, last_box=thumb.box)
            if self.strip_frames:
                thumb = replace(thumb, first=thumb.jpeg, last=thumb.jpeg)
            changed = True
        cand.thumb = thumb
        return changed

    def _render_tail(self, cand: _Candidate, thumb: Thumbnail) -> Thumbnail:
        """``thumb`` with the candidate's newest frame (``cand.tail``, then cleared) as its last frame."""
        assert cand.tail is not None
        t, box, frame = cand.tail
        cand.tail = None
        return replace(thumb, last_t=t, last_box=box, last=render(frame, box, width=self.width)[0])

    @staticmethod
    def _box_at(boxes: np.ndarray | None, i: int) -> Box | None:
        return _box(boxes[i]) if boxes is not None and i < len(boxes) else None


def _nearest(times: np.ndarray, start: float, end: float) -> int:
    """Index of the first frame inside [start, end], else of the frame nearest to it."""
    inside = np.nonzero((times >= start - _EPS) & (times <= end + _EPS))[0]
    if inside.size:
        return int(inside[0])
    gap = np.where(times < start, start - times, times - end)
    return int(np.argmin(gap))
