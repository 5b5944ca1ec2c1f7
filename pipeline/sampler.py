"""Sampler: decoded frames → clips at one constant rate each, the rate chosen per clip.

Dynamic mode (streams of any length, live or file):

* Frames are taken on a grid at ``max_fps`` (the *candidate grid*; the frame nearest each grid time). Only candidates are converted to RGB, at the clip size.
* Every ``clip_seconds`` of candidates, a cheap activity signal (mean absolute difference of small
  grayscale thumbnails of consecutive candidates) picks the clip's rate from the ladder
  ``max_fps / k`` (k = 1, 2, …, rate ≥ min_fps), capped by the vision-token budget per second.
* The clip takes every k-th candidate: an even number of frames at ONE rate, each frame carrying its
  own PTS time (any number from one with ``pairs=False``: live decision windows that no VLM sees).
  Clips follow each other (or overlap by ``overlap_seconds``).
* A PTS jump (a gap larger than ``max(1 s, 2 / max_fps)``) ends the current clip early, so no clip
  spans a hole in time; the grid restarts at the first frame after the gap.

qwen-vl-utils mode (bounded files): :func:`sample_qwen` picks the same frame indices and size that
qwen-vl-utils 0.0.14 ``fetch_video`` does, as one clip.

Memory is bounded by the candidate buffer: ``clip_seconds × max_fps`` frames at clip size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import cv2
import numpy as np

from .config import QwenCompatConfig, SamplerConfig
from .errors import ClipError, EmptySourceError
from .sizing import qwen_frame_indices, qwen_video_max_pixels, smart_nframes, smart_resize, tokens_per_frame_pair
from .timebase import UNIX_EPOCH
from .types import Clip


class FrameLike(Protocol):
    t: float

    def to_rgb(self, width: int | None = None, height: int | None = None) -> np.ndarray: ...


@dataclass
class _Candidate:
    """A grid slot's frame. Kept in the decoder's format until a clip picks it (lazy RGB)."""

    t: float
    frame: FrameLike
    thumb: np.ndarray
    slot: int
    motion: float = 0.0
    _rgb: np.ndarray | None = None

    def image(self, width: int, height: int) -> np.ndarray:
        if self._rgb is None:
            self._rgb = self.frame.to_rgb(width, height)
        return self._rgb


def choose_size(width: int, height: int, config: SamplerConfig) -> tuple[int, int]:
    """(height, width) for a stream's clips: smart_resize within the pixel budget, shrunk further
    if even ``min_fps`` would exceed the token budget."""
    h, w = smart_resize(height, width, min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    budget = config.tokens_per_second_budget
    if budget is not None:
        max_pixels = h * w
        while tokens_per_frame_pair(h, w) * config.min_fps / 2 > budget and h * w > 28 * 28:
            max_pixels = int(max_pixels * 0.8)
            h, w = smart_resize(height, width, min_pixels=min(config.min_pixels, max_pixels), max_pixels=max_pixels)
    return h, w


def rate_ladder(min_fps: float, max_fps: float) -> list[float]:
    """Rates a clip may use: max_fps / k for k = 1, 2, … down to min_fps (at least max_fps)."""
    ladder = []
    k = 1
    while max_fps / k >= min_fps - 1e-9 and k <= 1024:
        ladder.append(max_fps / k)
        k += 1
    return ladder


class DynamicSampler:
    """Feed frames with :meth:`push`; collect clips as they complete; :meth:`flush` at the end."""

    def __init__(
        self,
        config: SamplerConfig,
        *,
        stream_id: str,
        width: int,
        height: int,
        native_fps: float | None = None,
        epoch: datetime = UNIX_EPOCH,
        start_index: int = 0,
        origin: float | None = None,
    ):
        self.config = config
        self.stream_id = stream_id
        self.epoch = epoch
        self.height, self.width = choose_size(width, height, config)
        self.max_fps = min(config.max_fps, native_fps) if native_fps else config.max_fps
        self.ladder = rate_ladder(min(config.min_fps, self.max_fps), self.max_fps)
        self.pairs = config.pairs
        self.window = max(2 if self.pairs else 1, round(config.clip_seconds * self.max_fps))
        self.overlap = min(round(config.overlap_seconds * self.max_fps), self.window - 1)
        self.gap = max(1.0, 2.0 / self.max_fps)
        budget = config.tokens_per_second_budget
        self.rate_cap = 2.0 * budget / tokens_per_frame_pair(self.height, self.width) if budget else math.inf
        tw = config.thumb_width
        self._thumb = (tw, max(8, round(tw * self.height / self.width)))
        self._buf: list[_Candidate] = []
        self._origin: float | None = origin  # resume: the grid time where the next clip starts
        self._slot = 0
        self.next_clip_t: float | None = origin
        self._prev: FrameLike | None = None
        self._last_thumb: np.ndarray | None = None
        # Resuming: the frame of the slot before ``origin`` (from the decoder's pre-roll), whose thumbnail
        # the first candidate's motion is measured against, as in an uninterrupted run.
        self._pre_t: float | None = None if origin is None else origin - 1.0 / self.max_fps
        self._pre: FrameLike | None = None
        self._drop = 0
        self._last_emitted_t = -math.inf
        self.clip_index = start_index
        self.gaps = 0

    # -- grid ----------------------------------------------------------------------------------

    def _grid(self, slot: int) -> float:
        assert self._origin is not None
        return self._origin + slot / self.max_fps

    def push(self, frame: FrameLike) -> list[Clip]:
        """Offer one decoded frame (anything with ``.t`` and ``.to_rgb(w, h)``); return finished clips.

        Each grid slot takes the frame nearest to its time (ties to the later one), so a frame is
        converted to RGB only once it is known to be a candidate.
        """
        t = float(frame.t)
        clips: list[Clip] = []
        if self._origin is None:
            self._origin, self._slot = t, 0
            self.next_clip_t = t
        if t - self._grid(self._slot) > self.gap:
            # A hole in time: end the clip here; the grid restarts at this frame.
            self._take_prev_if_close()
            clips.extend(self.flush())
            self.gaps += 1
            self._origin, self._slot, self._drop = t, 0, 0
            self._last_thumb = None
            self.next_clip_t = t
        while True:
            g = self._grid(self._slot)
            if t < g:
                pre_t = self._pre_t
                if pre_t is not None and (self._pre is None or abs(t - pre_t) <= abs(self._pre.t - pre_t)):
                    self._pre = frame  # nearest to the slot before the origin (ties to the later frame)
                self._prev = frame
                clips.extend(self._emit_ready())  # a slot filled by the previous frame may complete a clip
                return clips
            prev = self._prev
            if prev is not None and g - prev.t < t - g:
                self._take(prev)
                self._prev = None
                continue  # this frame may still serve a later slot
            self._take(frame)
            self._prev = None
            while self._grid(self._slot) <= t:
                self._slot += 1  # slots with no frame of their own (sparse frames) are skipped
            clips.extend(self._emit_ready())
            return clips

    def _take(self, frame: FrameLike) -> None:
        if self._drop:
            self._drop -= 1  # covered by the previous clip already
            self._slot += 1
            return
        thumb = self._thumb_of(frame)
        prev = self._last_thumb
        if prev is None and self._pre is not None:  # resumed: the pre-roll's frame before the origin
            prev = self._thumb_of(self._pre)
        self._pre = self._pre_t = None
        motion = float(np.mean(cv2.absdiff(thumb, prev))) / 255.0 if prev is not None else 0.0
        self._last_thumb = thumb
        cand = _Candidate(float(frame.t), frame, thumb, self._slot, motion)
        if len(self.ladder) == 1:
            # One rate: every candidate goes into a clip, so convert it now rather than all of a clip's
            # frames at once when it completes (a burst of ~30 ms at 2 fps that stalled a decode-ahead
            # thread behind a full queue).
            cand.image(self.width, self.height)
        self._buf.append(cand)
        self._slot += 1

    def _thumb_of(self, frame: FrameLike) -> np.ndarray:
        if hasattr(frame, "to_gray"):  # straight from the decoder's luma plane: no RGB needed
            return frame.to_gray(*self._thumb)
        small = cv2.resize(frame.to_rgb(self.width, self.height), self._thumb, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)

    def _take_prev_if_close(self) -> None:
        prev = self._prev
        self._prev = None
        if prev is not None and self._origin is not None and self._grid(self._slot) - prev.t < 0.5 / self.max_fps:
            self._take(prev)

    # -- rate choice ---------------------------------------------------------------------------

    @staticmethod
    def activity_of(cands: list[_Candidate]) -> float:
        """90th percentile of the mean abs thumbnail difference between consecutive candidates (0..1)."""
        if len(cands) < 2:
            return 0.0
        diffs = [float(np.mean(cv2.absdiff(a.thumb, b.thumb))) / 255.0 for a, b in zip(cands[:-1], cands[1:])]
        return float(np.percentile(diffs, 90))

    def choose_rate(self, activity: float) -> float:
        """Activity → rate on the ladder (log-linear between activity_low and activity_high), ≤ budget."""
        cfg = self.config
        lo, hi = self.ladder[-1], self.ladder[0]
        x = min(1.0, max(0.0, (activity - cfg.activity_low) / (cfg.activity_high - cfg.activity_low)))
        target = lo * (hi / lo) ** x
        allowed = [r for r in self.ladder if r <= self.rate_cap + 1e-9] or [lo]
        return min(allowed, key=lambda r: abs(math.log(r / target)))

    # -- emission ------------------------------------------------------------------------------

    def _make_clip(self, picks: list[_Candidate], rate: float, activity: float) -> Clip:
        clip = Clip(
            stream_id=self.stream_id,
            index=self.clip_index,
            fps=rate,
            times=np.array([c.t for c in picks], dtype=np.float64),
            frames=np.stack([c.image(self.width, self.height) for c in picks]),
            epoch=self.epoch,
            activity=activity,
            motion=np.array([c.motion for c in picks]),
        )
        self.clip_index += 1
        self._last_emitted_t = picks[-1].t
        return clip

    def _emit_ready(self) -> list[Clip]:
        clips = []
        while len(self._buf) >= self.window:
            activity = self.activity_of(self._buf[: self.window])
            rate = self.choose_rate(activity)
            k = max(1, round(self.max_fps / rate))
            n = math.ceil(self.window / k)
            if self.pairs:
                n += n % 2
            need = (n - 1) * k + 1
            if len(self._buf) < need:
                break
            clips.append(self._make_clip(self._buf[0:need:k], rate, activity))
            advance = max(1, n * k - self.overlap)
            self.next_clip_t = self._grid(self._buf[0].slot + advance)
            self._drop = max(0, advance - len(self._buf))  # slots the clip covers that have not arrived yet
            del self._buf[:advance]
        return clips

    def flush(self) -> list[Clip]:
        """Emit what is buffered (end of a bounded source, or a gap). May be an odd frame count."""
        self._take_prev_if_close()
        buf = [c for c in self._buf if c.t > self._last_emitted_t] if self.overlap else self._buf
        self._buf = []
        if not buf:
            return []
        activity = self.activity_of(buf)
        rate = self.choose_rate(activity)
        k = max(1, round(self.max_fps / rate))
        picks = buf[::k]
        return [self._make_clip(picks, rate, activity)]


class _MotionThumbs:
    """Small grey thumbnails (``MOTION_WIDTH`` px wide) of the decoded stream at ``fps``, for the motion
    backend (:mod:`.motion`): the first frame of each 1/fps slot of stream time, so a resumed stream
    sees the frames an uninterrupted one saw. Each clip takes what was collected since the previous
    one (``clip.meta["thumbs"]``: ``(times, stack)``), which always covers the clip's own frames."""

    def __init__(self, fps: float):
        self.fps = fps
        self.slot: int | None = None
        self.times: list[float] = []
        self.images: list[np.ndarray] = []

    def push(self, frame) -> None:
        t = float(frame.t)
        slot = math.floor(t * self.fps + 1e-6)
        if self.slot is not None and slot <= self.slot:
            return
        self.slot = slot
        w = MOTION_WIDTH
        h = max(8, round(w * frame.height / frame.width))
        if hasattr(frame, "to_gray"):
            small = frame.to_gray(w, h)
        else:
            small = cv2.cvtColor(cv2.resize(frame.to_rgb(), (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        self.times.append(t)
        self.images.append(np.ascontiguousarray(small, dtype=np.uint8))

    def attach(self, clip: Clip) -> Clip:
        if self.images:
            clip.meta["thumbs"] = (np.array(self.times, dtype=np.float64), np.stack(self.images))
        else:
            clip.meta["thumbs"] = (np.zeros(0, dtype=np.float64), np.zeros((0, 1, MOTION_WIDTH), np.uint8))
        self.times, self.images = [], []
        return clip


MOTION_WIDTH = 160  # px: the motion backend's thumbnails


def choose_skip(source, config: SamplerConfig, *, motion: bool = False) -> str:
    """FFmpeg skip_frame mode for a source, given the sampler's needs (``config.skip='auto'``).

    * ``NONKEY`` on files whose keyframes are regular and whose candidate period (1 / max_fps) is a
      whole number of keyframe intervals: only keyframes are decoded.
    * ``NONREF`` when the source runs at ≥ 6 × max_fps: frames nothing refers to are never needed.
    * ``DEFAULT`` otherwise.
    """
    if config.skip != "auto":
        return config.skip
    fps = source.native_fps
    if not fps:
        return "DEFAULT"
    if source.kind == "file" and not motion:  # motion needs more than keyframes
        gop = source.keyframe_interval()
        if gop:
            ratio = (1.0 / config.max_fps) / gop
            if ratio >= 1 - 1e-3 and abs(ratio - round(ratio)) < 1e-3:
                return "NONKEY"
    if fps >= 6 * config.max_fps:
        return "NONREF"
    return "DEFAULT"


def sample_clips(
    source,
    config: SamplerConfig | None = None,
    *,
    stream_id: str = "stream",
    start_index: int = 0,
    resume_at: float | None = None,
    on_sampler=None,
    motion_fps: float | None = None,
) -> Iterator[Clip]:
    """Stream clips from an open :class:`~pipeline.source.Source` with the dynamic sampler.

    ``resume_at``: a file only; the grid time where the next clip starts (``sampler.next_clip_t``
    saved after a clip). Clips from there on equal those of an uninterrupted run.
    ``on_sampler``: called with the sampler once it exists (to read ``next_clip_t`` after each clip).
    ``motion_fps``: also collect grey thumbnails at this rate for the motion backend
    (``clip.meta["thumbs"]``, see :class:`_MotionThumbs`); keyframe-only decoding is then not used.
    """
    config = config or SamplerConfig()
    skip = choose_skip(source, config, motion=bool(motion_fps))
    thumbs = _MotionThumbs(motion_fps) if motion_fps else None
    sampler: DynamicSampler | None = None
    # Decode from a little before the resume point: the nearest-frame rule needs the frame before, the
    # first candidate's motion the frame of the slot before (one sampling interval back), and the cut
    # detector a neighbourhood to judge by (its cuts in that warm-up are the previous session's).
    rate = min(config.max_fps, source.native_fps or math.inf)
    start_s = None if resume_at is None else max(0.0, resume_at - max(_CUT_WARMUP_S + 1.0, 1.5 / rate))
    warm_until = None if start_s is None or start_s == 0.0 else start_s + _CUT_WARMUP_S
    cuts = _Cuts(config, ignore_before=warm_until) if config.scene_cuts and skip != "NONKEY" else None
    for frame in source.frames(skip=skip, start_s=start_s):
        if cuts is not None:
            cuts.push(frame)
        if thumbs is not None:
            thumbs.push(frame)
        if sampler is None:
            sampler = DynamicSampler(
                config,
                stream_id=stream_id,
                width=frame.width,
                height=frame.height,
                native_fps=source.native_fps if skip != "NONKEY" else None,
                epoch=source.epoch,
                start_index=start_index,
                origin=resume_at,
            )
            if on_sampler is not None:
                on_sampler(sampler)
        for clip in sampler.push(frame):
            if thumbs is not None:
                thumbs.attach(clip)
            yield cuts.attach(clip) if cuts is not None else clip
    if sampler is not None:
        if cuts is not None:
            cuts.flush()
        for clip in sampler.flush():
            if thumbs is not None:
                thumbs.attach(clip)
            yield cuts.attach(clip, last=True) if cuts is not None else clip


_CUT_WARMUP_S = 2.0  # a resumed detector judges only after this much pre-roll (its window and lookahead)


class _Cuts:
    """Feeds the scene-cut detector ~``cut_fps`` tiny RGB frames of the decoded stream and hands the
    cuts it finds to the clips that cover them (``clip.meta["cuts"]``, stream seconds)."""

    def __init__(self, config: SamplerConfig, *, ignore_before: float | None = None):
        from .signals import CutDetector

        self.detector = CutDetector()
        self.cut_fps = config.cut_fps
        self.slot: int | None = None
        self.ignore_before = ignore_before
        self.found: list[float] = []

    def push(self, frame) -> None:
        t = float(frame.t)
        # The first frame of each 1/cut_fps slot of stream time: the same frames whichever frame the
        # decode started at, so a resumed stream sees the frames an uninterrupted one saw.
        slot = math.floor(t * self.cut_fps + 1e-6)
        if self.slot is not None and slot <= self.slot:
            return
        self.slot = slot
        if hasattr(frame, "to_small_rgb"):  # straight from the YUV planes to a 64-px RGB thumbnail
            w = 64
            h = max(8, round(w * frame.height / frame.width))
            small = frame.to_small_rgb(w, h)
        else:
            small = frame.to_rgb()
        self._keep(self.detector.push(t, small))

    def flush(self) -> None:
        self._keep(self.detector.flush())

    def _keep(self, cuts: list[float]) -> None:
        """Cuts judged without a full neighbourhood (a resumed stream's warm-up) are not kept."""
        self.found.extend(t for t in cuts if self.ignore_before is None or t >= self.ignore_before)

    def attach(self, clip: Clip, *, last: bool = False) -> Clip:
        mine = [t for t in self.found if t < clip.end or last]
        self.found = [t for t in self.found if not (t < clip.end or last)]
        clip.meta["cuts"] = mine
        return clip


def sample_qwen(source, config: QwenCompatConfig | None = None, *, stream_id: str = "stream") -> Clip:
    """One clip for a bounded file, with the frames and size qwen-vl-utils 0.0.14 would pick.

    Frame *indices* are qwen-vl-utils' (``linspace(0, total-1, nframes).round()``); each kept frame
    carries its own PTS time. Memory: only the ``nframes`` kept frames, at the final size.
    """
    config = config or QwenCompatConfig()
    if source.live:
        raise ClipError("qwen-vl-utils mode needs a bounded file, not a live stream")
    total = source.frame_count or source.count_frames()
    fps = source.native_fps
    if not total or not fps:
        raise EmptySourceError("no frame count or frame rate to sample from", uri=source.uri)
    n = smart_nframes(
        total,
        fps,
        fps=None if config.nframes else config.fps,
        nframes=config.nframes,
        min_frames=config.min_frames,
        max_frames=config.max_frames,
    )
    wanted = qwen_frame_indices(total, n)
    max_pixels = qwen_video_max_pixels(
        n,
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
        total_pixels=config.total_pixels,
        model_seq_len=config.model_seq_len,
    )
    h, w = smart_resize(source.height, source.width, min_pixels=config.min_pixels, max_pixels=max_pixels)
    want = iter(wanted)
    nxt: int | None = next(want)
    times, images = [], []
    for i, frame in enumerate(source.frames()):
        while nxt is not None and i == nxt:
            times.append(frame.t)
            images.append(frame.to_rgb(w, h))
            nxt = next(want, None)
        if nxt is None:
            source.stop()
            break
    if len(images) < 2:
        raise EmptySourceError(f"decoded fewer frames than the {total} declared", uri=source.uri)
    return Clip(
        stream_id=stream_id,
        index=0,
        fps=n / total * fps,
        times=np.array(times),
        frames=np.stack(images),
        epoch=source.epoch,
        meta={"indices": wanted[: len(images)], "total_frames": total, "video_fps": fps},
    )
