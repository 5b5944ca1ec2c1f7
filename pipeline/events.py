"""The events file: which events to find, with which backend, and how to segment them.

A YAML list (or a mapping with one key, ``events``) of events, validated as a whole before any
stream is touched::

    - event: person_present            # identifier-like, unique
      backend: detector                # default; or qwen2_5_vl
      detector:
        class: person                  # a COCO class (darknet coco.names spelling; common aliases accepted)
        min_score: 0.4                 # detector confidence that counts as "present" (default 0.4)
        min_box_area: 0.002            # optional: box area as a fraction of the frame
        roi: [0.0, 0.2, 1.0, 1.0]      # optional: x0, y0, x1, y1 fractions; a box counts if its centre is inside
      on: 0.4                          # score that opens a segment (default: min_score, or threshold)
      off: 0.28                        # score below which it closes (default: on × 0.7)
      min_duration_s: 1.0              # shorter segments are dropped (default 1.0)
      merge_gap_s: 2.0                 # segments closer than this are merged (default 2.0)
      max_sample_gap_s: null           # optional: a hole in sample times longer than this ends a segment

    - event: fall
      backend: qwen2_5_vl
      prompt: "a person falls to the ground"
      threshold: 0.5                   # yes-probability that counts as the event

:func:`load_events` raises :class:`~pipeline.errors.EventsFileError` listing every problem with its
line (malformed YAML, unknown or missing keys, bad values, unknown COCO classes with close matches,
duplicate names). YAML 1.2 booleans are used, so ``on:`` / ``off:`` / ``yes`` / ``no`` stay strings
and keys, as a reader would expect (PyYAML's YAML 1.1 default would turn the key ``on`` into ``True``).

Detector event scores (see ``model.detector.DetectorBackend``): per frame, the highest confidence of a
box of the event's class that passes ``min_box_area`` and ``roi`` and scores at least
:attr:`EventSpec.score_floor` (``min(min_score, off)``, so that the hysteresis band between ``off`` and
``on`` is visible to the segmenter), else 0.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from .errors import EventsFileError

# The 80 COCO classes in darknet's coco.names order and spelling (the file YOLOv3-tiny ships with);
# the index is the detector's class id.
COCO_CLASSES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorbike",
    "aeroplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "sofa",
    "pottedplant",
    "bed",
    "diningtable",
    "toilet",
    "tvmonitor",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
# Other common spellings of the same classes (torchvision / ultralytics / plain English).
COCO_ALIASES: dict[str, str] = {
    "motorcycle": "motorbike",
    "airplane": "aeroplane",
    "aircraft": "aeroplane",
    "plane": "aeroplane",
    "couch": "sofa",
    "potted plant": "pottedplant",
    "dining table": "diningtable",
    "table": "diningtable",
    "tv": "tvmonitor",
    "tv monitor": "tvmonitor",
    "television": "tvmonitor",
    "monitor": "tvmonitor",
    "hair dryer": "hair drier",
    "cellphone": "cell phone",
    "mobile phone": "cell phone",
    "phone": "cell phone",
    "doughnut": "donut",
    "fridge": "refrigerator",
    "bike": "bicycle",
    "pedestrian": "person",
    "people": "person",
    "ball": "sports ball",
    "hotdog": "hot dog",
    "laptop computer": "laptop",
}
_COCO_INDEX = {name: i for i, name in enumerate(COCO_CLASSES)}

BACKENDS = ("detector", "qwen2_5_vl", "motion")
MOTION_ON = 0.5  # a motion event's score at exactly its min_area (see pipeline/motion.py)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
DEFAULT_MIN_SCORE = 0.4
DEFAULT_OFF_RATIO = 0.7


def _normalize_class(name: str) -> str:
    return " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


def coco_class_id(name: str) -> int:
    """Index of a COCO class (darknet spelling or an alias, any case; ``_``/``-`` as spaces). KeyError if unknown."""
    key = _normalize_class(name)
    key = COCO_ALIASES.get(key, key)
    if key in _COCO_INDEX:
        return _COCO_INDEX[key]
    squashed = key.replace(" ", "")  # "pottedplant" written "potted_plant", "trafficlight" …
    for cls, i in _COCO_INDEX.items():
        if cls.replace(" ", "") == squashed:
            return i
    raise KeyError(name)


def suggest_classes(name: str, n: int = 3) -> list[str]:
    """Close COCO class names for a misspelt one (difflib), canonical spellings, best first."""
    key = _normalize_class(name)
    pool = list(COCO_CLASSES) + list(COCO_ALIASES)
    out: list[str] = []
    for match in difflib.get_close_matches(key, pool, n=n + 3, cutoff=0.6):
        canon = COCO_ALIASES.get(match, match)
        if canon not in out:
            out.append(canon)
    if not out:  # a word of a multi-word class ("light" → "traffic light")
        out = [
            c
            for c in COCO_CLASSES
            if key and any(w.startswith(key) or key.startswith(w) for w in c.split() if len(w) > 2)
        ]
    return out[:n]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)


def _check_zone(v: Any) -> list[list[float]] | None:
    """A polygon of at least 3 ``[x, y]`` points, fractions of the frame's width and height."""
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) < 3:
        raise ValueError(f"must be a polygon: a list of at least 3 [x, y] points (fractions of the frame), got {v!r}")
    out: list[list[float]] = []
    for i, p in enumerate(v):
        if (
            not isinstance(p, (list, tuple))
            or len(p) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p)
        ):
            raise ValueError(f"point {i + 1} must be [x, y] (two numbers), got {p!r}")
        if not all(0.0 <= float(x) <= 1.0 for x in p):
            raise ValueError(f"point {i + 1} must be fractions of the frame between 0 and 1, got {list(p)}")
        out.append([float(p[0]), float(p[1])])
    xs, ys = [p[0] for p in out], [p[1] for p in out]
    area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(out))))
    if area <= 0.0:
        raise ValueError(f"the polygon {out} encloses no area")
    return out


def _check_roi(v: Any) -> list[float] | None:
    if v is None:
        return v
    if (
        not isinstance(v, (list, tuple))
        or len(v) != 4
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    ):
        raise ValueError(f"must be four numbers [x0, y0, x1, y1] (fractions of the frame), got {v!r}")
    x0, y0, x1, y1 = (float(x) for x in v)
    if not all(0.0 <= x <= 1.0 for x in (x0, y0, x1, y1)):
        raise ValueError(f"values must be fractions between 0 and 1, got {[x0, y0, x1, y1]}")
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"needs x0 < x1 and y0 < y1, got {[x0, y0, x1, y1]}")
    return [x0, y0, x1, y1]


class MotionParams(_Strict):
    """``motion:`` block of an event with ``backend: motion`` (all optional)."""

    min_area: float = Field(
        0.001, gt=0.0, le=1.0, strict=True, description="moving area that counts, as a fraction of the frame"
    )
    sensitivity: float = Field(0.5, ge=0.0, le=1.0, strict=True, description="0: only strong changes … 1: faint ones")
    zone: list[list[float]] | None = Field(
        None, description="polygon [[x, y], …] (fractions); motion outside is ignored"
    )
    roi: list[float] | None = Field(None, description="[x0, y0, x1, y1] (fractions): a rectangular zone")

    _zone = field_validator("zone", mode="before")(classmethod(lambda cls, v: _check_zone(v)))
    _roi = field_validator("roi", mode="before")(classmethod(lambda cls, v: _check_roi(v)))

    @model_validator(mode="after")
    def _one_area(self) -> MotionParams:
        if self.zone is not None and self.roi is not None:
            raise ValueError("give either 'zone' (a polygon) or 'roi' (a rectangle), not both")
        return self

    @property
    def polygon(self) -> list[list[float]] | None:
        """The zone as a polygon (``roi`` as its 4 corners), or None (the whole frame)."""
        if self.roi is not None:
            x0, y0, x1, y1 = self.roi
            return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
        return self.zone


class DetectorParams(_Strict):
    """``detector:`` block of an event."""

    class_name: str = Field(alias="class", description="COCO class, darknet coco.names spelling after validation")
    min_score: float = Field(DEFAULT_MIN_SCORE, ge=0.0, le=1.0, strict=True)
    min_box_area: float | None = Field(None, ge=0.0, le=1.0, strict=True, description="fraction of the frame area")
    roi: list[float] | None = Field(None, description="[x0, y0, x1, y1] as fractions of width/height")
    zone: list[list[float]] | None = Field(
        None, description="polygon [[x, y], …] (fractions); a box counts if its bottom centre is inside"
    )
    min_count: int = Field(1, ge=1, le=1000, strict=True, description="boxes needed at once (2: two or more people)")

    _zone = field_validator("zone", mode="before")(classmethod(lambda cls, v: _check_zone(v)))

    @field_validator("class_name", mode="before")
    @classmethod
    def _class_known(cls, v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"must be a COCO class name (text), got {v!r}")
        try:
            return COCO_CLASSES[coco_class_id(v)]
        except KeyError:
            close = suggest_classes(v)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"unknown COCO class {v!r}{hint} (the detector knows the 80 COCO classes: "
                f"{', '.join(COCO_CLASSES[:8])}, …)"
            ) from None

    _roi = field_validator("roi", mode="before")(classmethod(lambda cls, v: _check_roi(v)))

    @property
    def class_id(self) -> int:
        return _COCO_INDEX[self.class_name]


class EventSpec(_Strict):
    """One event. After validation ``on`` and ``off`` are always numbers (defaults filled in)."""

    event: str
    backend: Literal["detector", "qwen2_5_vl", "motion"] = "detector"
    description: str = ""
    detector: DetectorParams | None = None
    motion: MotionParams | None = None
    prompt: str | None = None
    threshold: float | None = Field(None, gt=0.0, le=1.0, strict=True)
    on: float | None = Field(None, gt=0.0, le=1.0, strict=True)
    off: float | None = Field(None, ge=0.0, le=1.0, strict=True)
    min_duration_s: float = Field(1.0, ge=0.0, strict=True)
    merge_gap_s: float = Field(2.0, ge=0.0, strict=True)
    max_sample_gap_s: float | None = Field(None, gt=0.0, strict=True)
    # An object leaving the picture is only partly visible: the detector loses it while it still
    # moves. Motion (mean |Δ| of the frame's thumbnail, 0..1) at or above hold_on_motion keeps an
    # open event alive for up to hold_max_s after its last real detection. It never opens one.
    hold_on_motion: float | None = Field(0.02, gt=0.0, le=1.0, strict=True)
    hold_max_s: float = Field(1.0, ge=0.0, strict=True)

    @field_validator("event", mode="before")
    @classmethod
    def _name(cls, v: Any) -> Any:
        if not isinstance(v, str) or not _NAME_RE.match(v.strip()):
            raise ValueError(
                f"event name must be identifier-like (letters, digits, '_'; not starting with a digit; "
                f"at most 64 characters), got {v!r}"
            )
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | None) -> str | None:
        if v is not None and not v:
            raise ValueError("prompt must not be empty")
        return v

    @model_validator(mode="after")
    def _backend_fields(self) -> EventSpec:
        base: float | None
        if self.motion is not None and self.backend != "motion":
            raise ValueError(f"a 'motion:' block belongs to backend 'motion', not {self.backend!r}")
        if self.backend == "detector":
            if self.detector is None:
                raise ValueError("backend 'detector' needs a 'detector:' block, e.g. detector: {class: person}")
            wrong = [k for k in ("prompt", "threshold") if getattr(self, k) is not None]
            if wrong:
                raise ValueError(f"{' and '.join(map(repr, wrong))} belong to backend 'qwen2_5_vl', not 'detector'")
            base = self.detector.min_score
        elif self.backend == "motion":
            wrong = [k for k in ("detector", "prompt", "threshold") if getattr(self, k) is not None]
            if wrong:
                raise ValueError(f"{' and '.join(map(repr, wrong))} do not belong to backend 'motion'")
            if self.motion is None:
                self.motion = MotionParams()
            # a motion score is 0.5 exactly when the moving area is min_area (pipeline/motion.py)
            base = MOTION_ON
            self.hold_on_motion = None  # it is motion itself
        else:
            missing = [k for k in ("prompt", "threshold") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"backend 'qwen2_5_vl' needs {' and '.join(map(repr, missing))}")
            if self.detector is not None:
                raise ValueError("a 'detector:' block belongs to backend 'detector', not 'qwen2_5_vl'")
            base = self.threshold
        if self.on is None:
            if base is None or base <= 0.0:
                raise ValueError("the 'on' threshold defaults to min_score, which is 0: set 'on' (> 0) explicitly")
            self.on = float(base)
        if self.off is None:
            self.off = round(self.on * DEFAULT_OFF_RATIO, 6)
        if self.off > self.on:
            raise ValueError(f"'off' ({self.off}) must not exceed 'on' ({self.on})")
        return self

    @property
    def on_score(self) -> float:
        """``on``, which validation always fills in."""
        assert self.on is not None, "EventSpec.on is filled in by validation"
        return self.on

    @property
    def off_score(self) -> float:
        """``off``, which validation always fills in."""
        assert self.off is not None, "EventSpec.off is filled in by validation"
        return self.off

    @property
    def score_floor(self) -> float:
        """Detector confidences below this are reported as 0: ``min(min_score, off)``."""
        if self.detector is None:
            return 0.0
        return min(self.detector.min_score, float(self.off_score))


class EventsSpec(BaseModel):
    """All events of a run. ``source`` names where they came from (for messages)."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventSpec] = Field(min_length=1)
    source: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _unique(self) -> EventsSpec:
        seen: dict[str, int] = {}
        for i, ev in enumerate(self.events):
            if ev.event in seen:
                raise ValueError(f"duplicate event name {ev.event!r} (events #{seen[ev.event] + 1} and #{i + 1})")
            seen[ev.event] = i
        return self

    def __iter__(self) -> Iterator[EventSpec]:  # type: ignore[override]
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def names(self) -> list[str]:
        return [e.event for e in self.events]

    def get(self, name: str) -> EventSpec:
        for e in self.events:
            if e.event == name:
                return e
        raise KeyError(name)

    def by_backend(self, backend: str) -> list[EventSpec]:
        return [e for e in self.events if e.backend == backend]

    @property
    def detector_events(self) -> list[EventSpec]:
        return self.by_backend("detector")

    @property
    def motion_events(self) -> list[EventSpec]:
        return self.by_backend("motion")

    @property
    def model_backends(self) -> list[str]:
        """The backends that run in a model pool (``motion`` runs in the stream worker itself)."""
        return sorted({e.backend for e in self.events} - {"motion"})


# ----------------------------------------------------------------------------------------------
# YAML with line numbers


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans (true/false only): ``on``/``off``/``yes``/``no`` stay strings."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int], dups: list[tuple[tuple, int]]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            sub = path + (key,)
            if key in seen:
                dups.append((sub, k.start_mark.line + 1))
            seen.add(key)
            lines.setdefault(sub, k.start_mark.line + 1)
            _walk(v, sub, lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(item, path + (i,), lines, dups)


def _yaml_error(exc: yaml.YAMLError, source: str) -> EventsFileError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    what = " ".join(x for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x) or str(exc)
    where = f"line {line}, column {mark.column + 1}: " if mark is not None else ""
    return EventsFileError(
        f"events file {source}: {where}malformed YAML: {what}",
        path=source,
        line=line,
        problems=[f"{where}malformed YAML: {what}"],
    )


def _line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


_KEYS = {
    "event": sorted(a for f, info in EventSpec.model_fields.items() for a in [info.alias or f]),
    "detector": sorted(a for f, info in DetectorParams.model_fields.items() for a in [info.alias or f]),
    "motion": sorted(a for f, info in MotionParams.model_fields.items() for a in [info.alias or f]),
}


def _describe(err: ErrorDetails, label: str, field: str) -> str:
    typ, msg, loc = err["type"], err["msg"], err["loc"]
    last = loc[-1] if loc else None
    where = f"{label}: " + (f"{field}: " if field else "")
    if typ == "missing":
        parent = field.rsplit(".", 1)[0] if "." in field else ""
        where = f"{label}: " + (f"{parent}: " if parent else "")
        return f"{where}missing required key {last!r}"
    if typ == "extra_forbidden":
        parent = field.rsplit(".", 1)[0] if "." in field else ""
        allowed = _KEYS[parent if parent in ("detector", "motion") else "event"]
        close = difflib.get_close_matches(str(last), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        where = f"{label}: " + (f"{parent}: " if parent else "")
        return f"{where}unknown key {last!r}{hint} (allowed: {', '.join(allowed)})"
    if typ in ("model_type", "dict_type"):
        return f"{where}must be a mapping of keys to values, got {err.get('input')!r}"
    if typ.startswith("value_error") or typ == "assertion_error":
        return f"{where}{msg.removeprefix('Value error, ').removeprefix('Assertion failed, ')}"
    got = err.get("input")
    return f"{where}{msg[0].lower() + msg[1:] if msg else typ} (got {got!r})"


def parse_events(text: str | bytes, *, source: str = "<string>") -> EventsSpec:
    """Parse and validate events YAML text. Raises :class:`EventsFileError`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventsFileError(f"events file {source}: not UTF-8 text ({exc})", path=source) from None
    try:
        loader = _Loader(text)  # the reader refuses characters YAML does not allow, here already
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    finally:
        loader.dispose()

    if data is None:
        raise EventsFileError(
            f"events file {source} is empty: it needs a list of events, e.g. "
            "'- event: person_present\\n  detector: {class: person}'",
            path=source,
        )
    lines: dict[tuple, int] = {}
    dups: list[tuple[tuple, int]] = []
    if node is not None:
        _walk(node, (), lines, dups)
    if isinstance(data, dict):
        extra = [k for k in data if k != "events"]
        if extra or "events" not in data:
            what = f"unknown top-level key {extra[0]!r}" if extra else "no 'events' key"
            line = lines.get((extra[0],)) if extra else 1
            raise EventsFileError(
                f"events file {source}: line {line}: {what}; the file is a list of events, "
                "or a mapping with the single key 'events'",
                path=source,
                line=line,
            )
        items = data["events"]
        lines = {k[1:]: v for k, v in lines.items() if k[:1] == ("events",)}
        dups = [(p[1:], ln) for p, ln in dups if p[:1] == ("events",)]
    else:
        items = data
    if not isinstance(items, list):
        raise EventsFileError(
            f"events file {source}: line 1: must be a list of events (each '- event: name …'), "
            f"got {type(items).__name__}",
            path=source,
            line=1,
        )

    problems: list[tuple[int, str]] = []

    def label_of(i: Any) -> str:
        if isinstance(i, int) and 0 <= i < len(items):
            item = items[i]
            name = item.get("event") if isinstance(item, dict) else None
            return f"event {name!r} (#{i + 1})" if isinstance(name, str) else f"event #{i + 1}"
        return "events"

    for path, line in dups:
        label = label_of(path[0]) if path else "events"
        problems.append((line, f"{label}: key {'.'.join(map(str, path[1:]))!r} appears more than once"))
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        name = item.get("event") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in first:
                problems.append(
                    (
                        lines.get((i,), 0) or 0,
                        f"event #{i + 1}: duplicate event name {name!r} (first used by event #{first[name] + 1})",
                    )
                )
            else:
                first[name] = i

    spec: EventsSpec | None = None
    try:
        spec = EventsSpec(events=items, source=source)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if loc[:1] == ("events",):
                loc = loc[1:]
            if not loc and err["type"] == "too_short":
                problems.append((1, "the list of events is empty"))
                continue
            if not loc and err["type"].startswith("value_error") and "duplicate" in err["msg"]:
                continue  # reported above, with its line
            idx = loc[0] if loc else None
            field = ".".join(str(p) for p in loc[1:])
            problems.append((_line_of(lines, loc) or 0, _describe(err, label_of(idx), field)))
    if problems:
        problems.sort(key=lambda p: p[0])
        texts = [(f"line {ln}: " if ln else "") + msg for ln, msg in problems]
        head = f"events file {source} is invalid ({len(texts)} problem{'s' if len(texts) > 1 else ''}):"
        raise EventsFileError(
            head + "\n  " + "\n  ".join(texts),
            path=source,
            line=next((ln for ln, _ in problems if ln), None),
            problems=texts,
        )
    assert spec is not None
    return spec


def load_events(path_or_text: str | os.PathLike | bytes) -> EventsSpec:
    """Load and validate an events file, given as a path or as the YAML text itself.

    A :class:`~pathlib.Path` (or any ``os.PathLike``) is always a file. A ``str`` is a file name when it
    has no newline and either names an existing file or ends in ``.yaml``/``.yml``; otherwise it is
    YAML text. Raises :class:`~pipeline.errors.EventsFileError` (a ``ConfigError``/``ValueError``).
    """
    if isinstance(path_or_text, bytes):
        return parse_events(path_or_text)
    if isinstance(path_or_text, os.PathLike) or (
        isinstance(path_or_text, str)
        and "\n" not in path_or_text
        and path_or_text.strip()
        and (path_or_text.strip().lower().endswith((".yaml", ".yml")) or os.path.isfile(path_or_text))
    ):
        path = Path(path_or_text)
        if not path.exists():
            raise EventsFileError(f"events file {path} does not exist", path=str(path))
        if not path.is_file():
            raise EventsFileError(f"events file {path} is not a regular file", path=str(path))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EventsFileError(f"events file {path} cannot be read: {exc.strerror or exc}", path=str(path)) from None
        return parse_events(data, source=str(path))
    if not isinstance(path_or_text, str):
        raise EventsFileError(f"events: expected a path or YAML text, got {type(path_or_text).__name__}")
    return parse_events(path_or_text)


def default_events_path() -> Path:
    """The events file that ships with longwatch (``pipeline/default_events.yaml``)."""
    return Path(__file__).resolve().with_name("default_events.yaml")


def default_events() -> EventsSpec:
    return load_events(default_events_path())
