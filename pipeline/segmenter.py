"""Segmenter: per-time event scores of one (stream, event) → second-level event segments.

A :class:`Segmenter` is a small state machine fed, one ``push`` per clip, with sample times in
**stream seconds** (clip-relative model times + the clip's start, converted by the caller) and scores
in ``[0, 1]``. It returns :class:`SegmentUpdate` records (``open`` / ``update`` / ``close``) that a
store and its live feed can apply directly. Plain Python; no Ray, no Redis.

Semantics
---------

Samples
    Times must be finite and strictly increasing within a push; scores finite and in ``[0, 1]``
    (else :class:`~pipeline.errors.SegmenterError`). Across pushes, samples at or before the last
    processed time are ignored, so overlapping clips and replays after a restart are harmless.

Hysteresis
    A segment opens on a sample with ``score >= on``, stays open while samples score ``>= off``, and
    its run ends on the first sample with ``score < off``. A sample between ``off`` and ``on`` keeps an
    open run alive but never starts one (flicker between the thresholds does not split a segment).

Boundaries
    Each boundary lies at the **midpoint** between the last sample on one side and the first sample on
    the other, so the error is at most half a sampling interval. A segment that is on at the first
    sample of the stream (or the first sample after a hole, below) starts at that sample's time; one
    still open at :meth:`Segmenter.flush` ends at the last sample time it was on.

Merge gap
    When a run ends, its tentative end is held back. If a new run starts (``score >= on``) and the gap
    from the tentative end to the new start is ``<= merge_gap_s``, the two are one segment: same start,
    so same :attr:`Segment.id`. The close is emitted once no later opening could still merge, i.e. once
    a sample at least ``merge_gap_s`` after the tentative end has been seen, or at flush.

Minimum duration
    Merging comes first, then the minimum: a segment is announced only once ``end - start`` reaches
    ``min_duration_s`` (with ``end`` the last on-sample time while it is running, or its tentative end
    while a close is held back). Ends only ever grow, so an announced segment is never retracted;
    shorter segments are dropped silently.

Holes (``max_sample_gap_s``)
    When two consecutive samples are more than ``max_sample_gap_s`` apart (a PTS jump, a camera
    outage), nothing is bridged: a running segment ends at its last sample plus half the interval that
    preceded it (the last sample alone when that interval is unknown), a held-back close is emitted,
    and the first sample after the hole is treated like the first sample of the stream.

Score
    A segment's score is the maximum sample score within it.

Updates (what a subscriber sees)
    Every emitted segment gets exactly one ``open`` (state ``"open"``), then zero or more ``update``
    (state ``"open"``, end and score non-decreasing), then exactly one ``close`` (state ``"closed"``,
    the final values). Per push, a segment that is still running gets at most one record: ``open`` if it
    was announced during this push, else ``update`` if its end or score changed. A segment announced and
    closed within one push gets ``open`` (its final values) directly followed by ``close``. Records are
    in time order. The closed segments do not depend on how samples are split into pushes.

Interruption (a restarted live stream)
    :meth:`Segmenter.interrupt` says the stream stopped after the last sample and will resume later
    on the same axis, after an outage: a running segment closes at its last on-sample (the last
    frame seen), a held-back close is emitted, and the next sample is treated like the first of the
    stream. Nothing is bridged across the outage, whatever ``max_sample_gap_s`` is.

Resume
    :meth:`Segmenter.state` is a JSON-serializable dict; :meth:`Segmenter.from_state` rebuilds a
    segmenter that continues exactly: a run split anywhere, with a state round-trip in the middle,
    emits the same records as an uninterrupted run with the same split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from .errors import ConfigError, SegmenterError, SegmenterStateError
from .timebase import UNIX_EPOCH
from .types import Segment

UPDATE_KINDS = ("open", "update", "close")
STATE_VERSION = 1
# Tolerance for comparisons of durations and gaps built from sums of float times (1 ns).
_EPS = 1e-9

__all__ = ["STATE_VERSION", "UPDATE_KINDS", "SegmentUpdate", "Segmenter"]


@dataclass(frozen=True)
class SegmentUpdate:
    """One change to a segment: ``open`` and ``update`` carry state "open", ``close`` state "closed"."""

    kind: str
    segment: Segment

    def __post_init__(self) -> None:
        if self.kind not in UPDATE_KINDS:
            raise SegmenterError(f"segment update kind must be one of {UPDATE_KINDS}, got {self.kind!r}")
        if not isinstance(self.segment, Segment):
            raise SegmenterError(f"a segment update needs a Segment, got {type(self.segment).__name__}")
        expected = "closed" if self.kind == "close" else "open"
        if self.segment.state != expected:
            raise SegmenterError(
                f"a {self.kind!r} update needs a segment in state {expected!r}, got {self.segment.state!r}"
            )

    @property
    def id(self) -> str:
        return self.segment.id


def _check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"segmenter {name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"segmenter {name} must be finite, got {value!r}")
    if low is not None and v < low:
        raise ConfigError(f"segmenter {name} must be >= {low}, got {value!r}")
    if high is not None and v > high:
        raise ConfigError(f"segmenter {name} must be <= {high}, got {value!r}")
    return v


class Segmenter:
    """Hysteresis + merge gap + minimum duration over per-time scores of one (stream, event).

    See the module docstring for the exact semantics.
    """

    def __init__(
        self,
        stream_id: str,
        event: str,
        *,
        on: float,
        off: float,
        min_duration_s: float = 0.0,
        merge_gap_s: float = 0.0,
        max_sample_gap_s: float | None = None,
        epoch: datetime = UNIX_EPOCH,
    ) -> None:
        if not isinstance(stream_id, str) or not stream_id:
            raise ConfigError(f"segmenter stream_id must be a non-empty string, got {stream_id!r}")
        if not isinstance(event, str) or not event:
            raise ConfigError(f"segmenter event must be a non-empty string, got {event!r}")
        self.on = _check_number("on", on, low=0.0, high=1.0)
        self.off = _check_number("off", off, low=0.0, high=1.0)
        if self.on <= 0.0:
            raise ConfigError(f"segmenter on threshold must be > 0 (else everything is an event), got {on!r}")
        if self.off > self.on:
            raise ConfigError(f"segmenter off threshold ({off!r}) must not exceed the on threshold ({on!r})")
        self.min_duration_s = _check_number("min_duration_s", min_duration_s, low=0.0)
        self.merge_gap_s = _check_number("merge_gap_s", merge_gap_s, low=0.0)
        if max_sample_gap_s is None:
            self.max_sample_gap_s: float | None = None
        else:
            self.max_sample_gap_s = _check_number("max_sample_gap_s", max_sample_gap_s, low=0.0)
            if self.max_sample_gap_s <= 0.0:
                raise ConfigError(f"segmenter max_sample_gap_s must be > 0 or None, got {max_sample_gap_s!r}")
        if not isinstance(epoch, datetime) or epoch.tzinfo is None:
            raise ConfigError(f"segmenter epoch must be a timezone-aware datetime, got {epoch!r}")
        self.stream_id = stream_id
        self.event = event
        self.epoch = epoch

        self._last_t: float | None = None  # last processed sample time
        self._prev_dt: float | None = None  # interval between the last two samples (None: unknown / hole)
        self._seg: dict[str, Any] | None = None  # the segment being built, see _new_seg
        self._finished = False
        self._broken = False  # interrupted: the next sample starts afresh (see interrupt)

    # ------------------------------------------------------------------ public API

    @property
    def last_time(self) -> float | None:
        """Stream seconds of the last processed sample (None before the first)."""
        return self._last_t

    @property
    def finished(self) -> bool:
        """True once :meth:`flush` has run."""
        return self._finished

    @property
    def current(self) -> Segment | None:
        """The announced, not yet closed segment (state "open"), or None."""
        seg = self._seg
        if seg is None or not self._long_enough(seg["start"], self._shown_end(seg)):
            return None
        return self._segment(seg, self._shown_end(seg), "open")

    @property
    def running(self) -> tuple[float, float, bool] | None:
        """The segment being built, announced or not yet: ``(start, last, announced)`` with ``last`` its
        last on-sample (or its tentative end while a close is held back); None when there is none. Its
        id is already known (stream, event, start), so a caller can keep things about it (its best frame,
        :mod:`.thumbs`) from its first sample on."""
        seg = self._seg
        if seg is None:
            return None
        return seg["start"], self._shown_end(seg), seg["shown"] is not None

    def push(self, times: np.ndarray, scores: np.ndarray) -> list[SegmentUpdate]:
        """Feed one clip's samples (stream seconds, scores in [0, 1]); return the resulting updates."""
        if self._finished:
            raise SegmenterError(f"{self.stream_id}/{self.event}: push after flush (the stream has ended)")
        t_arr, s_arr = self._validate(times, scores)
        out: list[SegmentUpdate] = []
        if self._last_t is not None:
            keep = t_arr > self._last_t
            t_arr, s_arr = t_arr[keep], s_arr[keep]
        for t, s in zip(t_arr.tolist(), s_arr.tolist()):
            self._step(float(t), float(s), out)
        self._report_running(out)
        return out

    def flush(self, end_t: float | None = None) -> list[SegmentUpdate]:
        """End of stream: close what is open (at its last on-sample time) or held back.

        ``end_t`` (optional) is where the stream ended, in stream seconds; it must not precede the last
        processed sample. A second flush returns nothing; a push after flush raises.
        """
        if self._finished:
            return []
        if end_t is not None:
            try:
                e = float(end_t)
            except (TypeError, ValueError) as exc:
                raise SegmenterError(f"flush end_t must be a number, got {end_t!r}") from exc
            if not math.isfinite(e):
                raise SegmenterError(f"flush end_t must be finite, got {end_t!r}")
            if self._last_t is not None and e < self._last_t:
                raise SegmenterError(f"flush end_t {e} precedes the last processed sample at {self._last_t}")
        out = self._close_at_last_on()
        self._finished = True
        return out

    def interrupt(self) -> list[SegmentUpdate]:
        """The stream stopped after the last processed sample and will go on after an outage (a
        restarted live stream): close what is open at its last on-sample, or what is held back, and
        treat the next sample like the first of the stream. Idempotent; unlike :meth:`flush`, pushes
        may follow."""
        if self._finished:
            return []
        out = self._close_at_last_on()
        self._prev_dt = None
        self._broken = self._last_t is not None
        return out

    def _close_at_last_on(self) -> list[SegmentUpdate]:
        """Close the open segment at its last on-sample (or emit the held-back close)."""
        out: list[SegmentUpdate] = []
        seg = self._seg
        if seg is not None:
            if seg["phase"] == "active":
                seg["end"] = seg["last_on"]
            self._finalize(out)
        return out

    def state(self) -> dict[str, Any]:
        """JSON-serializable snapshot; :meth:`from_state` resumes from it exactly."""
        return {
            "version": STATE_VERSION,
            "stream_id": self.stream_id,
            "event": self.event,
            "params": {
                "on": self.on,
                "off": self.off,
                "min_duration_s": self.min_duration_s,
                "merge_gap_s": self.merge_gap_s,
                "max_sample_gap_s": self.max_sample_gap_s,
            },
            "epoch": self.epoch.isoformat(),
            "last_t": self._last_t,
            "prev_dt": self._prev_dt,
            "finished": self._finished,
            "interrupted": self._broken,
            "segment": None if self._seg is None else dict(self._seg, shown=_copy_list(self._seg["shown"])),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Segmenter:
        """Rebuild a segmenter from :meth:`state` (after a JSON round-trip or not)."""
        if not isinstance(state, dict):
            raise SegmenterStateError(f"segmenter state must be a dict, got {type(state).__name__}")
        version = state.get("version")
        if version != STATE_VERSION:
            raise SegmenterStateError(f"segmenter state version {version!r} is not {STATE_VERSION}")
        try:
            params = state["params"]
            epoch = datetime.fromisoformat(state["epoch"])
            self = cls(
                state["stream_id"],
                state["event"],
                on=params["on"],
                off=params["off"],
                min_duration_s=params["min_duration_s"],
                merge_gap_s=params["merge_gap_s"],
                max_sample_gap_s=params["max_sample_gap_s"],
                epoch=epoch,
            )
            last_t = _opt_float(state["last_t"], "last_t")
            prev_dt = _opt_float(state["prev_dt"], "prev_dt")
            finished = state["finished"]
            broken = state.get("interrupted", False)  # absent in states written before interrupt()
            raw_seg = state["segment"]
        except SegmenterStateError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise SegmenterStateError(f"malformed segmenter state: {exc!r}") from exc
        if not isinstance(finished, bool):
            raise SegmenterStateError(f"segmenter state 'finished' must be a bool, got {finished!r}")
        if not isinstance(broken, bool):
            raise SegmenterStateError(f"segmenter state 'interrupted' must be a bool, got {broken!r}")
        if prev_dt is not None and prev_dt <= 0:
            raise SegmenterStateError(f"segmenter state 'prev_dt' must be > 0, got {prev_dt!r}")
        seg = None if raw_seg is None else _check_seg(raw_seg, last_t)
        if finished and seg is not None:
            raise SegmenterStateError("a finished segmenter state cannot hold a segment")
        if broken and seg is not None:
            raise SegmenterStateError("an interrupted segmenter state cannot hold a segment")
        self._last_t, self._prev_dt, self._finished, self._seg = last_t, prev_dt, finished, seg
        self._broken = broken
        return self

    # ------------------------------------------------------------------ internals

    def _validate(self, times: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
        try:
            t_arr = np.asarray(times, dtype=np.float64)
            s_arr = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SegmenterError(f"{self.stream_id}/{self.event}: times and scores must be numeric: {exc}") from exc
        if t_arr.ndim != 1 or s_arr.ndim != 1:
            raise SegmenterError(
                f"{self.stream_id}/{self.event}: times and scores must be 1-D, got shapes {t_arr.shape} and {s_arr.shape}"
            )
        if len(t_arr) != len(s_arr):
            raise SegmenterError(f"{self.stream_id}/{self.event}: {len(t_arr)} times but {len(s_arr)} scores")
        if not np.all(np.isfinite(t_arr)):
            raise SegmenterError(f"{self.stream_id}/{self.event}: sample times must be finite")
        if len(t_arr) > 1 and not np.all(np.diff(t_arr) > 0):
            i = int(np.argmin(np.diff(t_arr) > 0))
            raise SegmenterError(
                f"{self.stream_id}/{self.event}: sample times must be strictly increasing within a push "
                f"(t[{i}]={t_arr[i]} then t[{i + 1}]={t_arr[i + 1]})"
            )
        if not np.all(np.isfinite(s_arr)):
            raise SegmenterError(f"{self.stream_id}/{self.event}: scores must be finite (got NaN or inf)")
        if len(s_arr) and (s_arr.min() < 0.0 or s_arr.max() > 1.0):
            raise SegmenterError(
                f"{self.stream_id}/{self.event}: scores must be in [0, 1], got range [{s_arr.min()}, {s_arr.max()}]"
            )
        return t_arr, s_arr

    @staticmethod
    def _new_seg(start: float, t: float, s: float) -> dict[str, Any]:
        # phase "active": the run is on, `last_on` its last on-sample; "pending": the run ended at the
        # tentative `end`, close held back for the merge gap. `shown` is [end, score] last emitted
        # (None while the segment has not been announced).
        return {"phase": "active", "start": start, "last_on": t, "end": None, "score": s, "shown": None}

    def _step(self, t: float, s: float, out: list[SegmentUpdate]) -> None:
        prev = self._last_t
        if self._broken:  # after interrupt(): like the first sample of the stream
            prev, self._broken = None, False
        hole = prev is not None and self.max_sample_gap_s is not None and t - prev > self.max_sample_gap_s + _EPS
        if hole:
            seg = self._seg
            if seg is not None:
                if seg["phase"] == "active":
                    half = self._prev_dt / 2.0 if self._prev_dt is not None else 0.0
                    seg["end"] = seg["last_on"] + half
                self._finalize(out)
            prev = None
            self._prev_dt = None

        seg = self._seg
        if seg is None:
            if s >= self.on:
                start = t if prev is None else (prev + t) / 2.0
                self._seg = self._new_seg(start, t, s)
        elif seg["phase"] == "active":
            if s >= self.off:
                seg["last_on"] = t
                seg["score"] = max(seg["score"], s)
            else:
                seg["phase"] = "pending"
                seg["end"] = (seg["last_on"] + t) / 2.0
        elif s >= self.on:  # pending and a new run starts; prev is set (a hole would have finalized)
            assert prev is not None
            new_start = (prev + t) / 2.0
            if new_start - seg["end"] <= self.merge_gap_s + _EPS:
                seg["phase"] = "active"
                seg["last_on"] = t
                seg["end"] = None
                seg["score"] = max(seg["score"], s)
            else:
                self._finalize(out)
                self._seg = self._new_seg(new_start, t, s)

        seg = self._seg
        # No later opening can merge once a sample merge_gap_s past the tentative end has been seen:
        # any later run starts after this sample.
        if seg is not None and seg["phase"] == "pending" and t - seg["end"] >= self.merge_gap_s + _EPS:
            self._finalize(out)

        if prev is not None:
            self._prev_dt = t - prev
        self._last_t = t

    def _long_enough(self, start: float, end: float) -> bool:
        return end - start >= self.min_duration_s - _EPS

    @staticmethod
    def _shown_end(seg: dict[str, Any]) -> float:
        return seg["last_on"] if seg["phase"] == "active" else seg["end"]

    def _segment(self, seg: dict[str, Any], end: float, state: str) -> Segment:
        return Segment(
            stream_id=self.stream_id,
            event=self.event,
            start=seg["start"],
            end=end,
            epoch=self.epoch,
            score=seg["score"],
            state=state,
        )

    def _finalize(self, out: list[SegmentUpdate]) -> None:
        """Close the current segment at seg["end"] (set by the caller); drop it if too short."""
        seg = self._seg
        self._seg = None
        assert seg is not None and seg["end"] is not None
        end = seg["end"]
        if not self._long_enough(seg["start"], end):
            return
        if seg["shown"] is None:
            out.append(SegmentUpdate("open", self._segment(seg, end, "open")))
        out.append(SegmentUpdate("close", self._segment(seg, end, "closed")))

    def _report_running(self, out: list[SegmentUpdate]) -> None:
        """At the end of a push: announce or update the running segment (at most one record)."""
        seg = self._seg
        if seg is None:
            return
        end = self._shown_end(seg)
        if not self._long_enough(seg["start"], end):
            return
        snapshot = [end, seg["score"]]
        if seg["shown"] is None:
            out.append(SegmentUpdate("open", self._segment(seg, end, "open")))
        elif snapshot != seg["shown"]:
            out.append(SegmentUpdate("update", self._segment(seg, end, "open")))
        seg["shown"] = snapshot


def _copy_list(value: list | None) -> list | None:
    return None if value is None else list(value)


def _opt_float(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SegmenterStateError(f"segmenter state {name!r} must be a number or null, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise SegmenterStateError(f"segmenter state {name!r} must be finite, got {value!r}")
    return v


def _check_seg(raw: Any, last_t: float | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SegmenterStateError(f"segmenter state 'segment' must be a dict or null, got {raw!r}")
    phase = raw.get("phase")
    if phase not in ("active", "pending"):
        raise SegmenterStateError(f"segmenter state segment phase must be 'active' or 'pending', got {phase!r}")
    try:
        start = _opt_float(raw["start"], "segment.start")
        last_on = _opt_float(raw["last_on"], "segment.last_on")
        end = _opt_float(raw["end"], "segment.end")
        score = _opt_float(raw["score"], "segment.score")
        shown = raw["shown"]
    except KeyError as exc:
        raise SegmenterStateError(f"segmenter state segment lacks {exc}") from exc
    if start is None or last_on is None or score is None or last_t is None:
        raise SegmenterStateError("segmenter state segment needs start, last_on, score and a last_t")
    if (end is None) != (phase == "active"):
        raise SegmenterStateError(f"segmenter state segment end {end!r} does not fit phase {phase!r}")
    if not (start <= last_on <= last_t) or (end is not None and not last_on <= end <= last_t):
        raise SegmenterStateError(
            f"segmenter state segment times are inconsistent: start={start} last_on={last_on} end={end} last_t={last_t}"
        )
    if not 0.0 <= score <= 1.0:
        raise SegmenterStateError(f"segmenter state segment score must be in [0, 1], got {score!r}")
    if shown is not None:
        if not (isinstance(shown, list) and len(shown) == 2):
            raise SegmenterStateError(f"segmenter state segment 'shown' must be [end, score] or null, got {shown!r}")
        shown = [_opt_float(shown[0], "segment.shown[0]"), _opt_float(shown[1], "segment.shown[1]")]
    return {"phase": phase, "start": start, "last_on": last_on, "end": end, "score": score, "shown": shown}
