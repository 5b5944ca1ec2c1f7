"""One stream, end to end, without Ray: source → clips → scores → segments → store.

The Ray stream-worker actor is a thin shell around :class:`StreamProcessor`; tests and the
single-process path use it directly. Scoring is injected (``score_fn(clip) -> {event: scores}``),
so the same loop runs against a local detector or a Ray Serve model pool.

Exactly-once: after each clip, the clip's segment changes and the stream's watermark (next clip's
grid time, clip index, every segmenter's state) are committed in one Redis transaction. A worker
restarted after a crash reads the watermark, resumes the file at that clip boundary with the same
sampler decisions and segmenter state, and rewrites nothing but what came after: segment ids are
deterministic, so a replayed clip overwrites, never duplicates.

Failure policy: a model or Redis that is away for a while never fails a stream. A model call that
raises anything but one of our typed errors (a replica busy, restarting or dead), or that gives no
answer within ``runtime.model_timeout_s`` (a hung replica), is retried with capped backoff, forever;
a store operation that still fails after the store's own retry deadline (Redis away) is retried the
same way. Meanwhile the stream's state is ``waiting`` with the reason; status that cannot reach Redis
is kept in memory and written once Redis is back. Nothing is lost: the clip waits, and commits are
idempotent. Only our typed errors (a bad source, :class:`~.errors.ModelError` …) fail a stream.

Live restarts: a live stream whose worker restarts (a new process, a new :meth:`Source.open`) keeps
the epoch of its first session (the store's meta) and continues its stream-seconds axis: frames map to
their RTCP or wall-clock time minus that epoch, never at or before the watermark's ``footage_s``, so
stream time only grows and segment ids of different sessions never collide. What the previous session
left open is closed at once at its last frame seen (:meth:`Segmenter.interrupt`), nothing is bridged
across the outage, and the outage itself is stored, with the first clip after it, as a segment of
event ``gap`` (:data:`GAP_EVENT`) from the previous session's last time to this session's first
frame: ``query(stream=…, event="gap")`` lists a stream's outages.

Pictures: every segment gets its thumbnail (the best frame, its detection box drawn) and the times (for
a camera, the JPEGs) of its first and last frames, chosen from the clips' sampled frames by a
:class:`~.thumbs.ThumbTracker` and committed in the same transaction as the segment; the picture of the
segment being built is committed with every clip that changes it and read back on resume, so a worker
killed between clips leaves no segment without its picture and resumes choosing where it stopped.

Motion and the detector gate (:mod:`.motion_gate`): the sampler also collects grey thumbnails at
``detection.motion_fps``; the reader thread runs them through :meth:`~.motion_gate.MotionGate.observe`
as each clip is cut (a clip ahead of the detector), which gives the ``motion`` events' scores (pushed
at the thumbnails' own times); before the clip is scored, :meth:`~.motion_gate.MotionGate.judge` marks
which sampled frames the detector must see (``clip.meta["detect"]``), which may reuse an earlier
frame's detections (``"hold"``, with the ``"blobs"`` that moved) and where it should also look
(``"regions"``). A clip with nothing to detect is not sent to the pools. The gate's state after the
clip is in the clip's watermark. Every
segmenter is interrupted at a scene cut (a motion event also at the motion model's global changes),
so no segment spans a hard cut.

Backpressure: a reader thread decodes and samples into a bounded queue (``runtime.max_pending_clips``;
a live stream's holds ``runtime.live_queue_s`` of footage if that is more). For a file, a full queue
blocks the reader (a slow model slows decoding). For a live source, a full queue drops the oldest
waiting clip and counts it (a slow model sheds load instead of growing memory or lag).

Status (:meth:`StreamReport.as_status`, published into the stream's meta at most every second after a
clip and at every change of state; ``longwatch/metrics.py`` reads it at scrape time): footage, lag, processing ``fps``,
``decode_fps`` / ``sampled_fps`` (frames decoded / kept in clips per wall second over the last
:data:`RATE_WINDOW_S`), ``queue_depth`` (clips waiting in the bounded queue), ``dropped_clips``,
``reconnects`` (of the source, this run), and, where the score function says what its model calls
took (:class:`Scores`), the histograms ``model_latency_s`` and ``model_batch_size`` per backend kind
(:mod:`.histograms`: cumulative buckets, fixed bounds). Counters count from the start of this run.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np

from .config import SamplerConfig, Settings
from .errors import (
    LongwatchError,
    SourceError,
    SourceUnreachableError,
    StoreError,
    StreamFencedError,
    StreamIdentityError,
)
from .events import EventsSpec
from .identity import check_identity, fingerprints
from .motion_gate import GateResult, MotionGate, Observation
from .report import ModelCall, StreamReport
from .retry import Backoff, retry_call
from .sampler import sample_clips
from .secrets import redact
from .segmenter import Segmenter, SegmentUpdate
from .source import Source, classify
from .thumbs import BoxedScores, ThumbTracker, boxes_of
from .types import Clip, Segment

log = logging.getLogger(__name__)

ScoreFn = Callable[[Clip], dict[str, np.ndarray]]
STATUS_EVERY_S = 1.0  # a running stream's status is written after a clip at most this often (and at every change)
GAP_EVENT = "gap"  # a segment over the outage between two sessions of a live stream (see "Live restarts")
RATE_WINDOW_S = 10.0  # decode_fps and sampled_fps: frames per wall second over this last stretch
T = TypeVar("T")
_END = object()


class Scores(BoxedScores):
    """What a score function may return instead of a plain dict: the same ``{event: scores}`` mapping,
    plus ``calls``, the :class:`ModelCall` s that produced it (for the status' model histograms), and
    ``boxes``, ``frames_seen`` and ``explained`` (:class:`~.thumbs.BoxedScores`)."""

    def __init__(
        self,
        scores: Mapping[str, np.ndarray],
        calls: Iterable[ModelCall] = (),
        boxes: Mapping[str, np.ndarray] | None = None,
        *,
        frames_seen: int | None = None,
        explained: Sequence[bool] | None = None,
    ):
        super().__init__(
            scores,
            boxes if boxes is not None else boxes_of(scores),
            frames_seen=frames_seen if frames_seen is not None else getattr(scores, "frames_seen", None),
            explained=explained if explained is not None else getattr(scores, "explained", None),
        )
        self.calls: tuple[ModelCall, ...] = tuple(calls)


def _kind(uri: str) -> str:
    """``file``, ``rtsp`` or ``http`` (``unsupported``: the source will fail to open anyway)."""
    try:
        return classify(uri)[0]
    except LongwatchError:
        return "unsupported"


@dataclass(frozen=True)
class _Prior:
    """A live stream's last frame the detector looked at and explained (its confident boxes covered
    every blob of what moved): what a later clip's frame may reuse (see :mod:`.motion_gate`)."""

    t: float
    blobs: list
    scores: dict[str, float]  # detector event → its score at that frame
    boxes: dict[str, np.ndarray]  # detector event → the box that gave it (NaN: none)


class _ScoreFailed(Exception):
    """Internal: ``score_fn`` raised ``args[0]`` (not one of our typed errors), so it may be retried."""


class _Interrupted(Exception):
    """Internal: :meth:`StreamProcessor.stop` ended a wait for the model or for Redis."""


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
        self._fingerprints: dict = {}  # source and pipeline fingerprints, stored with every watermark
        self._redis_down = False  # a store operation failed: status is kept in memory until Redis is back
        self._status_pending = False  # the status in memory is newer than the one in Redis
        self._gap_from: float | None = None  # a resumed live stream: where the outage began (stream s)
        self._close_open = False  # stop(close_open=True): a removed live stream closes its open segments
        self._token = uuid.uuid4().hex  # this run's claim on the stream (:meth:`SegmentStore.claim`)
        self._sampled_frames = 0  # frames the sampler put into clips (the reader thread counts them)
        self._status_at = 0.0  # monotonic time of the last status written after a clip
        self._rates: collections.deque[tuple[float, int, int]] = collections.deque()  # (t, decoded, sampled)
        # segment pictures (:mod:`.thumbs`); a source with no recording to go back to keeps its strip's frames
        self._thumbs = ThumbTracker(stream_id, strip_frames=_kind(uri) != "file")

    def stop(self, *, close_open: bool = False) -> None:
        """Stop after the clip in hand; the watermark keeps the place. ``close_open`` (a live stream
        that is removed): also close its open segments at their last frame seen."""
        self._close_open = self._close_open or close_open
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
        if self._redis_down:  # kept in memory (``report``); written by :meth:`_redis` once Redis is back
            self._status_pending = True
            return
        try:
            self.store.set_status(self.stream_id, **self.report.as_status(), **extra)
            self._status_pending = False
        except Exception as exc:  # status is best effort; segments and watermark are not
            self._status_pending = True
            self._redis_down = isinstance(exc, StoreError)
            log.debug("status update failed: %s", exc)

    def _backoff(self) -> Backoff:
        rt = self.settings.runtime
        return Backoff(
            initial_s=rt.model_backoff_initial_s,
            cap_s=max(rt.model_backoff_initial_s, rt.model_backoff_max_s),
            jitter=0.1,  # streams that failed together do not all retry together
        )

    def _wait(self, reason: str) -> None:
        """Show the stream as waiting out a transient fault (``reason`` says which)."""
        rep = self.report
        if rep.state in ("running", "starting", "waiting") and (rep.state, rep.reason) != ("waiting", reason):
            rep.state, rep.reason = "waiting", reason
            self._status()

    def _resume(self) -> None:
        rep = self.report
        if rep.state == "waiting":
            rep.state, rep.reason = "running", ""
            self._status()

    def _open(self) -> Source:
        """Open the source. A camera that does not answer is a transient fault: the stream waits
        (state ``waiting``, the reason) and tries again with the source's backoff until it answers or
        :meth:`stop` (:class:`_Interrupted`). A file's errors, a bad URL or an unset ``${VAR}`` fail now."""
        cfg = self.settings.source

        def on_retry(_attempt: int, exc: BaseException, delay: float) -> None:
            self._wait(f"source unreachable ({exc}), retrying in {delay:.1f} s")

        try:
            return retry_call(
                lambda: Source.open(self.uri, config=cfg, start_at=self.start_at, exact=self._uses_vlm()),
                retry_on=SourceUnreachableError if classify(self.uri)[0] != "file" else (),
                backoff=Backoff(initial_s=min(cfg.backoff_initial_s, cfg.backoff_max_s), cap_s=cfg.backoff_max_s),
                on_retry=on_retry,
                stop_event=self._stop,
            )
        except SourceUnreachableError as exc:
            if self._stop.is_set():
                raise _Interrupted from exc
            raise

    def _redis(self, fn: Callable[[], T], what: str) -> T:
        """Run a store operation (idempotent). Redis away past the store's own retry deadline is a
        transient fault too: the stream waits with backoff (state ``waiting``) and carries on, with
        nothing lost, once Redis is back. :meth:`stop` ends the wait (:class:`_Interrupted`)."""

        def on_retry(_attempt: int, exc: BaseException, delay: float) -> None:
            self._redis_down = True
            log.warning("%s: Redis unreachable (%s: %s); retrying in %.1fs", self.stream_id, what, exc, delay)
            self._wait(f"Redis unreachable, retrying in {delay:.1f} s")

        try:
            out = retry_call(fn, retry_on=StoreError, backoff=self._backoff(), on_retry=on_retry, stop_event=self._stop)
        except StoreError as exc:  # only when stopped: the wait itself never gives up
            raise _Interrupted from exc
        if self._redis_down:
            self._redis_down = False
            log.info("%s: Redis is back", self.stream_id)
            if self.report.state == "waiting" and self.report.reason.startswith("Redis"):
                self.report.state, self.report.reason = "running", ""
            self._status_pending = True
        if self._status_pending:
            self._status()
        return out

    def run(self) -> StreamReport:
        """Process the stream to its end (a file) or until :meth:`stop`; see the module doc."""
        try:
            return self._run()
        except StreamFencedError:  # superseded by a newer worker of this stream: end quietly
            log.warning("%s: another worker took this stream over; this one stops", self.stream_id)
            self._stop.set()
            self.report.state, self.report.reason = "superseded", ""
            return self.report

    def _run(self) -> StreamReport:
        rep = self.report
        started = time.perf_counter()
        try:
            # Claim the stream first: a worker it replaces (still running, e.g. its controller died)
            # can commit nothing from now on, so the watermark read next stays the truth.
            self._redis(lambda: self.store.claim(self.stream_id, self._token), "claiming the stream")
            wm = self._redis(lambda: self.store.watermark(self.stream_id), "reading the watermark") or {}
        except _Interrupted:
            rep.state = "stopped"
            return rep
        try:
            src = self._open()
            rep.reason = ""
        except _Interrupted:
            rep.state, rep.reason = "stopped", ""
            self._status()
            return rep
        except SourceError as exc:
            rep.state, rep.reason, rep.error = "failed", "", str(exc)
            self._status()
            raise
        try:  # the id must still name this source and this pipeline (never "done" for another file)
            self._fingerprints = fingerprints(self.uri, self.events, self.settings.sampler)
            check_identity(self.stream_id, wm, self._fingerprints)
        except StreamIdentityError as exc:
            src.close()
            rep.state, rep.error = "failed", redact(str(exc))
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
        closed_at_restart: list[SegmentUpdate] = []
        if src.live and wm.get("footage_s") is not None:
            # A restarted live stream keeps the epoch of its first session and continues its axis
            # after the outage (see the module docstring, "Live restarts").
            try:
                epoch = self._redis(lambda: self.store.epoch(self.stream_id), "reading the epoch")
            except _Interrupted:
                src.close()
                rep.state = "stopped"
                return rep
            if epoch is not None:
                self._gap_from = float(wm["footage_s"])
                src.continue_from(epoch, self._gap_from)
        segmenters = self._segmenters(src.epoch, saved_states)
        try:  # the committed picture of each segment being built: choosing goes on from it
            self._restore_thumbs(segmenters)
        except _Interrupted:
            src.close()
            rep.state = "stopped"
            return rep
        if self._gap_from is not None:
            for seg in segmenters.values():
                ups = seg.interrupt()
                self._thumbs.observe(seg, ups)
                closed_at_restart.extend(ups)
        self._holds: dict[str, float | None] = dict(wm.get("holds") or {})
        self._gate = MotionGate(self.events, self.settings.detection, wm.get("motion") if wm else None)
        self._prior: _Prior | None = None  # live: what the next clip's frames may reuse of earlier detections
        if self._gap_from is not None:
            self._gate.reset()  # after an outage the scene may have changed: learn it afresh
        rep.resumed_from = resume_at
        rep.state = "running"
        try:
            self._redis(
                lambda: self.store.register(self.stream_id, epoch=src.epoch, source=self.shown_uri), "registering"
            )
            if self.settings.runtime.retention_s is not None:
                retention = self.settings.runtime.retention_s
                self._redis(lambda: self.store.set_retention(self.stream_id, retention), "setting retention")
            if self._gap_from is not None:  # close, at once, what the previous session left open
                self._commit(
                    closed_at_restart,
                    src.epoch,
                    segmenters,
                    clip_index=wm.get("clip_index"),
                    next_clip_t=wm.get("next_clip_t"),
                    footage_s=self._gap_from,
                )
        except _Interrupted:
            src.close()
            rep.state, rep.reason = "stopped", ""
            self._status()
            return rep
        self._status()

        pending: queue.Queue = queue.Queue(maxsize=self._queue_size(src))
        holder: dict = {}
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                for clip in sample_clips(
                    src,
                    self._sampler_config(src),
                    stream_id=self.stream_id,
                    start_index=start_index,
                    resume_at=resume_at,
                    on_sampler=lambda s: holder.setdefault("sampler", s),
                    motion_fps=self.settings.detection.motion_fps if self._gate.active else None,
                ):
                    # the motion models run here, a clip ahead of the detector (the heavy half of the gate)
                    thumbs = clip.meta.pop("thumbs", None)  # they do not travel to the model pools
                    seen = None
                    if self._gate.active and thumbs is not None:
                        cuts = clip.meta.get("cuts", ())
                        seen = self._gate.observe(
                            thumbs[0], thumbs[1], clip.times.tolist(), cuts=cuts, snapshot=not src.live
                        )
                    item = (clip, holder["sampler"].next_clip_t, seen)
                    self._sampled_frames += clip.n
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
        self._rates.append((time.monotonic(), src.stats.frames, self._sampled_frames))  # rates count from here
        reader.start()
        last_t = resume_at or 0.0
        try:
            while True:
                item = pending.get()
                if item is _END:
                    break
                clip, next_clip_t, seen = item
                rep.queue_depth = pending.qsize()
                self._process(clip, next_clip_t, segmenters, src, seen)
                last_t = clip.end
                rep.wall_s = time.perf_counter() - started
                if self.on_clip:
                    self.on_clip(rep)
            reader.join(timeout=5)
            if errors:
                raise errors[0]
            if self._stop.is_set():
                if self._close_open and src.live and rep.clips:
                    closing = []
                    for seg in segmenters.values():
                        ups = seg.interrupt()
                        self._thumbs.observe(seg, ups)
                        closing.extend(ups)
                    self._commit(
                        closing,
                        src.epoch,
                        segmenters,
                        clip_index=rep.clips + start_index - 1,
                        next_clip_t=last_t,
                        footage_s=last_t,
                    )
                rep.state = "stopped"
                self._status()
                return rep
            # End of a file: close what is open and mark the stream done, atomically.
            end_t = max(last_t, float(wm.get("footage_s", 0.0)))
            updates: list[SegmentUpdate] = []
            for seg in segmenters.values():
                ups = seg.flush(end_t)
                self._thumbs.observe(seg, ups)
                updates.extend(ups)
            self._commit(
                updates,
                src.epoch,
                segmenters,
                clip_index=rep.clips + start_index - 1,
                next_clip_t=end_t,
                footage_s=end_t,
                done=True,
            )
            rep.state = "done"
        except _Interrupted:  # stopped while waiting for the model or Redis: resumes from the watermark
            rep.state, rep.reason = "stopped", ""
        except StreamFencedError:
            raise  # a newer worker owns the stream (and its status): see run()
        except LongwatchError as exc:
            rep.state, rep.reason, rep.error = "failed", "", redact(str(exc))
            self._status()
            raise
        finally:
            self._stop.set()
            src.stop()
            reader.join(timeout=5)
            rep.wall_s = time.perf_counter() - started
            rep.reconnects = src.stats.reconnects
            rep.decode_fps = rep.sampled_fps = 0.0  # not running any more
            rep.queue_depth = 0
        self._status()
        return rep

    def _restore_thumbs(self, segmenters: dict[str, Segmenter]) -> None:
        """After a resume: the committed pictures of the segments being built (:mod:`.thumbs`)."""
        for seg in segmenters.values():
            sid = self._thumbs.wanted(seg)
            if sid is not None:
                read = functools.partial(self.store.thumbnail, self.stream_id, sid)
                self._thumbs.restore(seg, self._redis(read, "reading a thumbnail"))

    def _measure_rates(self, src: Source) -> None:
        """decode_fps and sampled_fps over the last :data:`RATE_WINDOW_S` of wall time."""
        now, decoded, sampled = time.monotonic(), src.stats.frames, self._sampled_frames
        marks = self._rates
        marks.append((now, decoded, sampled))
        while len(marks) > 2 and now - marks[1][0] >= RATE_WINDOW_S:
            marks.popleft()  # keep one mark at least RATE_WINDOW_S old (or the first)
        t0, decoded0, sampled0 = marks[0]
        if now > t0:
            self.report.decode_fps = (decoded - decoded0) / (now - t0)
            self.report.sampled_fps = (sampled - sampled0) / (now - t0)

    def _process(
        self,
        clip: Clip,
        next_clip_t: float | None,
        segmenters: dict[str, Segmenter],
        src: Source,
        seen: Observation | None = None,
    ) -> None:
        rep = self.report
        t0 = time.perf_counter()
        gate = None
        from_prior: list[int] = []  # frames that reuse the prior's answer (live)
        if seen is not None:
            tracking = any(segmenters[ev.event].running is not None for ev in self.events.detector_events)
            prior = self._prior  # only a live stream ever has one
            gate = self._gate.judge(seen, tracking=tracking, prior=None if prior is None else (prior.t, prior.blobs))
            from_prior = [j for j, h in enumerate(gate.hold) if h == -1]
            clip.meta["detect"] = gate.detect
            clip.meta["regions"] = gate.regions
            clip.meta["hold"] = [None if h == -1 else h for h in gate.hold]  # the backend skips those
            clip.meta["blobs"] = gate.blobs
        scores = self._score(clip) if self._needs_model(clip) else BoxedScores(frames_seen=0)
        if from_prior:
            scores = self._with_prior(scores, clip.n, from_prior)
        if gate is not None and seen is not None and self._is_live():
            self._prior = self._next_prior(clip, seen, gate, scores)
        if gate is not None:  # what the detector looked at (the backend's count where it gives one)
            looked_at = getattr(scores, "frames_seen", None)
            rep.detected_frames += gate.detected_frames if looked_at is None else int(looked_at)
        for call in getattr(scores, "calls", ()):
            rep.observe_model_call(call)
        rep.sampled_frames += clip.n
        boxes = boxes_of(scores)
        cut_times = sorted(float(t) for t in clip.meta.get("cuts", ()))
        breaks: dict[str, list[float]] = {}  # event → where its segments end (cuts; motion: global changes)
        series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # event → (times, scores, raw)
        for name in segmenters:
            values = scores.get(name)
            if values is not None:
                raw = np.asarray(values, dtype=np.float64)
                series[name] = (clip.times, self._hold_on_motion(name, clip, raw), raw)
        if gate is not None:
            for name, values in gate.scores.items():
                series[name] = (gate.times, values, values)
                breaks[name] = sorted(set(cut_times) | set(gate.breaks.get(name, ())))
        updates: list[SegmentUpdate] = []
        for name, (times, values, raw) in series.items():
            seg = segmenters[name]
            # a new shot is a new scene: nothing stays open across a hard cut
            ups: list[SegmentUpdate] = []
            start = 0
            for c in breaks.get(name, cut_times):
                k = int(np.searchsorted(times, c, side="left"))
                if k > start:
                    ups.extend(seg.push(times[start:k], values[start:k]))
                    start = k
                if seg.last_time is not None and seg.last_time < c:
                    ups.extend(seg.interrupt())
            if start < len(times):
                ups.extend(seg.push(times[start:], values[start:]))
            # the best frame is the best raw score (a motion hold only keeps a run open)
            if times is clip.times:
                self._thumbs.observe(seg, ups, clip=clip, scores=raw, boxes=boxes.get(name))
            else:
                assert gate is not None
                best, where = _on_clip_times(times, raw, gate.boxes[name], clip.times)
                self._thumbs.observe(seg, ups, clip=clip, scores=best, boxes=where)
            updates.extend(ups)
        cuts = [
            Segment(self.stream_id, "scene_cut", t, t, epoch=clip.epoch, score=1.0) for t in clip.meta.get("cuts", ())
        ]
        if self._gap_from is not None:  # the first clip after a live restart: record the outage
            cuts.append(Segment(self.stream_id, GAP_EVENT, self._gap_from, clip.start, epoch=clip.epoch, score=1.0))
        for cut in cuts:
            self._thumbs.point(cut, clip)
        self._thumbs.after_clip(clip)
        self._commit(
            updates,
            clip.epoch,
            segmenters,
            clip_index=clip.index,
            next_clip_t=next_clip_t if next_clip_t is not None else clip.end,
            footage_s=clip.end,
            extra=cuts,
        )
        self._gap_from = None
        rep.clips += 1
        rep.footage_s = clip.end
        dt = time.perf_counter() - t0
        rep.fps = clip.n / dt if dt > 0 else 0.0
        if src.live:
            rep.lag_s = (datetime.now(UTC) - clip.utc(clip.end - clip.start)).total_seconds()
        rep.reconnects = src.stats.reconnects
        self._measure_rates(src)
        if time.monotonic() - self._status_at >= STATUS_EVERY_S:  # what `streams`, the API and the controller read
            self._status_at = time.monotonic()
            self._status()

    def _score(self, clip: Clip, attempts: int | None = None) -> dict[str, np.ndarray]:
        """Score a clip. A model call that fails (a replica busy, restarting or dead) or gives no answer
        within ``runtime.model_timeout_s`` (hung) is retried with backoff, by default until it answers:
        the stream waits (state ``waiting``, with the reason) and the clip is delayed, not lost. Our own
        typed errors are not retried; :meth:`stop` ends the wait (:class:`_Interrupted`)."""

        def score_once() -> dict[str, np.ndarray]:
            try:
                return self._call_model(clip)
            except LongwatchError:
                raise
            except Exception as exc:
                raise _ScoreFailed(exc) from exc

        def on_retry(_attempt: int, failure: BaseException, delay: float) -> None:
            exc = failure.args[0]
            why = redact(f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
            log.warning("%s: scoring clip %d failed (%s); retrying in %.1fs", self.stream_id, clip.index, why, delay)
            self._wait(f"model unavailable: {why}, retrying in {delay:.1f} s")

        try:
            scores = retry_call(
                score_once,
                retry_on=_ScoreFailed,
                backoff=self._backoff(),
                attempts=attempts,
                on_retry=on_retry,
                stop_event=self._stop,
            )
        except _ScoreFailed as failure:
            if self._stop.is_set():
                raise _Interrupted from failure.args[0]
            raise failure.args[0] from None
        self._resume()
        return scores

    def _call_model(self, clip: Clip) -> dict[str, np.ndarray]:
        """``score_fn(clip)`` with ``runtime.model_timeout_s``: past it, :class:`TimeoutError` (the call is
        abandoned to its daemon thread; the Ray score function also cancels its request)."""
        timeout = self.settings.runtime.model_timeout_s
        done = threading.Event()
        box: dict = {}

        def call() -> None:
            try:
                box["scores"] = self.score_fn(clip)
            except BaseException as exc:  # handed to the caller
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=call, name=f"model-{self.stream_id}", daemon=True).start()
        if not done.wait(timeout):  # a stop lets the call in flight finish (at most the timeout): it counts
            raise TimeoutError(f"no answer within {timeout:g} s")
        if "error" in box:
            raise box["error"]
        return box["scores"]

    def _uses_vlm(self) -> bool:
        """Whether an event of the stream is scored by the VLM (which needs exact frames, full clips)."""
        return bool(self.events.by_backend("qwen2_5_vl"))

    def _is_live(self) -> bool:
        return self._source is not None and self._source.live

    def _queue_size(self, src: Source) -> int:
        """Clips that may wait for the model: ``max_pending_clips``, and for a live stream as many clips as
        ``runtime.live_queue_s`` of footage if that is more (the 1-s decision windows: ten), so that a
        stall of a few seconds (several cameras' detector looks at once, a busy host) delays decisions
        instead of shedding them. A window holds a frame or two and its motion thumbnails: ten of them
        are a few MB."""
        if not src.live:
            return self.max_pending
        clip_s = self._sampler_config(src).clip_seconds
        return max(self.max_pending, math.ceil(self.settings.runtime.live_queue_s / clip_s - 1e-9))

    def _sampler_config(self, src: Source) -> SamplerConfig:
        """The sampler's settings for this source: a live stream whose events need no VLM cuts short
        clips (``detection.live_window_s``): each clip is a decision, committed as soon as it is
        scored, so its segments open in Redis within a window or two of the event. Such a clip may hold
        any number of frames (no temporal pairs: ``pairs=False``), and the sampler's lowest rate rises
        to one frame a window (the gate keeps the detector off still frames). The VLM's events keep
        ``clip_seconds`` and pairs (Qwen needs both)."""
        cfg = self.settings.sampler
        window = self.settings.detection.live_window_s
        if not src.live or window is None or self._uses_vlm():
            return cfg
        rate = min(cfg.max_fps, src.native_fps or cfg.max_fps)
        window = max(float(window), 1.0 / rate)  # one frame at least
        # and a quiet scene's rate still puts a frame in every window (else a clip would span two)
        low = min(rate, max(cfg.min_fps, 1.0 / window))
        return cfg.model_copy(update={"clip_seconds": window, "overlap_seconds": 0.0, "min_fps": low, "pairs": False})

    def _with_prior(self, scores: Mapping[str, np.ndarray], n: int, frames: list[int]) -> Scores:
        """``scores`` with the prior's detector answers at ``frames`` (those that hold it)."""
        prior = self._prior
        assert prior is not None
        merged = {k: np.array(v, dtype=np.float64) for k, v in scores.items()}
        boxes = {k: np.array(v, dtype=np.float32) for k, v in boxes_of(scores).items()}
        for name, value in prior.scores.items():
            merged.setdefault(name, np.zeros(n, dtype=np.float64))[frames] = value
            boxes.setdefault(name, np.full((n, 4), np.nan, dtype=np.float32))[frames] = prior.boxes[name]
        return Scores(
            merged,
            getattr(scores, "calls", ()),
            boxes,
            frames_seen=getattr(scores, "frames_seen", None),
            explained=getattr(scores, "explained", None),
        )

    def _next_prior(
        self, clip: Clip, seen: Observation, gate: GateResult, scores: Mapping[str, np.ndarray]
    ) -> _Prior | None:
        """After a live clip: its last looked-at frame if the detector explained it, else none; the
        previous prior where the detector looked at nothing; none once something changed after it."""
        prior = self._prior
        looked = np.nonzero(gate.detect)[0]
        end = clip.n - 1  # the clip's last frame: looked at, or holding what was (the chain's end), or neither
        if looked.size:
            j = int(looked[-1])
            explained = getattr(scores, "explained", None)
            names = [ev.event for ev in self.events.detector_events]
            boxes = boxes_of(scores)
            prior = None
            if explained is not None and explained[j] and all(n in scores and n in boxes for n in names):
                prior = _Prior(
                    float(clip.times[j]),
                    list(gate.blobs[end]),  # the frames after j held j: the chain goes on from the last
                    {n: float(scores[n][j]) for n in names},
                    {n: np.array(boxes[n][j], dtype=np.float32) for n in names},
                )
        elif prior is not None and end >= 0:
            # nothing looked at: the prior goes on only where this clip's frames all held it
            held = all(h == -1 for h in gate.hold)
            prior = replace(prior, blobs=list(gate.blobs[end])) if held else None
        cuts = [float(t) for t in clip.meta.get("cuts", ())]
        if prior is not None and any(c > prior.t for c in [*seen.changes, *cuts]):
            prior = None
        return prior

    def _needs_model(self, clip: Clip) -> bool:
        """Whether the clip goes to the model pools at all: not when no event needs one, or when the
        detector is the only one and the motion gate left it no frame to look at."""
        backends = self.events.model_backends
        if not backends:
            return False
        detect = clip.meta.get("detect")
        return backends != ["detector"] or detect is None or bool(np.any(detect))

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
        self,
        updates: list[SegmentUpdate],
        epoch: datetime,
        segmenters: dict[str, Segmenter],
        *,
        clip_index: int | None,
        next_clip_t: float | None,
        footage_s: float | None,
        done: bool = False,
        extra: Sequence[Segment] = (),
    ) -> None:
        """Commit segments with the stream's watermark (built here, the one place that knows its
        fields) in one transaction."""
        watermark: dict = {
            "clip_index": clip_index,
            "next_clip_t": next_clip_t,
            "footage_s": footage_s,
            "segmenters": {k: s.state() for k, s in segmenters.items()},
            "holds": self._holds,
            # (a live stream learns its background afresh after any restart: no state to keep)
            **({"motion": self._gate.state()} if self._gate.active and not self._is_live() else {}),
            **({"done": True} if done else {}),
            **self._fingerprints,
        }
        latest: dict[str, Segment] = {}
        for u in updates:
            latest[u.segment.id] = u.segment
        for seg in extra:
            latest[seg.id] = seg
        segments = list(latest.values())
        thumbs = self._thumbs.changes()  # the pictures that changed: in the same transaction
        self._redis(
            lambda: self.store.commit(
                self.stream_id,
                segments,
                watermark=watermark,
                epoch=epoch,
                source=self.shown_uri,
                owner=self._token,
                thumbs=thumbs,
            ),
            f"committing clip {watermark.get('clip_index')}",
        )
        self.report.segments_committed += len(latest)


def _on_clip_times(
    times: np.ndarray, scores: np.ndarray, boxes: np.ndarray, clip_times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and boxes at other times (a motion event's thumbnails) as one per sampled frame of the
    clip: the highest score within half a sampling interval and its box, so the segment's picture is
    one of the clip's frames, with what moved drawn on it."""
    out = np.zeros(len(clip_times), dtype=np.float64)
    where = np.full((len(clip_times), 4), np.nan, dtype=np.float32)
    if not len(times):
        return out, where
    half = 0.5 * float(np.median(np.diff(clip_times))) if len(clip_times) > 1 else 0.5
    for j, t in enumerate(clip_times):
        a, b = np.searchsorted(times, t - half, "left"), np.searchsorted(times, t + half, "right")
        if b > a:
            k = a + int(np.argmax(scores[a:b]))
            out[j], where[j] = float(scores[k]), boxes[k]
    return out, where
