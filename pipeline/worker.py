"""One stream, end to end, without Ray: source → clips → scores → segments → store.

The Ray stream-worker actor is a thin shell around :class:`StreamProcessor`; tests and the
single-process path use it directly. Scoring is injected (``score_fn(clip) -> {event: scores}``),
so the same loop runs against a local detector or a Ray Serve model pool.

Exactly-once: after each clip, the clip's segment changes and the stream's watermark (next clip's
grid time, clip index, every segmenter's state) are committed in one Redis transaction. A worker
restarted after a crash reads the watermark, resumes the file at that clip boundary with the same
sampler decisions and segmenter state, and rewrites nothing but what came after: segment ids are
deterministic, so a replayed clip overwrites, never duplicates.

Backpressure: a reader thread decodes and samples into a bounded queue. For a file, a full queue
blocks the reader (a slow model slows decoding). For a live source, a full queue drops the oldest
waiting clip and counts it (a slow model sheds load instead of growing memory or lag).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from .config import Settings
from .errors import LongwatchError, SourceError
from .events import EventsSpec
from .retry import Backoff, retry_call
from .sampler import sample_clips
from .secrets import redact
from .segmenter import Segmenter, SegmentUpdate
from .source import Source
from .types import Clip, Segment

log = logging.getLogger(__name__)

ScoreFn = Callable[[Clip], dict[str, np.ndarray]]
SCORE_BACKOFF = Backoff(initial_s=0.5, cap_s=8.0)  # 0.5, 1, 2, 4 s between the 5 attempts
_END = object()


class _ScoreFailed(Exception):
    """Internal: ``score_fn`` raised ``args[0]`` (not one of our typed errors), so it may be retried."""


@dataclass
class StreamReport:
    stream_id: str
    uri: str
    state: str = "starting"
    clips: int = 0
    footage_s: float = 0.0
    wall_s: float = 0.0
    dropped_clips: int = 0
    segments_committed: int = 0
    resumed_from: float | None = None
    error: str | None = None
    lag_s: float | None = None
    fps: float = 0.0

    def as_status(self) -> dict:
        return {
            "state": self.state,
            "clips": self.clips,
            "footage_s": round(self.footage_s, 3),
            "wall_s": round(self.wall_s, 3),
            "dropped_clips": self.dropped_clips,
            "segments_committed": self.segments_committed,
            "error": self.error or "",
            "lag_s": "" if self.lag_s is None else round(self.lag_s, 3),
            "fps": round(self.fps, 3),
            "speed": round(self.footage_s / self.wall_s, 2) if self.wall_s > 0 else 0.0,
        }


class StreamProcessor:
    """Runs one stream to its end (file) or until stopped (live), committing as it goes."""

    def __init__(
        self,
        stream_id: str,
        uri: str,
        *,
        settings: Settings,
        events: EventsSpec,
        store,
        score_fn: ScoreFn,
        start_at: str | None = None,
        max_pending_clips: int = 4,
        on_clip: Callable[[StreamReport], None] | None = None,
    ):
        self.stream_id = stream_id
        self.uri = uri  # as given: ``${VAR}`` references unexpanded; only Source.open expands them
        self.shown_uri = redact(uri)  # what status, logs and the store see (:mod:`.secrets`)
        self.settings = settings
        self.events = events
        self.store = store
        self.score_fn = score_fn
        self.start_at = start_at
        self.max_pending = max_pending_clips
        self.on_clip = on_clip
        self.report = StreamReport(stream_id=stream_id, uri=self.shown_uri)
        self._stop = threading.Event()
        self._source: Source | None = None

    def stop(self) -> None:
        self._stop.set()
        if self._source is not None:
            self._source.stop()

    # ------------------------------------------------------------------------------------------

    def _segmenters(self, epoch: datetime, saved: dict | None) -> dict[str, Segmenter]:
        out = {}
        for ev in self.events.events:
            if saved and ev.event in saved:
                out[ev.event] = Segmenter.from_state(saved[ev.event])
            else:
                out[ev.event] = Segmenter(
                    self.stream_id,
                    ev.event,
                    on=ev.on_score,
                    off=ev.off_score,
                    min_duration_s=ev.min_duration_s,
                    merge_gap_s=ev.merge_gap_s,
                    max_sample_gap_s=ev.max_sample_gap_s,
                    epoch=epoch,
                )
        return out

    def _status(self, **extra) -> None:
        try:
            self.store.set_status(self.stream_id, **self.report.as_status(), **extra)
        except Exception as exc:  # status is best effort; segments and watermark are not
            log.debug("status update failed: %s", exc)

    def run(self) -> StreamReport:
        rep = self.report
        started = time.perf_counter()
        wm = self.store.watermark(self.stream_id) or {}
        try:
            src = Source.open(self.uri, config=self.settings.source, start_at=self.start_at)
        except SourceError as exc:
            rep.state, rep.error = "failed", str(exc)
            self._status()
            raise
        self._source = src
        if self._stop.is_set():
            src.stop()
        if not src.live and wm.get("done"):
            rep.state = "done"
            rep.footage_s = float(wm.get("footage_s", 0.0))
            src.close()
            self._status()
            return rep
        resume_at = wm.get("next_clip_t") if (not src.live and wm) else None
        start_index = int(wm["clip_index"]) + 1 if wm.get("clip_index") is not None else 0
        saved_states = wm.get("segmenters") if wm else None
        segmenters = self._segmenters(src.epoch, saved_states)
        self._holds: dict[str, float | None] = dict(wm.get("holds") or {})
        rep.resumed_from = resume_at
        rep.state = "running"
        self.store.register(self.stream_id, epoch=src.epoch, source=self.shown_uri)
        if self.settings.runtime.retention_s is not None:
            self.store.set_retention(self.stream_id, self.settings.runtime.retention_s)
        self._status()

        pending: queue.Queue = queue.Queue(maxsize=self.max_pending)
        holder: dict = {}
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                for clip in sample_clips(
                    src,
                    self.settings.sampler,
                    stream_id=self.stream_id,
                    start_index=start_index,
                    resume_at=resume_at,
                    on_sampler=lambda s: holder.setdefault("sampler", s),
                ):
                    item = (clip, holder["sampler"].next_clip_t)
                    while not self._stop.is_set():
                        try:
                            pending.put(item, timeout=0.2)
                            break
                        except queue.Full:
                            if src.live:  # shed the oldest waiting clip, count it
                                try:
                                    pending.get_nowait()
                                    rep.dropped_clips += 1
                                except queue.Empty:
                                    pass
                    if self._stop.is_set():
                        return
            except BaseException as exc:  # handed to the consumer
                errors.append(exc)
            finally:
                pending.put(_END)

        reader = threading.Thread(target=produce, name=f"reader-{self.stream_id}", daemon=True)
        reader.start()
        last_t = resume_at or 0.0
        try:
            while True:
                item = pending.get()
                if item is _END:
                    break
                clip, next_clip_t = item
                self._process(clip, next_clip_t, segmenters, src)
                last_t = clip.end
                rep.wall_s = time.perf_counter() - started
                if self.on_clip:
                    self.on_clip(rep)
            reader.join(timeout=5)
            if errors:
                raise errors[0]
            if self._stop.is_set():
                rep.state = "stopped"
                self._status()
                return rep
            # End of a file: close what is open and mark the stream done, atomically.
            end_t = max(last_t, float(wm.get("footage_s", 0.0)))
            updates: list[SegmentUpdate] = []
            for seg in segmenters.values():
                updates.extend(seg.flush(end_t))
            self._commit(
                updates,
                {
                    "clip_index": rep.clips + start_index - 1,
                    "next_clip_t": end_t,
                    "done": True,
                    "footage_s": end_t,
                    "segmenters": {k: s.state() for k, s in segmenters.items()},
                    "holds": self._holds,
                },
                src.epoch,
            )
            rep.state = "done"
        except LongwatchError as exc:
            rep.state, rep.error = "failed", redact(str(exc))
            self._status()
            raise
        finally:
            self._stop.set()
            src.stop()
            reader.join(timeout=5)
            rep.wall_s = time.perf_counter() - started
        self._status()
        return rep

    def _process(self, clip: Clip, next_clip_t: float | None, segmenters: dict[str, Segmenter], src: Source) -> None:
        rep = self.report
        t0 = time.perf_counter()
        scores = self._score(clip)
        updates: list[SegmentUpdate] = []
        for name, seg in segmenters.items():
            values = scores.get(name)
            if values is None:
                continue
            values = self._hold_on_motion(name, clip, np.asarray(values, dtype=np.float64))
            updates.extend(seg.push(clip.times, values))
        cuts = [
            Segment(self.stream_id, "scene_cut", t, t, epoch=clip.epoch, score=1.0) for t in clip.meta.get("cuts", ())
        ]
        self._commit(
            updates,
            {
                "clip_index": clip.index,
                "next_clip_t": next_clip_t if next_clip_t is not None else clip.end,
                "footage_s": clip.end,
                "segmenters": {k: s.state() for k, s in segmenters.items()},
                "holds": self._holds,
            },
            clip.epoch,
            cuts,
        )
        rep.clips += 1
        rep.footage_s = clip.end
        dt = time.perf_counter() - t0
        rep.fps = clip.n / dt if dt > 0 else 0.0
        if src.live:
            rep.lag_s = (datetime.now(UTC) - clip.utc(clip.end - clip.start)).total_seconds()
        if rep.clips % 5 == 1:
            self._status()

    def _score(self, clip: Clip, attempts: int = 5) -> dict[str, np.ndarray]:
        """Score a clip; a model replica that dies or times out is retried with backoff (the pool
        restarts it), so the clip is delayed, not lost. Our own typed errors are not retried, and
        :meth:`stop` cuts a wait short (the last error is raised)."""

        def score_once() -> dict[str, np.ndarray]:
            try:
                return self.score_fn(clip)
            except LongwatchError:
                raise
            except Exception as exc:
                raise _ScoreFailed(exc) from exc

        def on_retry(_attempt: int, failure: BaseException, delay: float) -> None:
            exc = failure.args[0]
            log.warning(
                "%s: scoring clip %d failed (%s: %s); retrying in %.1fs",
                self.stream_id,
                clip.index,
                type(exc).__name__,
                exc,
                delay,
            )

        try:
            return retry_call(
                score_once,
                retry_on=_ScoreFailed,
                backoff=SCORE_BACKOFF,
                attempts=attempts,
                on_retry=on_retry,
                stop_event=self._stop,
            )
        except _ScoreFailed as failure:
            raise failure.args[0] from None

    def _hold_on_motion(self, name: str, clip: Clip, scores: np.ndarray) -> np.ndarray:
        """Keep an open event alive while its object still moves out of view (see EventSpec)."""
        ev = self.events.get(name)
        if ev.hold_on_motion is None or clip.motion is None:
            return scores
        out = scores.copy()
        last = self._holds.get(name)
        for i, t in enumerate(clip.times):
            if scores[i] >= ev.off:
                last = float(t)
            elif last is not None and clip.motion[i] >= ev.hold_on_motion and t - last <= ev.hold_max_s:
                out[i] = ev.off
        self._holds[name] = last
        return out

    def _commit(
        self, updates: list[SegmentUpdate], watermark: dict, epoch: datetime, extra: Sequence[Segment] = ()
    ) -> None:
        latest: dict[str, Segment] = {}
        for u in updates:
            latest[u.segment.id] = u.segment
        for seg in extra:
            latest[seg.id] = seg
        self.store.commit(
            self.stream_id, list(latest.values()), watermark=watermark, epoch=epoch, source=self.shown_uri
        )
        self.report.segments_committed += len(latest)
