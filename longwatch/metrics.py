"""Prometheus metrics of ``longwatch serve`` (``GET /metrics``), read from Redis at scrape time.

Everything comes from the store, never from a worker's memory: each stream's meta (the status its
worker and the controller publish: :meth:`~longwatch.pipeline.worker.StreamReport.as_status`) and its
segment counts (``<prefix>:{<stream>}:counts``, kept exact by the store's transactions), read for all
streams in two round trips (:meth:`SegmentStore.streams` with ``counts=True``). :func:`render` builds
a fresh registry per call (no global state); it blocks on Redis, so an async caller runs it in a thread.

Metrics (``stream``: the stream id)::

    longwatch_redis_up                                 1 if Redis answered this scrape, else 0 (and nothing else)
    longwatch_stream_up{stream,state}                  1 for the stream's current state, 0 for the others
    longwatch_stream_fps{stream,kind="decode|sampled"} frames decoded / kept in clips per wall second
    longwatch_stream_lag_seconds{stream}               live streams: wall clock − time of the last clip's end
    longwatch_stream_queue_depth{stream}               clips waiting for the model in the worker's queue
    longwatch_stream_footage_seconds{stream}           stream seconds processed
    longwatch_stream_dropped_clips_total{stream}       clips a live stream shed (this worker run)
    longwatch_stream_reconnects_total{stream}          reconnections of the source (this worker run)
    longwatch_stream_restarts_total{stream}            worker restarts after a death or loss
    longwatch_segments{stream,event}                   segments stored now (retention lowers it)
    longwatch_model_latency_seconds{backend}           histogram: wall time of a scoring call, all streams
    longwatch_model_batch_size{backend}                histogram: clips in the batch that scored a clip

Counters count from the start of the worker's current run (a restarted worker starts over), which
Prometheus' ``rate``/``increase`` read as a counter reset.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from redis.exceptions import RedisError

from longwatch.pipeline.errors import StoreError
from longwatch.pipeline.histograms import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S, Histogram
from longwatch.pipeline.store import SegmentStore, StreamInfo

__all__ = ["STREAM_STATES", "StoreCollector", "render"]

log = logging.getLogger(__name__)

# Every state a stream's status may say (worker and controller); longwatch_stream_up has one series each.
STREAM_STATES = (
    "starting",
    "running",
    "waiting",
    "restarting",
    "lost",
    "paused",
    "stopped",
    "done",
    "failed",
    "removed",
    "superseded",
)


def _num(meta: dict[str, Any], key: str) -> float | None:
    """A numeric status field, or None where it is absent, empty (``lag_s`` of a file) or not a number."""
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _histograms(infos: list[StreamInfo], field: str, bounds: tuple[float, ...]) -> dict[str, Histogram]:
    """The ``field`` histograms (backend → stored histogram) of every stream, summed per backend."""
    out: dict[str, Histogram] = {}
    for info in infos:
        per_backend = info.meta.get(field)
        if not isinstance(per_backend, dict):
            continue
        for backend, data in per_backend.items():
            h = Histogram.from_json(data, bounds)
            if h is None:  # malformed, or written with other bounds: not summable
                continue
            if backend in out:
                out[backend].merge(h)
            else:
                out[backend] = h
    return out


def _histogram_family(name: str, doc: str, hists: dict[str, Histogram], unit: str = "") -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=["backend"], unit=unit)
    for backend, h in sorted(hists.items()):
        buckets = [(floatToGoString(b), float(c)) for b, c in zip(h.bounds, h.counts)]
        buckets.append(("+Inf", float(h.count)))
        fam.add_metric([backend], buckets, h.sum)
    return fam


class StoreCollector(Collector):
    """A Prometheus collector over a :class:`SegmentStore`: every stream's status and counts, read at
    each ``collect()``. Redis away → only ``longwatch_redis_up 0`` (never an exception)."""

    def __init__(self, store: SegmentStore):
        self.store = store

    def collect(self) -> Iterator[Metric]:
        try:
            infos = self.store.streams(counts=True, watermarks=False)
        except (RedisError, StoreError, OSError) as exc:
            log.debug("metrics: Redis unreachable: %s", exc)
            infos = None
        redis_up = GaugeMetricFamily("longwatch_redis_up", "1 if Redis answered this scrape, else 0")
        redis_up.add_metric([], 0.0 if infos is None else 1.0)
        yield redis_up
        if infos is None:
            return
        yield from self._streams(infos)

    def _streams(self, infos: list[StreamInfo]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "longwatch_stream_up", "1 for the stream's current state, 0 for the others", labels=["stream", "state"]
        )
        fps = GaugeMetricFamily(
            "longwatch_stream_fps",
            "frames per wall second: decoded from the source (decode), kept in clips by the sampler (sampled)",
            labels=["stream", "kind"],
        )
        lag = GaugeMetricFamily(
            "longwatch_stream_lag_seconds",
            "a live stream's lag: wall clock minus the time of the end of its last scored clip",
            labels=["stream"],
            unit="seconds",
        )
        depth = GaugeMetricFamily(
            "longwatch_stream_queue_depth", "clips waiting for the model in the worker's queue", labels=["stream"]
        )
        footage = GaugeMetricFamily(
            "longwatch_stream_footage_seconds", "stream seconds processed", labels=["stream"], unit="seconds"
        )
        dropped = CounterMetricFamily(
            "longwatch_stream_dropped_clips", "clips a live stream shed (worker's current run)", labels=["stream"]
        )
        reconnects = CounterMetricFamily(
            "longwatch_stream_reconnects", "reconnections of the source (worker's current run)", labels=["stream"]
        )
        restarts = CounterMetricFamily(
            "longwatch_stream_restarts", "worker restarts after a death or a loss", labels=["stream"]
        )
        segments = GaugeMetricFamily(
            "longwatch_segments", "segments stored now, per event (retention lowers it)", labels=["stream", "event"]
        )
        for info in infos:
            sid, meta = info.stream_id, info.meta
            state = meta.get("state") or "unknown"
            states = STREAM_STATES if state in STREAM_STATES else (*STREAM_STATES, str(state))
            for st in states:
                up.add_metric([sid, st], 1.0 if st == state else 0.0)
            for kind, key in (("decode", "decode_fps"), ("sampled", "sampled_fps")):
                if (v := _num(meta, key)) is not None:
                    fps.add_metric([sid, kind], v)
            for fam, key in (
                (lag, "lag_s"),
                (depth, "queue_depth"),
                (footage, "footage_s"),
                (dropped, "dropped_clips"),
                (reconnects, "reconnects"),
                (restarts, "restarts"),
            ):
                if (v := _num(meta, key)) is not None:
                    fam.add_metric([sid], v)
            for event, n in sorted((info.counts or {}).items()):
                segments.add_metric([sid, event], float(n))
        yield from (up, fps, lag, depth, footage, dropped, reconnects, restarts, segments)
        yield _histogram_family(
            "longwatch_model_latency_seconds",
            "wall time of one scoring call (a clip to the model pool and back), as the workers see it",
            _histograms(infos, "model_latency_s", LATENCY_BUCKETS_S),
            unit="seconds",
        )
        yield _histogram_family(
            "longwatch_model_batch_size",
            "clips in the model pool's batch that scored a clip",
            _histograms(infos, "model_batch_size", BATCH_SIZE_BUCKETS),
        )


def render(store: SegmentStore) -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, read from ``store`` now: ``(body, content type)``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return generate_latest(registry), CONTENT_TYPE_LATEST
