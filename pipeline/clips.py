"""Footage of a segment from its file: the span remuxed (no re-encode) into a streamable MP4, and single
frames decoded at given stream times (for a file segment's strip).

Clip (:func:`open_clip`): the segment's span with ``pad_s`` before and after, from the keyframe at or before
its padded start (so the first frame decodes), to the last packet whose decode time is within the padded
end. Only the first video stream is copied (the one longwatch decoded; no audio). The output is fragmented
MP4 (``movflags=frag_keyframe+empty_moov+default_base_moof``): it needs no seek back, so it streams out as
it is muxed, in chunks (:class:`ClipStream` is an iterator of bytes).

Times: longwatch's stream seconds of a file's frame are ``(pts − start_time) × time_base`` of its video
stream (:mod:`.timebase`). The clip keeps the source's time base and its packets' timestamps shifted by
the first keyframe's decode time (so no timestamp is negative and no muxer shifts them again). Hence, for
any frame of the clip, with ``t`` = its presentation time in the clip (``pts × time_base``, what PyAV,
ffprobe and a browser's ``currentTime`` give): ``stream seconds = t + offset_s`` (:attr:`ClipStream.offset_s`).
``first_s`` is the stream seconds of the clip's first frame (a keyframe; with B-frames the clip's own
first presentation time is the codec's reorder delay, e.g. 0.08 s, not 0).

Frames (:func:`frames_at`): for each stream time, the decoded frame nearest to it (RGB), seeking to the
keyframe before it.

Errors: :class:`RecordingGoneError` (a ``FileNotFoundError``: the file is not there, or it is no longer the
file the segments came from), :class:`ClipUnavailableError` (a ``ValueError``: its video cannot go into MP4
without re-encoding, e.g. MS-MPEG4 in an AVI, or its packets carry no timestamps).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

import av
import numpy as np

from .errors import LongwatchError
from .identity import source_fingerprint
from .source import classify

__all__ = [
    "CHUNK_BYTES",
    "ClipStream",
    "ClipUnavailableError",
    "RecordingGoneError",
    "check_recording",
    "clip_problem",
    "frames_at",
    "open_clip",
    "recording_path",
]

CHUNK_BYTES = 256 * 1024  # what the clip stream hands out at a time (at least; fragments are whole GOPs)
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
_SEEK_TRIES = 4


class RecordingGoneError(LongwatchError, FileNotFoundError):
    """The segment's file is not there any more, or holds other footage than when it was processed."""


class ClipUnavailableError(LongwatchError, ValueError):
    """The file's video cannot be remuxed into MP4 (a codec MP4 does not carry, no timestamps)."""


def recording_path(source: str | None) -> str | None:
    """The local file a stream's source names, or None (a camera, any URL: nothing recorded to go back to)."""
    if not source:
        return None
    try:
        kind, target = classify(source)
    except LongwatchError:
        return None
    return target if kind == "file" else None


def check_recording(path: str, source_fp: dict | None) -> None:
    """Raise :class:`RecordingGoneError` unless ``path`` is a file with the content the stream's watermark
    fingerprinted (``source_fp``, :func:`.identity.source_fingerprint`: size and the sha256 of its first and
    last MiB; its modification time may differ, e.g. a copy). No fingerprint: only that it exists."""
    if not os.path.isfile(path):
        raise RecordingGoneError(f"the recording {path} is not there any more")
    if not source_fp or source_fp.get("kind") != "file":
        return
    now = source_fingerprint(path)
    if any(now.get(k) != source_fp.get(k) for k in ("size", "head_tail_sha256")):
        raise RecordingGoneError(f"{path} is no longer the file these segments came from (its content changed)")


def clip_problem(path: str) -> str | None:
    """Why the file's video cannot be remuxed into MP4 (None: it can). Opens the file; reads no packet."""
    try:
        with av.open(path) as src:
            if not src.streams.video:
                return "the file has no video stream"
            vs = src.streams.video[0]
            out = av.open(io.BytesIO(), "w", format="mp4")
            try:
                out.add_stream_from_template(vs)
            except ValueError as exc:
                return f"its video ({vs.codec_context.name}) cannot go into MP4 without re-encoding: {exc}"
            finally:
                out.close()
    except (av.error.FFmpegError, OSError) as exc:
        return f"the file cannot be read: {exc}"
    return None


class _Sink:
    """A write-only file for the MP4 muxer: what it writes waits here until handed out."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: Any) -> int:
        b = bytes(data)
        self.parts.append(b)
        self.size += len(b)
        return len(b)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts, self.size = [], 0
        return out


def _base_pts(container: Any, vs: Any) -> int:
    """The PTS longwatch's stream seconds count from: the stream's start_time, else its first frame's PTS."""
    if vs.start_time is not None:
        return int(vs.start_time)
    container.seek(0, stream=vs, backward=True, any_frame=False)
    for frame in container.decode(vs):
        if frame.pts is not None:
            return int(frame.pts)
    return 0


class ClipStream:
    """A prepared clip: the file is open, positioned at the first keyframe; iterate for the MP4's bytes
    (the file is closed at the end, or by :meth:`close`). ``first_s``, ``offset_s``: see the module doc;
    ``start_s`` / ``end_s``: the padded span asked for (stream seconds)."""

    def __init__(self, path: str, start_s: float, end_s: float, *, pad_s: float = 1.0):
        self.path = path
        self.start_s = max(0.0, float(start_s) - pad_s)
        self.end_s = float(end_s) + pad_s
        try:
            self._src = av.open(path)
        except (av.error.FFmpegError, OSError) as exc:
            raise RecordingGoneError(f"cannot open the recording {path}: {exc}") from exc
        self._out: Any = None
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    def _prepare(self) -> None:
        src = self._src
        if not src.streams.video:
            raise ClipUnavailableError(f"{self.path} has no video stream")
        vs = self._vs = src.streams.video[0]
        tb: Fraction | None = vs.time_base
        if not tb:
            raise ClipUnavailableError(f"{self.path}: its video stream has no time base")
        self.time_base = tb
        self._sink = _Sink()
        self._out = av.open(self._sink, "w", format="mp4", options={"movflags": MOVFLAGS})
        try:
            self._ostream = self._out.add_stream_from_template(vs)
        except ValueError as exc:
            self._out.close()
            raise ClipUnavailableError(
                f"the video of {self.path} ({vs.codec_context.name}) cannot go into MP4 without re-encoding"
            ) from exc
        base = self._base = _base_pts(src, vs)
        start_pts = base + int(self.start_s / tb)
        self._end_pts = base + int(np.ceil(self.end_s / tb))
        # the keyframe at or before the padded start (a seek may land a little late: then from further back)
        target = start_pts
        first = None
        for _ in range(_SEEK_TRIES):
            src.seek(max(target, base), stream=vs, backward=True, any_frame=False)
            self._packets = src.demux(vs)
            first = self._first_keyframe()
            if first is None or first.pts <= start_pts or target <= base:
                break
            target -= max(int(1 / tb), 2 * (first.pts - start_pts))
        if first is None:
            raise ClipUnavailableError(f"{self.path}: no keyframe with timestamps near {self.start_s:.3f} s")
        self._first = first
        self._first_pts = int(first.pts)  # (the packet's own fields change once it is muxed)
        self._shift = int(first.dts if first.dts is not None else first.pts)
        self.first_s = float((first.pts - base) * tb)
        self.offset_s = float((self._shift - base) * tb)

    def _first_keyframe(self) -> Any:
        for packet in self._packets:
            if packet.size and packet.is_keyframe and packet.pts is not None:
                return packet
        return None

    def _packets_in_span(self) -> Iterator[Any]:
        first = self._first
        yield first
        for packet in self._packets:
            if not packet.size:
                continue
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None:  # no timestamp at all: nothing to place it by
                continue
            dts = packet.dts if packet.dts is not None else pts
            if dts > self._end_pts:
                break
            if pts < self._first_pts:  # a leading picture of an open GOP: refers to the GOP before
                continue
            packet.pts, packet.dts = pts, dts
            yield packet

    def __iter__(self) -> Iterator[bytes]:
        try:
            for packet in self._packets_in_span():
                packet.pts -= self._shift
                packet.dts -= self._shift
                packet.stream = self._ostream
                self._out.mux(packet)
                if self._sink.size >= CHUNK_BYTES:
                    yield self._sink.take()
            self._out.close()
            tail = self._sink.take()
            if tail:
                yield tail
        finally:
            self.close()

    def close(self) -> None:
        for c in (self._out, self._src):
            try:
                if c is not None:
                    c.close()
            except Exception:  # already closed, or a half-written output
                pass


def open_clip(path: str, start_s: float, end_s: float, *, pad_s: float = 1.0) -> ClipStream:
    """Prepare the clip of [start_s − pad_s, end_s + pad_s] (stream seconds) of the file at ``path``."""
    return ClipStream(path, start_s, end_s, pad_s=pad_s)


def frames_at(path: str, times: Sequence[float]) -> list[np.ndarray]:
    """For each stream time, the file's decoded frame nearest to it (RGB uint8)."""
    try:
        src = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise RecordingGoneError(f"cannot open the recording {path}: {exc}") from exc
    with src:
        if not src.streams.video:
            raise ClipUnavailableError(f"{path} has no video stream")
        vs = src.streams.video[0]
        vs.thread_type = "AUTO"
        tb = vs.time_base
        if not tb:
            raise ClipUnavailableError(f"{path}: its video stream has no time base")
        base = _base_pts(src, vs)
        out: list[np.ndarray] = []
        for t in times:
            src.seek(base + max(0, int(t / tb)), stream=vs, backward=True, any_frame=False)
            best, best_gap = None, float("inf")
            for frame in src.decode(vs):
                if frame.pts is None:
                    continue
                ft = float((frame.pts - base) * tb)
                gap = abs(ft - t)
                if gap < best_gap:
                    best, best_gap = frame, gap
                if ft > t:
                    break
            if best is None:
                raise ClipUnavailableError(f"{path}: no frame near {t:.3f} s")
            out.append(best.to_ndarray(format="rgb24"))
        return out
