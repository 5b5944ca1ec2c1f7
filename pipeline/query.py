"""Reads of the overlap index for people and programs: pages of segments with a stable position
(the API's ``/events`` with ``cursor``), and per-bucket counts and covered seconds (``/timeline``).

Both read only the index (:mod:`.keys`: one sorted set per stream and event whose members carry the
segment's own fields), so neither touches a segment hash.

**Pages.** Segments are ordered by the key ``(start, stream, event, id)`` (ascending, or descending with
``order="desc"``); a page ends at its last key, and the next page starts strictly after it, so paging
gives every segment once however large the window, and segments committed meanwhile land in the page
their key belongs to. Each (stream, event) index is scanned from the window's (or the position's) end in
score order, in batches, only until it holds ``limit`` segments whose place is certain: a segment is
certain once the scan has passed its start (an index entry's score is never below its segment's start,
and every segment overlapping the window has an entry within one index chunk of the window's start).
A page therefore costs about ``limit`` index entries per (stream, event), not the window's size.

**Buckets.** :func:`timeline` reads every segment overlapping the window once and counts, per bucket,
the segments that overlap it and the seconds of it they cover (the union, so overlapping segments of one
event are not counted twice).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import StoreError
from .keys import check_name, num, segment_from_member, text
from .types import Segment

if TYPE_CHECKING:
    from .store import SegmentStore

__all__ = ["ORDERS", "STATES", "Filters", "Lane", "Page", "Position", "find_segment", "page", "timeline"]

ORDERS = ("asc", "desc")
STATES = ("open", "closed")
_EPS = 1e-6


class QueryError(StoreError, ValueError):
    """A query that cannot be answered as asked (a bad order, state, score or bucket)."""


@dataclass(frozen=True, order=True)
class Position:
    """Where a page ended: the sort key of its last segment."""

    start: float
    stream: str
    event: str
    id: str

    @classmethod
    def of(cls, seg: Segment) -> Position:
        return cls(seg.start, seg.stream_id, seg.event, seg.id)


@dataclass(frozen=True)
class Filters:
    """What a segment must be to count, besides overlapping its stream's window."""

    event: str | None = None
    min_score: float | None = None
    state: str | None = None

    def __post_init__(self) -> None:
        if self.event is not None:
            check_name("event name", self.event)
        if self.state is not None and self.state not in STATES:
            raise QueryError(f"state must be one of {', '.join(STATES)}, got {self.state!r}")
        if self.min_score is not None and not math.isfinite(self.min_score):
            raise QueryError(f"min_score must be a finite number, got {self.min_score!r}")

    def keep(self, seg: Segment) -> bool:
        return (self.min_score is None or seg.score >= self.min_score) and (
            self.state is None or seg.state == self.state
        )


@dataclass(frozen=True)
class Page:
    items: list[Segment]
    next: Position | None  # None: there is nothing after this page


Windows = dict[str, tuple[float, float]]  # stream → (lo, hi) stream seconds, inclusive; ±inf = unbounded


def _pairs(store: SegmentStore, windows: Windows, event: str | None) -> list[tuple[str, str]]:
    if event is not None:
        return [(sid, event) for sid in windows]
    pipe = store.r.pipeline(transaction=False)
    for sid in windows:
        pipe.smembers(store.keys.events(sid))
    out: list[tuple[str, str]] = []
    for sid, evs in zip(windows, pipe.execute()):
        out.extend((sid, text(ev)) for ev in sorted(text(e) for e in evs))
    return out


def _bound(x: float) -> str:
    return "-inf" if x == -math.inf else "+inf" if x == math.inf else num(x)


class _Scan:
    """One (stream, event) index read in score order, in batches, keeping what the filters keep."""

    def __init__(self, store: SegmentStore, sid: str, event: str, lo: float, hi: float, after, desc: bool, f: Filters):
        self.key = store.keys.idx(sid, event)
        self.sid, self.event, self.lo, self.hi, self.after, self.desc, self.f = sid, event, lo, hi, after, desc, f
        chunk = store.index_chunk
        low = lo - chunk - _EPS * chunk if lo != -math.inf else -math.inf
        high = hi
        if after is not None:  # nothing before the position can follow it
            if desc:
                high = min(high, after.start)
            else:
                low = max(low, after.start)
        self.low, self.high = low, high
        self.offset = 0
        self.frontier = -math.inf if not desc else math.inf
        self.done = high < low
        self.found: dict[str, Segment] = {}

    def request(self, pipe, batch: int) -> None:
        if self.desc:
            pipe.zrevrangebyscore(
                self.key, _bound(self.high), _bound(self.low), start=self.offset, num=batch, withscores=True
            )
        else:
            pipe.zrangebyscore(
                self.key, _bound(self.low), _bound(self.high), start=self.offset, num=batch, withscores=True
            )

    def take(self, rows: list, batch: int) -> None:
        self.offset += len(rows)
        if len(rows) < batch:
            self.done = True
        for member, score in rows:
            self.frontier = float(score)
            m = text(member)
            seg_id = m.split("|", 1)[0]
            if seg_id in self.found:
                continue
            seg = segment_from_member(self.sid, self.event, m)
            if seg.end < self.lo or seg.start > self.hi or not self.f.keep(seg):
                continue
            if self.after is not None:
                pos = Position.of(seg)
                if (pos <= self.after) if not self.desc else (pos >= self.after):
                    continue
            self.found[seg_id] = seg

    def certain(self) -> list[Segment]:
        """The segments whose place is known: every segment that sorts before them has been seen."""
        if self.done:
            return list(self.found.values())
        if self.desc:
            return [s for s in self.found.values() if s.start > self.frontier]
        return [s for s in self.found.values() if s.start < self.frontier]


def page(
    store: SegmentStore,
    windows: Windows,
    *,
    filters: Filters = Filters(),
    limit: int = 100,
    order: str = "asc",
    after: Position | None = None,
) -> Page:
    """Up to ``limit`` segments overlapping each stream's window, in ``order``, strictly after ``after``
    (a previous page's :attr:`Page.next`)."""
    if order not in ORDERS:
        raise QueryError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if limit < 1:
        raise QueryError(f"limit must be at least 1, got {limit}")
    desc = order == "desc"

    def run() -> Page:
        scans = [
            _Scan(store, sid, ev, *windows[sid], after, desc, filters)
            for sid, ev in _pairs(store, windows, filters.event)
        ]
        # First reads sized for the page spread over the indexes; an index that needs more reads twice
        # as much each time (a page drawn mostly from one stream costs a few round trips, not one
        # oversized read of every index).
        full = min(2 * limit + 16, 5000)
        first = min(full, max(32, 2 * math.ceil(limit / max(1, len(scans))) + 16))
        batches = {id(s): first for s in scans}
        live = [s for s in scans if not s.done]
        while live:
            pipe = store.r.pipeline(transaction=False)
            for s in live:
                s.request(pipe, batches[id(s)])
            for s, rows in zip(live, pipe.execute()):
                s.take(rows, batches[id(s)])
                batches[id(s)] = min(5000, batches[id(s)] * 2)
            live = [s for s in live if not s.done and len(s.certain()) < limit]
        items = [seg for s in scans for seg in s.certain()]
        items.sort(key=Position.of, reverse=desc)
        more = len(items) > limit or any(not s.done or len(s.found) > len(s.certain()) for s in scans)
        items = items[:limit]
        return Page(items, Position.of(items[-1]) if items and more else None)

    return store._retrying(run)


def find_segment(store: SegmentStore, streams: list[str], seg_id: str) -> Segment | None:
    """The segment ``seg_id`` of whichever of ``streams`` holds it (one pipelined round trip to look)."""
    if not streams:
        return None
    pipe = store.r.pipeline(transaction=False)
    for sid in streams:
        pipe.exists(store.keys.seg(sid, seg_id))
    for sid, there in zip(streams, pipe.execute()):
        if there:
            return store.get(sid, seg_id)
    return None


# ---- buckets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lane:
    """One stream's one event over the buckets: segments overlapping each, and seconds of it covered."""

    stream: str
    event: str
    counts: list[int]
    covered_s: list[float]


def covered_between(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Seconds of each [edges[i], edges[i+1]) covered by the union of the intervals [starts, ends]."""
    if len(starts) == 0:
        return np.zeros(len(edges) - 1)
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    # merge overlapping intervals into disjoint ones
    reach = np.maximum.accumulate(e)
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] > reach[:-1]
    group = np.cumsum(new) - 1
    ms = s[new]
    me = np.zeros(len(ms))
    np.maximum.at(me, group, e)
    me = np.maximum.accumulate(me)
    # F(x): covered seconds below x, from the disjoint intervals; coverage of a bucket = F(b1) - F(b0)
    lengths = np.concatenate([[0.0], np.cumsum(me - ms)])

    def F(x: np.ndarray) -> np.ndarray:
        i = np.searchsorted(ms, x, side="right")  # intervals starting at or before x
        full = lengths[np.maximum(i - 1, 0)]
        part = np.where(i > 0, np.clip(x - ms[np.maximum(i - 1, 0)], 0, None), 0.0)
        last_len = np.where(i > 0, me[np.maximum(i - 1, 0)] - ms[np.maximum(i - 1, 0)], 0.0)
        return full + np.minimum(part, last_len)

    values = F(edges)
    return np.diff(values)


def timeline(
    store: SegmentStore,
    windows: Windows,
    edges: Iterable[float] | dict[str, np.ndarray],
    *,
    filters: Filters = Filters(),
) -> list[Lane]:
    """Per stream and event, over the buckets between consecutive ``edges`` (stream seconds; a dict gives
    each stream its own edges, e.g. one UTC axis seen through each stream's epoch): how many segments
    overlap each bucket (a segment touching two buckets counts in both) and how many seconds of it they
    cover. Buckets are half-open, [edge, next edge)."""
    shared = None if isinstance(edges, dict) else np.asarray(list(edges), dtype=float)

    def run() -> list[Lane]:
        pairs = _pairs(store, windows, filters.event)
        chunk = store.index_chunk
        pipe = store.r.pipeline(transaction=False)
        for sid, ev in pairs:
            lo, hi = windows[sid]
            low = lo - chunk - _EPS * chunk if lo != -math.inf else -math.inf
            pipe.zrangebyscore(store.keys.idx(sid, ev), _bound(low), _bound(hi))
        lanes = []
        for (sid, ev), members in zip(pairs, pipe.execute()):
            lo, hi = windows[sid]
            spans: dict[str, tuple[float, float]] = {}
            for m in members:
                # the member's own fields (id|k|end|start|score|state|epoch): no Segment built per entry
                seg_id, _k, end_s, start_s, score_s, state, _epoch = text(m).split("|", 6)
                if seg_id in spans:
                    continue
                start, end = float(start_s), float(end_s)
                if end < lo or start > hi:
                    continue
                if filters.min_score is not None and float(score_s) < filters.min_score:
                    continue
                if filters.state is not None and state != filters.state:
                    continue
                spans[seg_id] = (start, end)
            ed = shared if shared is not None else np.asarray(edges[sid], dtype=float)  # type: ignore[index]
            starts = np.array([a for a, _b in spans.values()], dtype=float)
            ends = np.array([b for _a, b in spans.values()], dtype=float)
            # a segment overlaps [b0, b1) when it starts before b1 and ends at or after b0
            n_started = np.searchsorted(np.sort(starts), ed[1:], side="left")
            n_ended = np.searchsorted(np.sort(ends), ed[:-1], side="left")
            counts = (n_started - n_ended).astype(int)
            covered = covered_between(starts, ends, ed)
            lanes.append(Lane(sid, ev, counts.tolist(), [round(float(c), 3) for c in covered]))
        return lanes

    return store._retrying(run)
