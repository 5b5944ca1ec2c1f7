"""Network sources against real servers on 127.0.0.1: GStreamer's RTSP server, Python's http.server.

No mocks: the RTSP server is GstRtspServer in a child process (``tests/rtsp_server.py``) serving the
real footage in real time; HTTP and HLS are served by a ``ThreadingHTTPServer`` thread with Range
support. Every test is bounded by a pytest-timeout mark, so a hang fails instead of blocking.
"""

from __future__ import annotations

import functools
import http.server
import math
import os
import re
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import av
import numpy as np
import pytest
from rtsp_server import HOST, RtspServer, free_port

from longwatch.pipeline.config import SamplerConfig, SourceConfig
from longwatch.pipeline.errors import SourceTimeoutError, SourceUnreachableError
from longwatch.pipeline.sampler import choose_size, sample_clips
from longwatch.pipeline.source import Source

REPO = Path(__file__).resolve().parents[1]
FOOTAGE_DIR = Path(os.environ.get("LONGWATCH_FOOTAGE", REPO.parent / "shared" / "footage"))  # as conftest.py
FOOTAGE = FOOTAGE_DIR / "one-by-one-person-detection.mp4"
FPS = 10.0  # the footage's frame rate (checked below, not assumed)


def needs_footage(fn):
    """Mark a test as using the real footage, and skip it where the footage is absent."""
    skip = pytest.mark.skipif(not FOOTAGE.is_file(), reason=f"footage not found: {FOOTAGE}")
    return pytest.mark.footage(skip(fn))


# Short timeouts so failures surface fast; a live source still reconnects forever by default.
LIVE_CFG = SourceConfig(open_timeout_s=8.0, read_timeout_s=5.0, backoff_initial_s=0.2, backoff_max_s=1.0)


# ---- helpers ----------------------------------------------------------------------------------


def read_for(src: Source, seconds: float, *, max_frames: int = 100_000):
    """(t, wall-clock arrival) of the frames ``src`` delivers during ``seconds`` after the first."""
    out: list[tuple[float, float]] = []
    end = None
    for f in src.frames():
        now = time.time()
        out.append((f.t, now))
        if end is None:
            end = now + seconds
        if now >= end or len(out) >= max_frames:
            break
    return out


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@functools.cache
def local_times(path: str) -> tuple[float, ...]:
    with Source.open(path) as src:
        return tuple(f.t for f in src.frames())


# ---- RTSP ---------------------------------------------------------------------------------------


# Two ways a live stream gets its epoch: from the server's RTCP sender report (NTP wall clock, which
# FFmpeg exposes as start_time_realtime), or, when no report has arrived while probing, from our own
# wall clock. GStreamer's default report interval makes that a coin toss, so each is forced.
RTCP_MODES = {"rtcp-sr": 0.5, "no-rtcp-sr": 3600.0}


@pytest.fixture(scope="module", params=sorted(RTCP_MODES))
def rtsp(request):
    """One GstRtspServer per RTCP mode; each client gets the footage from its start, in real time."""
    if not FOOTAGE.is_file():
        pytest.skip(f"footage not found: {FOOTAGE}")
    with RtspServer(FOOTAGE, mount="/cam", rtcp_interval_s=RTCP_MODES[request.param]) as srv:
        yield srv


@needs_footage
@pytest.mark.rtsp
@pytest.mark.timeout(90)
def test_rtsp_frames_are_live_and_track_wall_clock(rtsp):
    opened_at = time.time()
    src = Source.open(rtsp.url, config=LIVE_CFG)
    try:
        assert src.live is True
        assert src.kind == "rtsp"
        assert (src.width, src.height) == (768, 432)
        assert src.native_fps == pytest.approx(FPS, rel=0.05)
        frames = read_for(src, 6.0)
        # 0 = auto: a live source decodes on one thread (it runs at the camera's pace; frame threads only
        # add CPU and delay there)
        assert src.decoder_threads == 1  # what the codec gets (test_source_files checks that it does)
    finally:
        src.stop()
        src.close()
    done_at = time.time()

    ts = np.array([t for t, _ in frames])
    arrivals = np.array([a for _, a in frames])
    assert len(ts) >= 40, f"only {len(ts)} frames in ~6 s of a 10 fps stream"
    assert np.all(np.diff(ts) > 0), "stream times must strictly increase"
    # Consecutive frames are one frame apart (10 fps, real footage, no reconnect in between).
    assert np.median(np.diff(ts)) == pytest.approx(1 / FPS, abs=0.01)
    assert src.stats.reconnects == 0 and src.stats.disconnects == 0
    # A frame time never counts a PTS hiccup that did not happen.
    assert src.stats.pts_discontinuities == 0

    # The epoch is "now" (UTC): between opening and the first frame's arrival, give or take clock skew.
    assert src.epoch.tzinfo is not None and src.epoch.utcoffset().total_seconds() == 0
    assert utc(opened_at - 2.0) <= src.epoch <= utc(arrivals[0] + 1.0), (src.epoch, utc(opened_at))

    # Times track wall clock: each frame's absolute time (epoch + t) is no later than its arrival
    # (frames do not come from the future), and not far behind it (no drift, no fast-forward).
    # The first frames arrive in a burst after probing, so they may lag by up to the open time.
    lag = arrivals - np.array([(src.epoch.timestamp() + t) for t in ts])
    assert lag.min() > -1.0, f"frames stamped up to {-lag.min():.2f}s in the future"
    assert lag.max() < (done_at - opened_at) + 1.0
    assert abs(lag[-1]) < 1.5, f"last frame lags wall clock by {lag[-1]:.2f}s"
    # ~N seconds of stream in ~N seconds of wall clock once the initial burst is over.
    steady = arrivals >= arrivals[0] + 2.0
    span_t = ts[steady][-1] - ts[steady][0]
    span_wall = arrivals[steady][-1] - arrivals[steady][0]
    assert span_t == pytest.approx(span_wall, abs=1.0), (span_t, span_wall)


def test_a_reader_that_is_behind_never_pauses_and_one_at_the_edge_pauses_once_a_burst():
    """The pause rule alone (``pipeline.source._Burst``), frame by frame at 30 fps."""
    from longwatch.pipeline.source import _Burst

    behind = _Burst(0.5)  # every read finds data waiting: catching up at full speed
    pauses = []
    for i in range(300):
        behind.read(0.0005)
        behind.frame(i / 30)
        pauses.append(behind.pause())
    assert not any(pauses)

    edge = _Burst(0.5)  # every read waits for the camera: at most one pause per 0.5 s of stream time
    paused_at = []
    for i in range(300):
        edge.read(0.03)
        edge.frame(i / 30)
        if edge.pause():
            paused_at.append(i / 30)
    assert len(paused_at) == 20 and np.all(np.diff(paused_at) >= 0.5 - 1e-9), paused_at

    off = _Burst(0.0)  # live_burst_s 0: frame by frame, as before
    off.read(0.03)
    off.frame(0.0)
    assert off.pause() == 0.0


@needs_footage
@pytest.mark.rtsp
@pytest.mark.timeout(90)
def test_a_caught_up_live_reader_decodes_in_bursts_and_loses_no_frame(rtsp):
    """``live_burst_s``: once the reader waits for the camera it sleeps that long and decodes what
    gathered in one go (fewer wake-ups, less CPU a camera), never dropping a frame or lagging more."""
    burst = 0.5
    src = Source.open(rtsp.url, config=LIVE_CFG.model_copy(update={"live_burst_s": burst}))
    try:
        frames = read_for(src, 5.0)
    finally:
        src.stop()
        src.close()
    ts = np.array([t for t, _ in frames])
    arrivals = np.array([a for _, a in frames])
    steady = arrivals >= arrivals[0] + 1.0  # after the frames FFmpeg buffered while probing
    gaps = np.diff(arrivals[steady])
    # Runs of frames (a half second of a 10-fps camera each) come together, separated by the pauses.
    assert (gaps > 0.3).sum() >= 4, np.round(gaps, 3)
    assert np.median(gaps) < 0.02, np.round(gaps, 3)  # within a run, frames come straight off the buffer
    # Nothing is lost: consecutive frames are one frame apart, and times strictly increase.
    assert np.all(np.diff(ts) > 0)
    assert np.all(np.diff(ts[steady]) < 1.5 / FPS), np.round(np.diff(ts[steady]), 3)
    # A frame waits at most a pause more than it would have: it lags the camera by about the burst.
    lag = arrivals[steady] - (src.epoch.timestamp() + ts[steady])
    assert lag.max() - lag.min() < burst + 0.3, (lag.min(), lag.max())


@needs_footage
@pytest.mark.rtsp
@pytest.mark.timeout(120)
@pytest.mark.parametrize("rtcp", sorted(RTCP_MODES))
def test_rtsp_server_restart_resumes_same_iterator(rtcp):
    downtime = 4.0
    with RtspServer(FOOTAGE, mount="/restart", rtcp_interval_s=RTCP_MODES[rtcp]) as srv:
        port = srv.port
        src = Source.open(srv.url, config=LIVE_CFG)
        it = src.frames()
        before: list[tuple[float, float]] = []
        after: list[tuple[float, float]] = []
        stopped_at = restarted_at = None
        restarter: threading.Thread | None = None

        def bounce():
            nonlocal restarted_at
            time.sleep(downtime)
            srv.start()  # same port: same URL
            restarted_at = time.time()

        try:
            for f in it:
                now = time.time()
                if stopped_at is None:
                    before.append((f.t, now))
                    if now - before[0][1] >= 3.0:
                        srv.stop()  # the camera goes away; the iterator must not end
                        stopped_at = time.time()
                        restarter = threading.Thread(target=bounce, daemon=True)
                        restarter.start()
                elif src.stats.reconnects == 0:
                    before.append((f.t, now))  # frames already buffered before the drop
                else:
                    after.append((f.t, now))
                    if len(after) >= 30:
                        break
        finally:
            src.stop()
            src.close()
            if restarter is not None:
                restarter.join(timeout=30)

        assert srv.port == port, "the server must come back on the same port"
        assert restarted_at is not None
        assert len(before) >= 20 and len(after) >= 30
        assert src.stats.disconnects >= 1
        assert src.stats.reconnects >= 1
        times = [t for t, _ in before + after]
        assert all(b > a for a, b in zip(times, times[1:])), "times must never decrease across a reconnect"
        # The clock re-anchored at the wall-clock time: the gap in stream time covers the downtime.
        last_before, first_after = before[-1][0], after[0][0]
        assert first_after - last_before >= 0.75 * downtime, (last_before, first_after)
        # ... and no more than the wall-clock time that really passed between those two frames.
        assert first_after - last_before <= (after[0][1] - before[-1][1]) + 1.5
        # After the reconnect, frames are again one frame apart and keep tracking the wall clock.
        t_after = np.array([t for t, _ in after])
        assert np.median(np.diff(t_after)) == pytest.approx(1 / FPS, abs=0.01)
        lag = after[-1][1] - (src.epoch.timestamp() + after[-1][0])
        assert -1.0 < lag < 4.0, f"after reconnect, frames lag wall clock by {lag:.2f}s"


@needs_footage
@pytest.mark.rtsp
@pytest.mark.timeout(60)
def test_stop_while_reconnecting_ends_the_iterator():
    """A worker that stops a stream whose camera is down gets a quiet end, not an error."""
    with RtspServer(FOOTAGE, mount="/down") as srv:
        src = Source.open(srv.url, config=LIVE_CFG)
        n = 0
        stopper = threading.Timer(1.5, src.stop)
        try:
            for _ in src.frames():  # must end by itself once stop() is called
                n += 1
                if n == 5:
                    srv.stop()
                    stopper.start()
        finally:
            stopper.cancel()
            src.stop()
            src.close()
    assert n >= 5
    assert src.stats.disconnects == 1
    assert src.stopped


@pytest.mark.timeout(60)
def test_rtsp_closed_port_is_unreachable():
    port = free_port()  # nothing listens there any more
    cfg = SourceConfig(
        open_timeout_s=2.0, read_timeout_s=2.0, connect_attempts=2, backoff_initial_s=0.1, backoff_max_s=0.2
    )
    with pytest.raises(SourceUnreachableError) as info:
        Source.open(f"rtsp://{HOST}:{port}/cam", config=cfg)
    err = info.value
    assert not isinstance(err, SourceTimeoutError), "a refused connection is not a timeout"
    assert err.uri == f"rtsp://{HOST}:{port}/cam"
    assert "2 attempt" in str(err)


class SilentListener:
    """A TCP listener on 127.0.0.1 that accepts connections and never sends a byte."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)  # keep it open, say nothing

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self.accepted:
            c.close()
        self.sock.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_silent_server_times_out(scheme):
    open_timeout = 1.5
    cfg = SourceConfig(
        open_timeout_s=open_timeout,
        read_timeout_s=open_timeout,
        connect_attempts=2,
        backoff_initial_s=0.1,
        backoff_max_s=0.2,
    )
    with SilentListener() as listener:
        url = f"{scheme}://{HOST}:{listener.port}/cam" + (".mp4" if scheme == "http" else "")
        started = time.monotonic()
        with pytest.raises(SourceTimeoutError) as info:  # a SourceUnreachableError and a TimeoutError
            Source.open(url, config=cfg)
        waited = time.monotonic() - started
    assert info.value.uri == url
    # Each attempt really connected and then waited out the open timeout (it was not refused).
    assert len(listener.accepted) == 2
    assert waited >= 2 * open_timeout * 0.9


@needs_footage
@pytest.mark.rtsp
@pytest.mark.timeout(120)
@pytest.mark.parametrize("rtsp", ["no-rtcp-sr"], indirect=True)  # the clock is covered above
def test_sample_clips_over_rtsp(rtsp):
    scfg = SamplerConfig(min_fps=0.5, max_fps=2.0, clip_seconds=2.0)
    src = Source.open(rtsp.url, config=LIVE_CFG)
    clips = []
    try:
        for clip in sample_clips(src, scfg, stream_id="cam-rtsp"):
            clips.append(clip)
            if len(clips) >= 3:
                break
    finally:
        src.stop()
        src.close()
    h, w = choose_size(768, 432, scfg)
    assert (h % 28, w % 28) == (0, 0)
    assert len(clips) == 3
    assert [c.index for c in clips] == [0, 1, 2]
    last = -math.inf
    for c in clips:
        assert c.stream_id == "cam-rtsp"
        assert c.epoch == src.epoch
        assert c.frames.shape[1:] == (h, w, 3) and c.frames.dtype == np.uint8
        assert len(c.times) >= 2 and len(c.times) % 2 == 0
        assert c.times[0] > last, "clips follow each other in time"
        assert np.all(np.diff(c.times) > 0)
        # Frames are picked at the clip's rate from a 10 fps stream: spacing within half a frame.
        assert np.allclose(np.diff(c.times), 1 / c.fps, atol=0.5 / FPS + 1e-6), (c.fps, c.times)
        assert c.frames.std() > 1.0, "frames carry real pictures"
        last = c.times[-1]


# ---- HTTP (progressive file) and HLS --------------------------------------------------------------


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus single-range ``Range: bytes=a-b`` requests (206), which FFmpeg
    needs to reach an MP4's ``moov`` at the end of the file."""

    protocol_version = "HTTP/1.1"
    _RANGE = re.compile(r"bytes=(\d*)-(\d*)$")

    def log_message(self, fmt, *args):  # keep test output clean
        pass

    def send_head(self):
        self._range = None
        header = self.headers.get("Range")
        path = self.translate_path(self.path)
        if header is None or os.path.isdir(path):
            return super().send_head()
        m = self._RANGE.match(header.strip())
        try:
            f = open(path, "rb")  # noqa: SIM115 -- handed to the caller, which closes it
        except OSError:
            self.send_error(404, "File not found")
            return None
        size = os.fstat(f.fileno()).st_size
        if m is None or (not m.group(1) and not m.group(2)):
            f.close()
            self.send_error(400, "bad range")
            return None
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:  # suffix range: last N bytes
            start, end = max(0, size - int(m.group(2))), size - 1
        if start >= size or start > end:
            f.close()
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.server.ranges_served += 1
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        f.seek(start)
        self._range = (start, end)
        return f

    def end_headers(self):
        if self._range is None and self.command in ("GET", "HEAD"):
            self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def copyfile(self, source, outputfile):
        if self._range is None:
            return super().copyfile(source, outputfile)
        remaining = self._range[1] - self._range[0] + 1
        try:
            while remaining > 0:
                chunk = source.read(min(64 * 1024, remaining))
                if not chunk:
                    break
                outputfile.write(chunk)
                remaining -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # FFmpeg drops a connection when it seeks elsewhere


class HttpDir:
    """Serve a directory at http://127.0.0.1:PORT/ from a background thread."""

    def __init__(self, directory: Path):
        handler = functools.partial(RangeHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer((HOST, 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.ranges_served = 0
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.port}/{name}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def footage_http():
    if not FOOTAGE.is_file():
        pytest.skip(f"footage not found: {FOOTAGE}")
    with HttpDir(FOOTAGE.parent) as server:
        yield server


@needs_footage
@pytest.mark.timeout(90)
def test_http_file_is_bounded_and_matches_local(footage_http):
    ref = local_times(str(FOOTAGE))
    url = footage_http.url(FOOTAGE.name)
    with Source.open(url, config=SourceConfig(open_timeout_s=10, read_timeout_s=10)) as src:
        assert src.kind == "http"
        assert src.live is False, "an http file with a duration is bounded, not live"
        assert src.duration == pytest.approx(139.4, abs=0.05)
        assert src.frame_count == len(ref)
        assert src.epoch.year < 2100
        times = [f.t for f in src.frames()]
    assert footage_http.httpd.ranges_served >= 1, "the moov-at-end MP4 must have been read with Range requests"
    assert len(ref) == 1394
    assert len(times) == len(ref)
    assert np.allclose(times, ref, atol=1e-9)
    assert src.stats.reconnects == 0 and src.stats.disconnects == 0


def make_hls(src_path: Path, out_dir: Path, *, seconds: float, segment_s: int = 4) -> tuple[Path, list[float]]:
    """Remux the first ``seconds`` of ``src_path`` (cut at a keyframe) into a VOD HLS playlist with
    PyAV's ``hls`` muxer. Returns the playlist and the source PTS times (seconds, display order) of the
    frames it holds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    playlist = out_dir / "index.m3u8"
    kept_pts: list[float] = []
    with av.open(str(src_path)) as inp:
        ist = inp.streams.video[0]
        with av.open(
            str(playlist),
            mode="w",
            format="hls",
            options={
                "hls_time": str(segment_s),
                "hls_list_size": "0",
                "hls_playlist_type": "vod",
                "hls_segment_filename": str(out_dir / "seg%03d.ts"),
            },
        ) as out:
            ost = out.add_stream_from_template(ist)
            for packet in inp.demux(ist):
                if packet.dts is None and packet.size == 0:
                    continue  # the demuxer's flush packet
                if packet.is_keyframe and packet.pts is not None and float(packet.pts * ist.time_base) >= seconds:
                    break
                if packet.pts is not None:
                    kept_pts.append(float(packet.pts * ist.time_base))
                packet.stream = ost
                out.mux(packet)
    text = playlist.read_text()
    assert "#EXT-X-ENDLIST" in text and text.count(".ts") >= 2, text
    return playlist, sorted(kept_pts)


@needs_footage
@pytest.mark.timeout(90)
def test_hls_vod_playlist_over_http(tmp_path_factory):
    hls_dir = tmp_path_factory.mktemp("hls")
    playlist, src_pts = make_hls(FOOTAGE, hls_dir, seconds=12.0)
    assert len(src_pts) == 120
    ref = [t for t in local_times(str(FOOTAGE)) if t < 12.0]
    assert np.allclose(src_pts, ref, atol=1e-6)  # the local file's times are its PTS
    with HttpDir(hls_dir) as server:
        url = server.url(playlist.name)
        with Source.open(url, config=SourceConfig(open_timeout_s=10, read_timeout_s=10)) as src:
            assert src.kind == "http"
            assert src.live is False, "a VOD playlist (EXT-X-ENDLIST) is bounded"
            assert src.duration == pytest.approx(12.0, abs=0.2)
            times = [f.t for f in src.frames()]
    assert len(times) == len(src_pts)
    assert np.all(np.diff(times) > 0)
    # Stream times are the source's PTS (relative to the first frame), within a frame.
    diffs = np.abs(np.array(times) - (np.array(src_pts) - src_pts[0]))
    assert diffs.max() < 0.5 / FPS, diffs.max()
    assert src.stats.pts_discontinuities == 0


@pytest.mark.timeout(90)
@needs_footage
def test_live_source_that_stays_dead_gives_up_when_told():
    """max_reconnects bounds the attempts after a drop: a typed error, not an endless loop."""
    server = RtspServer(FOOTAGE, mount="/dead")
    server.start()
    cfg = SourceConfig(max_reconnects=2, backoff_initial_s=0.1, backoff_max_s=0.2, open_timeout_s=2, read_timeout_s=2)
    src = Source.open(server.url, config=cfg)
    got = 0
    with pytest.raises(SourceUnreachableError, match="gave up after 3"):
        for _ in src.frames():
            got += 1
            if got == 10:
                server.stop()  # and never comes back
    server.stop()
    assert got >= 10 and src.stats.disconnects == 1 and src.stats.reconnects == 0
