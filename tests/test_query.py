"""Pages and buckets over the overlap index (pipeline/query.py) on a real Redis and a real Redis Cluster:
paging by position gives exactly the store's own overlap query, in order, each segment once, whatever
the page size, order, filters or commits landing between pages; buckets count and cover what a
brute-force pass over the segments says."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import numpy as np
import pytest

from longwatch.pipeline.query import Filters, Position, QueryError, covered_between, page, timeline
from longwatch.pipeline.types import Segment

EPOCH = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _load(store, seed: int = 7, n: int = 600) -> list[Segment]:
    """Segments of 3 streams × 2 events: short and long (several index chunks), a few starting at the
    same second on different streams/events, some open, scores spread out; one event's segments of one
    stream never overlap each other (as the segmenter writes them)."""
    rng = random.Random(seed)
    out = []
    for sid in ("cam1", "cam2", "door"):
        for ev in ("person_present", "car_present"):
            t = rng.uniform(0, 5)
            for i in range(n // 6):
                dur = rng.choice([0.0, 0.5, 2.0, 7.0, 45.0, 400.0, 1300.0])
                start = round(t, 2) if i % 17 else 100.0 * (i // 17)  # shared starts across pairs
                start = max(
                    start, out[-1].end + 0.01 if out and out[-1].stream_id == sid and out[-1].event == ev else 0
                )
                seg = Segment(sid, ev, round(start, 2), round(start + dur, 2), EPOCH, round(rng.random(), 3),
                              "open" if rng.random() < 0.05 else "closed")  # fmt: skip
                out.append(seg)
                t = seg.end + rng.uniform(0.01, 60)
    for sid in ("cam1", "cam2", "door"):
        store.bulk_load(sid, [s for s in out if s.stream_id == sid], epoch=EPOCH)
    return out


def _all_pages(store, windows, *, limit, order="asc", filters=Filters()):
    got, after, pages = [], None, 0
    while True:
        p = page(store, windows, filters=filters, limit=limit, order=order, after=after)
        pages += 1
        assert len(p.items) <= limit
        got.extend(p.items)
        if p.next is None:
            return got, pages
        after = p.next
        assert pages < 10_000


def _expected(segs, windows, filters=Filters(), order="asc"):
    keep = [
        s
        for s in segs
        if s.stream_id in windows
        and s.end >= windows[s.stream_id][0]
        and s.start <= windows[s.stream_id][1]
        and (filters.event is None or s.event == filters.event)
        and filters.keep(s)
    ]
    return sorted(keep, key=Position.of, reverse=order == "desc")


@pytest.mark.parametrize("backend", ["single", "cluster"])
def test_paging_gives_the_overlap_query_once_in_order(backend, request):
    store = request.getfixturevalue("store" if backend == "single" else "cluster_store")
    segs = _load(store)
    ids = ["cam1", "cam2", "door"]
    rng = random.Random(3)
    cases = [({sid: (-math.inf, math.inf) for sid in ids}, Filters(), 50, "asc")]
    for _ in range(6):
        lo = rng.uniform(0, 20_000)
        hi = lo + rng.choice([1, 60, 900, 7200])
        streams = rng.sample(ids, rng.randint(1, 3))
        filters = rng.choice(
            [Filters(), Filters(event="car_present"), Filters(min_score=0.5), Filters(state="open", min_score=0.1)]
        )
        cases.append(
            ({sid: (lo, hi) for sid in streams}, filters, rng.choice([1, 7, 100]), rng.choice(["asc", "desc"]))
        )
    for windows, filters, limit, order in cases:
        got, pages = _all_pages(store, windows, limit=limit, order=order, filters=filters)
        want = _expected(segs, windows, filters, order)
        assert [s.id for s in got] == [s.id for s in want], (windows, filters, limit, order)
        assert got == want  # the segments themselves, from the index alone
        assert pages == max(1, math.ceil(len(want) / limit)) or pages == math.ceil(len(want) / limit) + 1
    # the store's own overlap query agrees on a window across all streams
    every = {sid: (1000.0, 5000.0) for sid in ids}
    got, _ = _all_pages(store, every, limit=33)
    assert sorted(s.id for s in got) == sorted(s.id for s in store.query(t0=1000.0, t1=5000.0))


def test_commits_between_pages_neither_repeat_nor_skip(store):
    segs = _load(store, seed=11, n=300)
    windows = {sid: (-math.inf, math.inf) for sid in ("cam1", "cam2", "door")}
    seen: list[str] = []
    p = page(store, windows, limit=25)
    seen.extend(s.id for s in p.items)
    late = []
    while p.next is not None:
        # a commit that sorts before the position (not returned now) and one after it (returned later)
        before = Segment(
            "cam1", "person_present", p.next.start - 1e-3 if p.next.start > 1 else 0.0, p.next.start, EPOCH
        )
        after = Segment("door", "car_present", p.next.start + 5_000_000.0, p.next.start + 5_000_001.0, EPOCH)
        store.commit("cam1", [before], watermark=None)
        store.commit("door", [after], watermark=None)
        late.append(after.id)
        p = page(store, windows, limit=25, after=p.next)
        seen.extend(s.id for s in p.items)
    assert len(seen) == len(set(seen)), "a segment came twice"
    assert {s.id for s in segs} <= set(seen), "a segment present from the start was skipped"
    assert set(late) <= set(seen)


def test_bad_queries_are_refused(store):
    with pytest.raises(QueryError):
        page(store, {"cam1": (0, 1)}, order="sideways")
    with pytest.raises(QueryError):
        page(store, {"cam1": (0, 1)}, limit=0)
    with pytest.raises(QueryError):
        Filters(state="half-open")
    with pytest.raises(QueryError):
        Filters(min_score=float("nan"))


def test_covered_between_is_the_union_per_bucket():
    starts = np.array([0.0, 1.0, 10.0, 10.5, 30.0])
    ends = np.array([5.0, 3.0, 12.0, 11.0, 30.0])
    edges = np.array([0.0, 2.0, 4.0, 10.0, 11.0, 20.0, 40.0])
    assert covered_between(starts, ends, edges).tolist() == pytest.approx([2.0, 2.0, 1.0, 1.0, 1.0, 0.0])
    assert covered_between(np.array([]), np.array([]), edges).tolist() == [0.0] * 6


@pytest.mark.parametrize("backend", ["single", "cluster"])
def test_timeline_counts_and_covers_like_brute_force(backend, request):
    store = request.getfixturevalue("store" if backend == "single" else "cluster_store")
    segs = _load(store, seed=5)
    lo, hi, width = 2_000.0, 30_000.0, 700.0
    edges = [lo + i * width for i in range(int((hi - lo) / width) + 1)]
    windows = {sid: (lo, edges[-1]) for sid in ("cam1", "cam2", "door")}
    lanes = timeline(store, windows, edges)
    assert {(la.stream, la.event) for la in lanes} == {
        (s, e) for s in windows for e in ("car_present", "person_present")
    }
    for lane in lanes:
        mine = [s for s in segs if s.stream_id == lane.stream and s.event == lane.event]
        for i, (b0, b1) in enumerate(zip(edges, edges[1:])):
            assert lane.counts[i] == sum(1 for s in mine if s.start < b1 and s.end >= b0), (lane.stream, i)
            covered = sum(max(0.0, min(s.end, b1) - max(s.start, b0)) for s in mine)
            assert lane.covered_s[i] == pytest.approx(covered, abs=0.01)
        # the buckets sum to the seconds the segments cover inside the window
        total = sum(max(0.0, min(s.end, edges[-1]) - max(s.start, lo)) for s in mine)
        assert sum(lane.covered_s) == pytest.approx(total, abs=0.05)
