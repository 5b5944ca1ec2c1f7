"""Time: PTS → stream seconds, stream epochs (UTC), clip-relative ↔ stream ↔ UTC.

Rules (see docs/ARCHITECTURE.md, "Time"):

* A frame's time is ``(pts - base) × time_base`` of its decoding session, shifted by the session's
  anchor: never ``frame_index / fps``.
* A frame without PTS (``pts is None``, as some first frames are) gets the previous frame's time plus
  one nominal frame duration (0.0 for the very first frame), and is flagged ``pts_estimated``.
* Time never goes backwards within a stream. When PTS go backwards or repeat (a wrapped or reset
  timestamp, a concatenated file, a camera reboot), the clock re-anchors so the frame lands one
  nominal frame duration after the previous one, and counts a discontinuity.
* A forward PTS jump is kept: on a file it is a real gap in what was recorded.
* Live sources re-anchor on every (re)connection: the new session starts at the wall-clock time of its
  first frame relative to the stream epoch (or the RTCP sender-report time when the server sends one),
  and never before the last frame of the previous session. A restarted worker of a live stream does
  the same from the stored epoch of the stream's first session (``Source.continue_from``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_utc(epoch: datetime, stream_seconds: float) -> datetime:
    """Absolute UTC time of a stream-seconds value."""
    return epoch + timedelta(seconds=float(stream_seconds))


def to_stream_seconds(epoch: datetime, when: datetime) -> float:
    """Stream seconds of an absolute time (inverse of :func:`to_utc`)."""
    if when.tzinfo is None:
        raise ValueError("absolute times must be timezone-aware (UTC)")
    return (when - epoch).total_seconds()


def parse_epoch(value: str | datetime | float | int | None) -> datetime | None:
    """Parse ``--start-at`` style values: ISO 8601 (``Z`` allowed) or Unix seconds. Naive = UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return UNIX_EPOCH + timedelta(seconds=float(value))
    text = str(value).strip()
    try:
        return UNIX_EPOCH + timedelta(seconds=float(text))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 time or Unix seconds: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def clip_to_stream_seconds(clip_start: float, clip_relative: float) -> float:
    """Map a clip-relative time (what the model sees: MRoPE temporal ids start at 0 per clip)
    back to stream seconds."""
    if not math.isfinite(clip_relative):
        raise ValueError(f"clip-relative time must be finite, got {clip_relative!r}")
    return float(clip_start) + float(clip_relative)


@dataclass
class StreamClock:
    """Turns decoder PTS into monotonic stream seconds, across reconnects and PTS mishaps."""

    epoch: datetime = UNIX_EPOCH
    nominal_dt: float = 1 / 30
    last_t: float | None = None
    discontinuities: int = 0
    estimated: int = 0
    sessions: int = 0
    _anchor: float = 0.0
    _base_s: float | None = None
    _offset: float = field(default=0.0, repr=False)

    def begin_session(self, *, anchor_s: float = 0.0, base_s: float | None = None) -> None:
        """Start a decoding session (a file, or one connection of a live source).

        ``anchor_s``: stream seconds where this session's time origin sits; ``base_s``: the PTS time
        (seconds) that maps to the anchor, ``None`` = the first frame's PTS.
        """
        if self.last_t is not None:
            anchor_s = max(anchor_s, self.last_t + self.nominal_dt)
        self._anchor = anchor_s
        self._base_s = base_s
        self._offset = 0.0
        self.sessions += 1

    def time_of(self, pts: int | None, time_base: Fraction | None) -> tuple[float, bool]:
        """Stream seconds of a frame, and whether it had to be estimated (no PTS)."""
        if pts is None or time_base is None:
            t = 0.0 if self.last_t is None else self.last_t + self.nominal_dt
            self.estimated += 1
            self.last_t = t
            return t, True
        pts_s = float(pts * time_base)
        if self._base_s is None:
            self._base_s = pts_s
        t = self._anchor + self._offset + (pts_s - self._base_s)
        if self.last_t is not None and t <= self.last_t:
            # PTS went backwards or repeated: re-anchor one frame after the previous time.
            self._offset += self.last_t + self.nominal_dt - t
            t = self.last_t + self.nominal_dt
            self.discontinuities += 1
        self.last_t = t
        return t, False
