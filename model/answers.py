"""What the VLM says, made usable: its free-text grounding answers parsed into clip-relative spans, clamped
to the clip, and turned into per-frame scores.

Nothing here touches the model: every function takes text or numbers and never raises on bad text
(:func:`parse_span` gives None; :func:`says_absent` tells "the model said no" from "malformed").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from longwatch.pipeline.types import Clip


@dataclass(frozen=True)
class GroundedSpan:
    """A span the model named inside a clip, in clip-relative seconds, stream seconds and UTC (clamped)."""

    event: str
    stream_id: str
    clip_index: int
    rel_start: float
    rel_end: float
    start: float
    end: float
    start_utc: datetime
    end_utc: datetime
    prob: float
    text: str


_TIME = r"\d{1,2}:\d{1,2}:\d{1,2}(?:\.\d+)?|\d{1,4}:\d{1,2}(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
_TIME_RE = re.compile(rf"(?<![\w.])({_TIME})")
_ABSENT_RE = re.compile(r"\b(none|no|never|not|nothing|null|n/a)\b", re.IGNORECASE)
_JSON_RE = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]")
_START_KEYS = ("start", "begin", "from", "start_time", "starttime", "start_sec", "start_seconds", "t0", "s")
_END_KEYS = ("end", "stop", "to", "end_time", "endtime", "end_sec", "end_seconds", "t1", "e")
_MAX_TEXT = 2000


def _seconds(tok: Any) -> float | None:
    """A number or a time string ("7", "3.5", "1:05", "00:01:05.5") → seconds; None if not one."""
    if isinstance(tok, bool):
        return None
    if isinstance(tok, (int, float)):
        v = float(tok)
        return v if math.isfinite(v) else None
    if not isinstance(tok, str):
        return None
    tok = (
        tok.strip().lower().removesuffix("seconds").removesuffix("second").removesuffix("sec").removesuffix("s").strip()
    )
    m = re.fullmatch(_TIME, tok)
    if not m:
        return None
    parts = tok.split(":")
    try:
        v = 0.0
        for p in parts:
            v = v * 60.0 + float(p)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _json_span(text: str) -> tuple[float, float] | None:
    for m in _JSON_RE.finditer(text):
        try:
            data = json.loads(m.group(0))
        except (ValueError, RecursionError):
            continue
        if isinstance(data, list) and data and isinstance(data[0], (list, dict)):
            data = data[0]
        if isinstance(data, dict):
            low = {str(k).strip().lower().replace(" ", "_"): v for k, v in data.items()}
            s = next((low[k] for k in _START_KEYS if k in low), None)
            e = next((low[k] for k in _END_KEYS if k in low), None)
            if isinstance(s, (list, tuple)) and len(s) == 2 and e is None:
                s, e = s
            s, e = _seconds(s), _seconds(e)
            if s is not None and e is not None:
                return s, e
        elif isinstance(data, list) and len(data) >= 2:
            s, e = _seconds(data[0]), _seconds(data[1])
            if s is not None and e is not None:
                return s, e
    return None


def parse_span(text: Any) -> tuple[float, float] | None:
    """Clip-relative (start, end) seconds from a model's answer, or None when there is none to be had.

    Accepts ``"3.5-7"``, ``"3.5 – 7.0 s"``, ``"from 3 to 7 seconds"``, ``"between 3 and 7"``, ``"00:03-00:07"``,
    ``'{"start": 3.5, "end": 7}'``, ``"[3.5, 7]"`` and the like: a JSON object/list first, else the first two
    times in the text. Never raises; whether None means "malformed" or "the model said no" is
    :func:`says_absent`'s call.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = text[:_MAX_TEXT]
    try:
        span = _json_span(text)
        if span is not None:
            return span
        nums = [v for v in (_seconds(m.group(1)) for m in _TIME_RE.finditer(text)) if v is not None]
    except Exception:
        return None
    if len(nums) < 2:
        return None
    return nums[0], nums[1]


def says_absent(text: Any) -> bool:
    """True when the answer says the event does not happen ("none", "no", "it does not happen") with no times."""
    if not isinstance(text, str):
        return False
    return bool(_ABSENT_RE.search(text[:_MAX_TEXT])) and not _TIME_RE.search(text[:_MAX_TEXT])


def clip_span(clip: Clip, rel_start: float, rel_end: float) -> tuple[float, float] | None:
    """Clamp clip-relative seconds to the clip ``[0, clip.end − clip.start]``; None if reversed or outside."""
    if not (math.isfinite(rel_start) and math.isfinite(rel_end)) or rel_end < rel_start:
        return None
    duration = clip.end - clip.start
    if rel_start > duration or rel_end < 0:
        return None
    return max(0.0, rel_start), min(duration, rel_end)


def frame_scores(clip: Clip, prob: float, spans: Sequence[GroundedSpan]) -> np.ndarray:
    """Per-frame scores aligned with ``clip.times``: ``prob`` on frames a span covers (all frames when there
    is no span), 0 elsewhere. A frame covers ``[t_i, t_{i+1})``, the last one up to ``clip.end``."""
    n = clip.n
    if not spans:
        return np.full(n, float(prob), dtype=np.float64)
    t = clip.times
    t_end = np.append(t[1:], clip.end)
    inside = np.zeros(n, dtype=bool)
    for s in spans:
        inside |= (t <= s.end) & ((t_end > s.start) | (t == s.start))
    return np.where(inside, float(prob), 0.0).astype(np.float64)
