"""Histograms a worker keeps and publishes in its stream's status (JSON in the meta), and the ONE place
their bucket bounds are defined: the worker fills them, ``longwatch/metrics.py`` turns them into
Prometheus histograms.

A histogram is stored as ``{"le": [bounds…], "counts": [cumulative counts…], "sum": s, "count": n}``:
``counts[i]`` is the number of observations ≤ ``le[i]`` (Prometheus' cumulative buckets; ``count`` is
the ``+Inf`` bucket). The bounds travel with the counts, so a reader never sums histograms of
different bounds (:meth:`Histogram.from_json` refuses them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["BATCH_SIZE_BUCKETS", "LATENCY_BUCKETS_S", "Histogram"]

# The wall time of one scoring call (a clip to a model pool and back), seconds.
LATENCY_BUCKETS_S: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The number of clips in the model pool's batch that scored a clip.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32)


class Histogram:
    """Cumulative bucket counts over fixed, increasing bounds, with the sum and count of observations."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]):
        b = tuple(float(x) for x in bounds)
        if not b or any(not math.isfinite(x) for x in b) or any(x >= y for x, y in zip(b, b[1:])):
            raise ValueError(f"histogram bounds must be finite and increasing, got {bounds!r}")
        self.bounds = b
        self.counts = [0] * len(b)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        v = float(value)
        if not math.isfinite(v):
            return
        for i, bound in enumerate(self.bounds):
            if v <= bound:
                self.counts[i] += 1
        self.count += 1
        self.sum += v

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s observations (same bounds only)."""
        if other.bounds != self.bounds:
            raise ValueError("cannot merge histograms of different bounds")
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.count += other.count
        self.sum += other.sum

    def as_json(self) -> dict[str, Any]:
        return {"le": list(self.bounds), "counts": list(self.counts), "sum": round(self.sum, 6), "count": self.count}

    @classmethod
    def from_json(cls, data: Any, bounds: Sequence[float]) -> Histogram | None:
        """The histogram stored as ``data`` if it is well formed and has exactly ``bounds``, else None."""
        try:
            h = cls(bounds)
            if [float(x) for x in data["le"]] != list(h.bounds):
                return None
            counts = [int(x) for x in data["counts"]]
            count, total = int(data["count"]), float(data["sum"])
        except (TypeError, KeyError, ValueError):
            return None
        if len(counts) != len(h.bounds) or any(a > b for a, b in zip(counts, counts[1:])) or counts[-1] > count:
            return None
        if min(counts) < 0 or not math.isfinite(total):
            return None
        h.counts, h.count, h.sum = counts, count, total
        return h
