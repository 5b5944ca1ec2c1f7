"""Sources: local files, rtsp(s)://, http(s):// (incl. HLS). One streaming iterator of decoded frames.

Times come from PTS × time_base through :class:`~pipeline.timebase.StreamClock`. Decoding is
streaming (one packet in, frames out) so memory does not grow with footage length. Decoding is
threaded, and a caller that needs fewer frames can ask the decoder to skip non-reference or non-key
frames (``skip="NONREF"`` / ``"NONKEY"``), which FFmpeg drops before doing the expensive work.

Live sources (rtsp, and http(s) without a known duration) treat end-of-stream and read errors as a
disconnect: they reconnect with capped exponential backoff and the clock re-anchors so time keeps
moving forward. Files treat end-of-stream as the end.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeGuard
from urllib.parse import urlparse

import av
import av.error
import cv2
import numpy as np

from .config import SourceConfig
from .errors import (
    EmptySourceError,
    InvalidVideoError,
    NoVideoStreamError,
    ResolutionError,
    SourceError,
    SourceNotFoundError,
    SourceTimeoutError,
    SourceUnreachableError,
    UnsupportedSourceError,
)
from .gops import Raised, closed_gop_test, decode_gops, put_until
from .retry import Backoff, retry_call
from .secrets import expand, redact, secret_values
from .timebase import UNIX_EPOCH, StreamClock, parse_epoch
from .types import Frame

log = logging.getLogger(__name__)

_GOP_QUEUE_BYTES = 48 << 20  # decoded pictures one GOP worker may hold ahead of the consumer
# 8-bit pixel formats whose first plane is the luma (Y) plane, one byte per pixel
_LUMA_PLANE_FORMATS = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "yuv411p", "yuv440p"}
)
# 8-bit planar YUV with separate U and V planes
_PLANAR_YUV_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)

NETWORK_SCHEMES = {"rtsp", "rtsps", "http", "https"}
SkipMode = Literal["DEFAULT", "NONREF", "BIDIR", "NONINTRA", "NONKEY"]
SKIP_MODES: tuple[SkipMode, ...] = ("DEFAULT", "NONREF", "BIDIR", "NONINTRA", "NONKEY")
_NETWORK_ERRORS = (
    av.error.TimeoutError,
    av.error.ConnectionRefusedError,
    av.error.ConnectionResetError,
    av.error.ConnectionAbortedError,
    av.error.BrokenPipeError,
    av.error.EOFError,
    av.error.HTTPError,
    av.error.ExitError,
    OSError,
)


def classify(uri: str | os.PathLike) -> tuple[str, str]:
    """Return ``(kind, target)``: kind is ``file``, ``rtsp`` or ``http``; target is the path or URL.

    Raises :class:`UnsupportedSourceError` for any other scheme.
    """
    text = os.fspath(uri)
    if not text or not text.strip():
        raise UnsupportedSourceError("empty source string")
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and text[1:2] == ":"):
        path = parsed.path if scheme == "file" else text
        return "file", path
    if scheme in ("rtsp", "rtsps"):
        return "rtsp", text
    if scheme in ("http", "https"):
        return "http", text
    raise UnsupportedSourceError(
        f"unsupported scheme {scheme!r}: longwatch reads files, rtsp://, rtsps://, http:// and https://",
        uri=text,
    )


@dataclass
class DecodedFrame:
    """A decoded picture still in the decoder's pixel format: convert only the frames you keep."""

    t: float
    pts: int | None
    pts_estimated: bool
    keyframe: bool
    width: int
    height: int
    av_frame: av.VideoFrame = field(repr=False)
    # halvings of each plane already made for a thumbnail: the motion, activity and cut thumbnails of one
    # frame share them (plane index → [half, quarter, …])
    _halves: dict[int, list[np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    def _plane(self, index: int, width: int, height: int) -> np.ndarray:
        """Plane ``index`` of a planar frame, area-averaged to ``width × height``.

        OpenCV's area filter is ~6× faster at exactly half size (a SIMD 2×2 mean) than at the general
        factors thumbnails need (20× costs 0.38 ms on a 720p luma plane, the 2× steps to 160 px and
        one last area step 0.12 ms), so the plane is halved while the factor left is an even whole
        number (each halving then averages exactly the pixels a direct resize would) and the halvings
        are kept for the frame's other thumbnails. Each step rounds to uint8: the result is within one
        grey level of a direct area resize. Other sizes are resized directly."""
        plane = self.av_frame.planes[index]
        pw, ph = plane.width, plane.height
        img: np.ndarray = np.frombuffer(memoryview(plane), np.uint8).reshape(ph, plane.line_size)[:, :pw]
        halves = self._halves.setdefault(index, [])
        level = 0
        while img.shape[1] % (2 * width) == 0 and img.shape[0] % (2 * height) == 0:
            if level < len(halves):
                img = halves[level]
            else:
                img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
                halves.append(img)
            level += 1
        if img.shape[:2] == (height, width):
            return img
        return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)

    def to_rgb(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """RGB uint8 (H, W, 3), scaled to ``width × height`` if given.

        YUV→RGB at full size (swscale, unscaled: cheap), then OpenCV's resize: area averaging when
        shrinking below half size (anything else would alias there), bilinear when shrinking less,
        bicubic when enlarging. Measured 3× cheaper than swscale's scaling bicubic, and closer to
        torchvision's antialiased bicubic that qwen-vl-utils uses (mean |Δ| 0.15 vs 0.81 grey levels).
        At the shrink a 720p camera's clip frames take (1280×720 → 1008×560) bilinear is as close to
        it as bicubic (mean |Δ| 0.147 vs 0.149) and cheaper (2-fps ingest of a 4-minute file 3 %
        faster, measured interleaved in one run).
        """
        w = width or self.width
        h = height or self.height
        rgb = self.av_frame.to_ndarray(format="rgb24")
        if (w, h) == (rgb.shape[1], rgb.shape[0]):
            return rgb
        shrink = min(w / rgb.shape[1], h / rgb.shape[0])
        interpolation = cv2.INTER_AREA if shrink < 0.5 else cv2.INTER_LINEAR if shrink < 1.0 else cv2.INTER_CUBIC
        return cv2.resize(rgb, (w, h), interpolation=interpolation)

    def to_gray(self, width: int, height: int) -> np.ndarray:
        """A small grayscale thumbnail (uint8, full range), the input of the activity signal and of the
        motion model. From an 8-bit planar YUV frame it is the luma plane itself, area-averaged by
        OpenCV (5× cheaper than swscale's area filter; the two differ by at most 2 grey levels), with
        limited-range luma (16–235) stretched to 0–255 as swscale does; other formats go through
        swscale. Shares its halvings with the frame's other thumbnails (:meth:`_plane`)."""
        f = self.av_frame
        if f.format.name in _LUMA_PLANE_FORMATS:
            small = self._plane(0, width, height)
            full = f.format.name.startswith("yuvj") or f.color_range == 2  # AVCOL_RANGE_JPEG
            return small if full else cv2.LUT(small, _LIMITED_TO_FULL)
        return f.reformat(width=width, height=height, format="gray", interpolation="AREA").to_ndarray()

    def to_small_rgb(self, width: int, height: int) -> np.ndarray:
        """A small RGB thumbnail (uint8), the scene-cut detector's input. From 8-bit planar YUV it is
        each plane area-averaged by OpenCV, then BT.601 to RGB on the small image (4× cheaper than
        swscale's area filter on the whole frame; within ~2 levels of it on average); other formats go through
        swscale."""
        f = self.av_frame
        if f.format.name not in _PLANAR_YUV_FORMATS:
            return f.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
        y, cb, cr = (self._plane(i, width, height).astype(np.float32) for i in range(3))
        if f.format.name.startswith("yuvj") or f.color_range == 2:  # full range
            cb, cr = cb - 128.0, cr - 128.0
        else:
            y, cb, cr = (y - 16.0) * (255.0 / 219.0), (cb - 128.0) * (255.0 / 224.0), (cr - 128.0) * (255.0 / 224.0)
        rgb = np.stack((y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb), axis=-1)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    def to_frame(self, width: int | None = None, height: int | None = None) -> Frame:
        return Frame(
            t=self.t,
            image=self.to_rgb(width, height),
            pts=self.pts,
            pts_estimated=self.pts_estimated,
            keyframe=self.keyframe,
        )


@dataclass
class SourceStats:
    frames: int = 0
    corrupt_packets: int = 0
    reconnects: int = 0
    disconnects: int = 0
    pts_discontinuities: int = 0
    pts_estimated: int = 0
    last_error: str | None = None


class Source:
    """A video source. Use :meth:`open` (probes it, raising typed errors), then iterate :meth:`frames`.

    >>> with Source.open("clip.mp4") as src:          # doctest: +SKIP
    ...     for f in src.frames(skip="NONREF"):
    ...         print(f.t, f.to_rgb(448, 252).shape)
    """

    def __init__(self, uri: str, *, kind: str, target: str, config: SourceConfig, start_at: datetime | None):
        # ``uri`` is the form that may be shown (logs, errors, stats): credentials redacted, ``${VAR}``
        # references kept. ``target`` is what FFmpeg opens: for a URL, references expanded here and
        # only here (:mod:`.secrets`); it is never logged.
        self.uri = redact(uri)
        self.kind = kind
        self.target = expand(target) if kind != "file" else target
        self._secrets = secret_values(self.target) if kind != "file" else []
        self.config = config
        self._start_at = start_at
        self._container: av.container.InputContainer | None = None
        self.skip_loop_filter = False  # see :meth:`open`
        self._stop = threading.Event()
        # Waits between connect attempts and live reconnects; jitter so cameras that dropped together
        # do not all come back at the same instant.
        self._backoff = Backoff(
            initial_s=min(config.backoff_initial_s, config.backoff_max_s), cap_s=config.backoff_max_s, jitter=0.2
        )
        self.stats = SourceStats()
        # Probed properties (set by _probe).
        self.width = 0
        self.height = 0
        self.native_fps: float | None = None
        self.frame_count: int | None = None
        self.duration: float | None = None
        self.live = kind == "rtsp"
        self.codec = ""
        self.epoch: datetime = UNIX_EPOCH
        self.clock = StreamClock()
        self._last_packet_t: float | None = None
        self._epoch_from_stream = False  # live: epoch taken from the server's RTCP time
        self._continued = False  # live: continues a previous session's axis (:meth:`continue_from`)
        self._connect_started_at: datetime | None = None
        self._closed_gop: Callable[[bytes], bool] | None = None  # set by _probe for H.264 / HEVC

    @property
    def decoder_threads(self) -> int:
        """FFmpeg decoder threads for a full decode (``source.decoder_threads``; 0 = auto): one for a live
        source, which decodes at the camera's pace (frame threads there cost about a quarter more CPU and
        add frames of delay, and a machine holding many cameras has no core to spare per stream);
        FFmpeg's own choice (0) for a file, which threads make faster, unless its GOPs are decoded side by
        side (one each then). See :meth:`threads_for`."""
        return self.threads_for("DEFAULT")

    def threads_for(self, skip: str) -> int:
        """Decoder threads for a decode with ``skip`` (``source.decoder_threads``; 0 = auto): one for a
        live source; one for each GOP worker (:meth:`gop_workers`); one for a file decoded with
        ``NONREF`` beside a decode-ahead thread (every frame left is a reference the next one waits
        for, so FFmpeg's frame threads bought 4 % of wall time for 23 % more CPU on 720p30 H.264, and
        the consumer's thread needs the other core); FFmpeg's own choice otherwise."""
        n = self.config.decoder_threads
        if n > 0:
            return n
        if self.live or (skip == "NONREF" and self.config.decode_ahead > 0) or self.gop_workers(skip) > 1:
            return 1
        return 0

    def gop_workers(self, skip: str) -> int:
        """Threads that decode this file's closed GOPs side by side (:mod:`.gops`): ``source.decode_gops``
        for a file whose codec marks them (H.264, HEVC) decoded with ``DEFAULT`` or ``NONREF`` beside a
        decode-ahead, else 1 (in order)."""
        n = self.config.decode_gops
        if n <= 1 or self.live or not self.config.decode_ahead or skip not in ("DEFAULT", "NONREF"):
            return 1
        return n if self._closed_gop is not None else 1

    def continue_from(self, epoch: datetime, last_t: float | None) -> None:
        """Live: continue the stream-seconds axis of an earlier session of this stream (a restarted
        worker). The stream keeps ``epoch`` (its first session's); frames map to their RTCP or wall-clock
        time minus it, never at or before ``last_t`` (the previous session's last time). Call before
        :meth:`frames`; a file ignores it (files resume exactly, by PTS)."""
        if not self.live:
            return
        self.epoch = epoch
        self.clock.epoch = epoch
        if last_t is not None:
            self.clock.last_t = max(float(last_t), self.clock.last_t or 0.0)
        self._continued = True

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        uri: str | os.PathLike,
        *,
        config: SourceConfig | None = None,
        start_at: str | datetime | float | None = None,
        exact: bool = True,
    ) -> Source:
        """Open and probe a source. Raises a :class:`~pipeline.errors.SourceError` subclass on bad input.
        ``exact=False``: the pixels only feed the detector and motion, so with ``loop_filter: auto`` the
        decoder may skip its deblocking filter (the frames' times are the same either way)."""
        kind, target = classify(uri)
        config = config or SourceConfig()
        src = cls(os.fspath(uri), kind=kind, target=target, config=config, start_at=parse_epoch(start_at))
        src.skip_loop_filter = config.loop_filter == "off" or (config.loop_filter == "auto" and not exact)
        if kind == "file":
            src._check_file()
        src._container = src._connect(attempts=config.connect_attempts)
        try:
            src._probe(src._container)
        except BaseException:
            src.close()
            raise
        return src

    def _check_file(self) -> None:
        path = Path(self.target)
        if not path.exists():
            raise SourceNotFoundError("no such file", uri=self.uri)
        if path.is_dir():
            raise InvalidVideoError("is a directory, not a video file", uri=self.uri)
        if path.stat().st_size == 0:
            raise EmptySourceError("file is empty (0 bytes)", uri=self.uri)

    def _av_open(self) -> av.container.InputContainer:
        cfg = self.config
        options: dict[str, str] = {}
        if self.kind == "rtsp":
            options["rtsp_transport"] = cfg.rtsp_transport
            # the SDP names the codec; a short look at the stream gives its size and rate (a 720p30
            # camera on 127.0.0.1 connects in 0.48 s instead of 0.77 s with FFmpeg's default)
            options["analyzeduration"] = str(round(cfg.rtsp_analyze_s * 1e6))
        timeout = None if self.kind == "file" else (cfg.open_timeout_s, cfg.read_timeout_s)
        self._connect_started_at = datetime.now(UTC)
        return av.open(self.target, mode="r", options=options, timeout=timeout)

    def _connect(self, *, attempts: int | None) -> av.container.InputContainer:
        """Open the container; network sources retry with the source's backoff (:mod:`.retry`).

        A file's errors, and an unsupported protocol or demuxer, are permanent: typed at once, never
        retried. ``attempts=None`` retries until it opens or :meth:`stop` is called.
        """
        tries = 0

        def open_once() -> av.container.InputContainer:
            nonlocal tries
            tries += 1
            started = time.monotonic()
            try:
                return self._av_open()
            except (av.error.ProtocolNotFoundError, av.error.DemuxerNotFoundError) as exc:
                if self.kind == "file":
                    raise UnsupportedSourceError(str(exc), uri=self.uri) from exc
                raise UnsupportedSourceError(self._redact(str(exc)), uri=self.uri) from None
            except (av.error.FFmpegError, OSError) as exc:
                if self.kind == "file":
                    raise self._file_open_error(exc) from exc
                err = exc
            except UnicodeDecodeError as exc:  # PyAV decodes container metadata as UTF-8: random bytes
                raise InvalidVideoError("not a readable video (unreadable metadata)", uri=self.uri) from (
                    exc if self.kind == "file" else None
                )
            self.stats.last_error = self._redact(f"{type(err).__name__}: {err}")
            # When the open timeout interrupts av.open, FFmpeg reports whatever the protocol was doing
            # (ExitError for http, InvalidDataError for rtsp): a server that accepts and never answers.
            timed_out = isinstance(err, (TimeoutError, av.error.TimeoutError)) or (
                time.monotonic() - started >= self.config.open_timeout_s
            )
            if timed_out:
                self.stats.last_error = f"no answer within {self.config.open_timeout_s:g}s ({self.stats.last_error})"
            raise _OpenFailed(err, timed_out)

        def on_retry(attempt: int, failure: BaseException, delay: float) -> None:
            log.warning(
                "%s: connect attempt %d failed (%s); retrying in %.1fs", self.uri, attempt, self.stats.last_error, delay
            )

        try:
            return retry_call(
                open_once,
                retry_on=_OpenFailed,
                backoff=self._backoff,
                attempts=attempts,
                on_retry=on_retry,
                stop_event=self._stop,
            )
        except _OpenFailed as failure:
            _err, timed_out = failure.args
            if attempts is None or tries < attempts:  # the stop event cut a backoff wait short
                raise SourceUnreachableError("stopped while reconnecting", uri=self.uri) from None
            cls = SourceTimeoutError if timed_out else SourceUnreachableError
            # Not chained to FFmpeg's error: its text (kept in a traceback) holds the URL as opened.
            raise cls(f"unreachable after {tries} attempt(s): {self.stats.last_error}", uri=self.uri) from None

    def _redact(self, text: str) -> str:
        """``text`` (an FFmpeg message may echo the URL as opened) with this source's credentials masked."""
        return redact(text, secrets=self._secrets)

    def _file_open_error(self, exc: Exception) -> SourceError:
        """The typed, permanent error for a local file that ``av.open`` refused."""
        if isinstance(exc, av.error.FileNotFoundError):
            return SourceNotFoundError("no such file", uri=self.uri)
        if isinstance(exc, av.error.InvalidDataError):
            return InvalidVideoError(f"not a readable video ({exc.strerror or exc})", uri=self.uri)
        if isinstance(exc, av.error.FFmpegError):
            return InvalidVideoError(f"cannot open ({exc.strerror or exc})", uri=self.uri)
        return InvalidVideoError(f"cannot open ({exc})", uri=self.uri)

    def _probe(self, container: av.container.InputContainer) -> None:
        if not container.streams.video:
            kinds: list[str] = sorted({s.type for s in container.streams}) or ["none"]
            raise NoVideoStreamError(f"no video stream (streams: {', '.join(kinds)})", uri=self.uri)
        stream = container.streams.video[0]
        cc = stream.codec_context
        self.codec = cc.name if cc is not None else ""
        self._closed_gop = closed_gop_test(self.codec, cc.extradata if cc is not None else None)
        self.width, self.height = int(stream.width or 0), int(stream.height or 0)
        self._check_resolution(self.width, self.height, probing=True)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.native_fps = float(rate) if rate and float(rate) > 0 else None
        self.frame_count = int(stream.frames) if stream.frames else None
        if stream.duration is not None and stream.time_base is not None:
            self.duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            self.duration = container.duration / av.time_base
        if self.kind == "http":
            self.live = self.duration is None
        nominal_dt = 1.0 / self.native_fps if self.native_fps else 1 / 30
        if self.live:
            realtime = container.start_time_realtime
            if realtime and realtime > 0:
                self.epoch = datetime.fromtimestamp(realtime / 1e6, tz=UTC)
                self._epoch_from_stream = True
            else:
                self.epoch = datetime.now(UTC)  # refined to the first frame's arrival below
        else:
            self.epoch = self._start_at or _creation_time(container, stream) or UNIX_EPOCH
        if self._start_at is not None:
            self.epoch = self._start_at
        self.clock = StreamClock(epoch=self.epoch, nominal_dt=nominal_dt)

    def _check_resolution(self, width: int, height: int, *, probing: bool) -> None:
        cfg = self.config
        if probing and (width == 0 or height == 0):
            return  # some live streams only learn their size from the first frame
        if width <= 0 or height <= 0:
            raise ResolutionError(f"invalid resolution {width}x{height}", uri=self.uri)
        if width > cfg.max_width or height > cfg.max_height or width * height > cfg.max_pixels:
            raise ResolutionError(
                f"resolution {width}x{height} is beyond the limits "
                f"({cfg.max_width}x{cfg.max_height}, {cfg.max_pixels} pixels)",
                uri=self.uri,
            )

    # ---- cheap looks at a file's packets (no decoding) ------------------------------------------

    def _packets(self, max_seconds: float | None = None) -> Iterator[tuple[float | None, bool]]:
        """(time, is_keyframe) of the video packets of a file, demuxed from a separate handle."""
        if not self.live:
            with av.open(self.target, mode="r") as container:
                stream = container.streams.video[0]
                tb = stream.time_base
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    t = float(packet.pts * tb) if packet.pts is not None and tb else None
                    if max_seconds is not None and t is not None and t > max_seconds:
                        return
                    yield t, bool(packet.is_keyframe)

    def keyframe_interval(self, *, probe_seconds: float = 30.0) -> float | None:
        """The keyframe interval in seconds if keyframes are regular in the first ``probe_seconds``
        (every interval within one frame of the others), else ``None``. Files only."""
        if self.live:
            return None
        try:
            keys = sorted(t for t, key in self._packets(probe_seconds) if key and t is not None)
        except av.error.FFmpegError:
            return None
        if len(keys) < 3:
            return None
        gaps = np.diff(keys)
        frame = 1.0 / (self.native_fps or 30.0)
        if gaps.max() - gaps.min() > 0.5 * frame:
            return None
        return float(np.median(gaps))

    def count_frames(self) -> int:
        """Count video packets by demuxing (for containers that do not declare a frame count)."""
        return sum(1 for _ in self._packets())

    # ---- iteration ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask a running :meth:`frames` loop (possibly in another thread) to end soon."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def frames(self, *, skip: str = "DEFAULT", start_s: float | None = None) -> Iterator[DecodedFrame]:
        """Decoded frames in presentation order, each with its stream time from PTS.

        ``skip``: FFmpeg ``skip_frame`` mode (``DEFAULT``, ``NONREF``, ``NONKEY`` …).
        ``start_s``: files only; seek to the keyframe at or before ``start_s`` and yield frames from
        ``start_s`` on (how a restarted worker resumes from its watermark).
        """
        if not _is_skip_mode(skip):
            raise ValueError(f"skip must be one of {SKIP_MODES}, got {skip!r}")
        if self.live:
            yield from self._live_frames(skip)
        elif self.gop_workers(skip) > 1:  # the GOP workers decode ahead of the consumer themselves
            yield from self._file_frames(skip, start_s)
        elif self.config.decode_ahead:
            yield from _ahead(self._file_frames(skip, start_s), self.config.decode_ahead)
        else:
            yield from self._file_frames(skip, start_s)

    def _container_or_connect(self, attempts: int | None) -> av.container.InputContainer:
        if self._container is None:
            self._container = self._connect(attempts=attempts)
        return self._container

    def _prepare_stream(self, container: av.container.InputContainer, skip: SkipMode) -> av.video.stream.VideoStream:
        if not container.streams.video:
            raise NoVideoStreamError("no video stream", uri=self.uri)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = self.threads_for(skip)
        stream.codec_context.skip_frame = skip
        if self.skip_loop_filter:
            stream.codec_context.options = {**stream.codec_context.options, "skip_loop_filter": "all"}
        return stream

    def _decode_session(
        self, container, stream, *, start_s: float | None, skip: SkipMode = "DEFAULT"
    ) -> Iterator[DecodedFrame]:
        """Decode one container until EOF; corrupt packets are counted and skipped.

        Records the time of the last demuxed packet (``_last_packet_t``), which says how far the
        file really goes whatever the decoder skipped. With ``skip="NONKEY"`` non-key packets are
        not even handed to the decoder.
        """
        consecutive_bad = 0
        for packet in container.demux(stream):
            if self._stop.is_set():
                return
            if packet.size:
                self._note_packet(packet, stream)
                if skip == "NONKEY" and not packet.is_keyframe:
                    continue
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError as exc:
                consecutive_bad += 1
                self._corrupt_packet(exc, consecutive_bad)
                continue
            consecutive_bad = 0
            for frame in decoded:
                out = self._wrap(frame, stream)
                if start_s is not None and out.t < start_s:
                    continue
                yield out

    def _gop_session(self, stream, *, start_s: float | None, skip: SkipMode, workers: int) -> Iterator[DecodedFrame]:
        """:meth:`_decode_session`'s frames, the file's closed GOPs decoded by ``workers`` threads
        (:func:`.gops.decode_gops`), each with its own container; times are mapped here, in order."""
        assert self._closed_gop is not None
        tb = stream.time_base
        start = stream.start_time or 0
        seek_to = int((start_s + float(start * tb)) / tb) if start_s is not None and start_s > 0 and tb else None

        def open_stream():
            container = self._av_open()
            try:
                ws = self._prepare_stream(container, skip)
                if seek_to is not None:
                    container.seek(seek_to, stream=ws, backward=True, any_frame=False)
            except BaseException:
                container.close()
                raise
            return container, ws

        def on_packet(packet) -> None:
            if packet.size:
                self._note_packet(packet, stream)

        frames = decode_gops(
            open_stream,
            closed_gop=self._closed_gop,
            workers=workers,
            depth=self._gop_depth(),
            stop=self._stop,
            on_packet=on_packet,
            on_corrupt=self._corrupt_packet,
        )
        for frame in frames:
            out = self._wrap(frame, stream)
            if start_s is not None and out.t < start_s:
                continue
            yield out

    def _note_packet(self, packet, stream) -> None:
        """Record a demuxed packet's time (``_last_packet_t``: how far the file really goes, whatever
        the decoder skipped)."""
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is not None and stream.time_base:
            self._last_packet_t = float((stamp - (stream.start_time or 0)) * stream.time_base)

    def _corrupt_packet(self, exc: av.error.InvalidDataError, consecutive: int) -> None:
        """A packet the decoder rejected: counted and skipped; more than ``max_consecutive_corrupt`` in a
        row is an undecodable source."""
        self.stats.corrupt_packets += 1
        self.stats.last_error = self._redact(f"corrupt packet: {exc}")
        if consecutive > self.config.max_consecutive_corrupt:
            raise InvalidVideoError(
                f"{consecutive} consecutive undecodable packets (last: {self._redact(str(exc))})", uri=self.uri
            ) from (exc if self.kind == "file" else None)

    def _gop_depth(self) -> int:
        """Pictures each GOP worker may hold ahead: about a GOP's worth (so both keep decoding while the
        consumer is in the other's GOP), within 48 MB of 8-bit 4:2:0 pictures per worker (32 at 720p, 15
        at 1080p), never fewer than ``decode_ahead``."""
        picture = max(1, self.width * self.height * 3 // 2)
        return max(self.config.decode_ahead, min(32, _GOP_QUEUE_BYTES // picture))

    def _wrap(self, frame: av.VideoFrame, stream) -> DecodedFrame:
        if self.stats.frames == 0 or frame.width != self.width or frame.height != self.height:
            self._check_resolution(frame.width, frame.height, probing=False)
            self.width, self.height = frame.width, frame.height
        before = self.clock.discontinuities
        t, estimated = self.clock.time_of(frame.pts, frame.time_base or stream.time_base)
        if self.clock.discontinuities != before:
            self.stats.pts_discontinuities += 1
            log.warning("%s: PTS went backwards at t=%.3fs; re-anchored", self.uri, t)
        if estimated:
            self.stats.pts_estimated += 1
        self.stats.frames += 1
        return DecodedFrame(
            t=t,
            pts=frame.pts,
            pts_estimated=estimated,
            keyframe=bool(frame.key_frame),
            width=frame.width,
            height=frame.height,
            av_frame=frame,
        )

    def _file_frames(self, skip: SkipMode, start_s: float | None) -> Generator[DecodedFrame, None, None]:
        container = self._container_or_connect(attempts=1)
        stream = self._prepare_stream(container, skip)
        tb = stream.time_base
        base_s = float(stream.start_time * tb) if (stream.start_time is not None and tb) else None
        self.clock.begin_session(anchor_s=0.0, base_s=base_s)
        if start_s is not None and start_s > 0 and tb:
            target = int((start_s + (base_s or 0.0)) / tb)
            container.seek(target, stream=stream, backward=True, any_frame=False)
            self.clock.last_t = None  # times restart from the seek point; PTS still map absolutely
        try:
            last_t = None
            self._last_packet_t = None
            workers = self.gop_workers(skip)
            if workers > 1:
                session = self._gop_session(stream, start_s=start_s, skip=skip, workers=workers)
            else:
                session = self._decode_session(container, stream, start_s=start_s, skip=skip)
            for out in session:
                last_t = out.t
                yield out
        except av.error.FFmpegError as exc:
            # Failing before the first frame: FFmpeg took the bytes for a container, but they hold no video.
            what = "not a readable video (decoding failed: {})" if self.stats.frames == 0 else "decoding failed ({})"
            raise InvalidVideoError(what.format(self._redact(str(exc.strerror or exc))), uri=self.uri) from (
                exc if self.kind == "file" else None
            )  # a URL's FFmpeg text holds it as opened
        finally:
            self.close()
        if self._stop.is_set():
            return
        if self.stats.frames == 0:
            raise EmptySourceError("no decodable video frame", uri=self.uri)
        reached = max(t for t in (last_t, self._last_packet_t) if t is not None) if last_t is not None else None
        if self.duration and reached is not None and start_s is None:
            slack = 1.0 + 2.0 / (self.native_fps or 10.0)
            # A file cut short still declares its full duration in its header. (The check uses the
            # video stream's own duration, so audio that outlasts the video does not trip it, and the
            # last demuxed packet, so frames the decoder was told to skip do not either.)
            if reached < self.duration - slack:
                raise InvalidVideoError(
                    f"file ends at {last_t:.2f}s but declares {self.duration:.2f}s: truncated or corrupt "
                    f"({self.stats.frames} frames were decoded and delivered)",
                    uri=self.uri,
                )

    def _live_frames(self, skip: SkipMode) -> Iterator[DecodedFrame]:
        """Decode a live source across disconnects. Each reconnect is one attempt at a time, with the
        source's capped exponential backoff between attempts; ``max_reconnects`` (if set) bounds the
        attempts since the last frame was received, so a server that stays dead ends in a typed error."""
        cfg = self.config
        failures = 0  # consecutive failed sessions/attempts since the last frame
        first_session = True
        while not self._stop.is_set():
            err: Exception | None = None
            got_frames = 0
            try:
                reconnecting = self._container is None
                container = self._container_or_connect(attempts=1)
                if reconnecting:
                    self.stats.reconnects += 1
                stream = self._prepare_stream(container, skip)
                session_started = False
                burst = _Burst(cfg.live_burst_s)
                packets = container.demux(stream)
                while True:
                    asked = time.monotonic()
                    raw = next(packets, None)
                    if raw is None:
                        break
                    if self._stop.is_set():
                        return
                    burst.read(time.monotonic() - asked)
                    try:
                        decoded = raw.decode()
                    except av.error.InvalidDataError:
                        self.stats.corrupt_packets += 1
                        continue
                    for frame in decoded:
                        if not session_started:
                            self._begin_live_session(container, frame, stream, first=first_session)
                            session_started = True
                            first_session = False
                        got_frames += 1
                        failures = 0
                        out = self._wrap(frame, stream)
                        burst.frame(out.t)
                        yield out
                    pause = burst.pause()
                    if pause and self._stop.wait(pause):
                        return
                reason = "end of stream"
            except SourceUnreachableError as exc:
                err, reason = exc, str(exc)
            except _NETWORK_ERRORS as exc:
                err, reason = exc, self._redact(f"{type(exc).__name__}: {exc}")
            except av.error.FFmpegError as exc:
                err, reason = exc, self._redact(f"{type(exc).__name__}: {exc}")
            finally:
                self.close()
            if self._stop.is_set():
                return  # stop() (also while reconnecting) ends the stream quietly
            # A live source that ends or errors has disconnected: reconnect, never finish.
            if got_frames or not isinstance(err, SourceUnreachableError):
                self.stats.disconnects += 1
            self.stats.last_error = reason
            failures += 1
            limit = (
                cfg.max_reconnects
                if cfg.reconnect_forever
                else min(cfg.max_reconnects or cfg.connect_attempts, cfg.connect_attempts)
            )
            if limit is not None and failures > limit:
                raise SourceUnreachableError(
                    f"gave up after {failures} failed reconnect attempt(s) (last: {reason})", uri=self.uri
                ) from (err if isinstance(err, SourceError) else None)  # FFmpeg's text holds the opened URL
            delay = self._backoff.delay(failures)
            log.warning(
                "%s: disconnected (%s) after %d frames; reconnecting in %.1fs", self.uri, reason, got_frames, delay
            )
            if self._stop.wait(delay):
                return

    def _begin_live_session(self, container, frame: av.VideoFrame, stream, *, first: bool) -> None:
        tb = frame.time_base or stream.time_base
        base_s = float(frame.pts * tb) if (frame.pts is not None and tb) else None
        realtime = container.start_time_realtime
        now = datetime.now(UTC)
        # The first frame reached us while av.open was still probing (FFmpeg reads seconds of packets
        # before it returns), so the time it is handed out is late by the whole probe. The start of
        # this connection is a lower bound on its arrival and far closer to it.
        started = self._connect_started_at
        if started is not None and started < now:
            now = started
        if first and not self._continued:
            if not self._epoch_from_stream:
                self.epoch = now
                self.clock.epoch = now
            anchor = (
                0.0
                if not (realtime and realtime > 0)
                else (datetime.fromtimestamp(realtime / 1e6, tz=UTC) - self.epoch).total_seconds()
            )
        elif realtime and realtime > 0:
            anchor = (datetime.fromtimestamp(realtime / 1e6, tz=UTC) - self.epoch).total_seconds()
        else:
            anchor = (now - self.epoch).total_seconds()
        anchor = max(anchor, 0.0)
        if realtime and realtime > 0 and tb:
            base_s = 0.0  # FFmpeg: start_time_realtime is the wall-clock time of pts 0, not of this frame
        if frame.pts is None:
            # RTSP's first keyframe often comes without PTS. The clock would place it one frame
            # after the previous session's last frame (ignoring this session's anchor) and then map
            # the next PTS to the anchor. Land it on the anchor instead, one frame before the first
            # frame with a PTS.
            dt = self.clock.nominal_dt
            if self.clock.last_t is not None:
                anchor = max(anchor, self.clock.last_t + dt)
            self.clock.last_t = anchor - dt
            anchor += dt
        self.clock.begin_session(anchor_s=anchor, base_s=base_s)


def _is_skip_mode(skip: str) -> TypeGuard[SkipMode]:
    return skip in SKIP_MODES


class _OpenFailed(Exception):
    """Internal: one failed network open, ``args = (error, timed_out)``; what :meth:`Source._connect` retries."""


def _ahead(gen: Generator, depth: int) -> Iterator:
    """Run ``gen`` in a thread, ``depth`` items ahead of the consumer: FFmpeg decodes (without the
    GIL) while the consumer converts and samples. Errors are re-raised in the consumer, in order."""
    import queue

    q: queue.Queue = queue.Queue(maxsize=depth)
    halt = threading.Event()
    end = object()

    def put(item) -> bool:
        return put_until(q, item, halt)

    def produce() -> None:
        try:
            for item in gen:
                if not put(item):
                    break
        except BaseException as exc:  # handed over to the consumer
            put(Raised(exc))
        finally:
            gen.close()
            put(end)

    worker = threading.Thread(target=produce, name="decode-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, Raised):
                raise item.exc
            yield item
    finally:
        halt.set()
        worker.join(timeout=10)


def _creation_time(container, stream) -> datetime | None:
    for meta in (container.metadata, stream.metadata):
        value = meta.get("creation_time") if meta else None
        if value:
            try:
                parsed = parse_epoch(value)
            except ValueError:
                continue
            if parsed is not None and parsed.year > 1971:
                return parsed
    return None


class _Burst:
    """When a live reader pauses to let frames gather (``source.live_burst_s``).

    Waking for every frame of a 30-fps camera costs CPU that decoding the same frames in a run does not
    (on a 720p30 H.264 file paced in real time: 5.0 % of a core frame by frame, 3.5-4 % in 1/4-1 s runs,
    3.0-3.4 % unpaced). So once a read had to wait for the camera (``EDGE_S``: the reader has caught
    up), the reader sleeps ``burst_s`` and the next packets wait in the socket's buffer. It pauses at
    most once per ``burst_s`` of stream time, so sleep takes at most half the wall clock of a reader that
    keeps pace, and a reader that is behind (its reads find data waiting) does not sleep at all."""

    EDGE_S = 0.004  # a read that took longer waited for the network

    def __init__(self, burst_s: float):
        self.burst_s = float(burst_s)
        self.waited = False
        self.t: float | None = None  # the stream time of the last frame
        self.paused_at: float | None = None  # the stream time at the last pause

    def read(self, took_s: float) -> None:
        self.waited = took_s > self.EDGE_S

    def frame(self, t: float) -> None:
        self.t = t

    def pause(self) -> float:
        """Seconds to sleep now (0: read on)."""
        if not self.burst_s or not self.waited or self.t is None:
            return 0.0
        if self.paused_at is not None and self.t - self.paused_at < self.burst_s:
            return 0.0
        self.paused_at = self.t
        self.waited = False
        return self.burst_s
