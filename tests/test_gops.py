"""GOP-parallel file decoding (pipeline/gops.py): the pictures, their times and their order are the
serial decode's, bit for bit, whatever the codec, container and GOP structure; a file whose GOPs
cannot be split decodes in order; resume, stop and a truncated file behave as in the serial decode."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import time

import av
import pytest

from longwatch.pipeline import Source
from longwatch.pipeline.config import SourceConfig
from longwatch.pipeline.errors import InvalidVideoError
from longwatch.pipeline.gops import closed_gop_test

FFMPEG = shutil.which("ffmpeg")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is needed to encode the test files")

ENCODINGS = {
    # name: (file name, ffmpeg output options)
    "h264-mp4": (
        "h264.mp4",
        [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-bf",
            "2",
            "-movflags",
            "+faststart",
        ],
    ),
    "h264-open-gop": (
        "h264-open.mp4",
        ["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "3", "-x264-params", "open-gop=1"],
    ),
    "h264-ts": ("h264.ts", ["-c:v", "libx264", "-preset", "veryfast", "-g", "20", "-bf", "2"]),
    "h264-short-gops": ("h264-g4.mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-g", "4", "-bf", "0"]),
    "hevc-mp4": (
        "hevc.mp4",
        ["-c:v", "libx265", "-preset", "ultrafast", "-g", "25", "-x265-params", "open-gop=0:log-level=error"],
    ),
    "mpeg4": ("mpeg4.mp4", ["-c:v", "mpeg4", "-g", "25", "-bf", "1"]),
}


@pytest.fixture(scope="module")
def encoded(demo_clip, tmp_path_factory):
    """bikes.mp4 (real footage) re-encoded six ways, 6 s each."""
    out = tmp_path_factory.mktemp("gops")
    files = {}
    for name, (fname, opts) in ENCODINGS.items():
        path = out / fname
        cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(demo_clip), "-t", "6", "-an", *opts]
        subprocess.run([*cmd, str(path)], check=True)
        files[name] = path
    return files


def _pictures(path, *, gops: int, skip: str = "DEFAULT", start_s: float | None = None):
    out = []
    with Source.open(path, config=SourceConfig(decode_gops=gops)) as src:
        workers = src.gop_workers(skip)
        for f in src.frames(skip=skip, start_s=start_s):
            digest = hashlib.md5(b"".join(bytes(p) for p in f.av_frame.planes)).hexdigest()
            out.append((f.t, f.pts, f.keyframe, digest))
    return workers, out


def _closed_boundaries(path) -> int:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        test = closed_gop_test(s.codec_context.name, s.codec_context.extradata)
        if test is None:
            return 0
        return sum(1 for p in c.demux(s) if p.size and p.is_keyframe and test(bytes(p)))


@pytest.mark.parametrize("name", list(ENCODINGS))
@pytest.mark.parametrize("skip", ["DEFAULT", "NONREF"])
def test_gop_parallel_pictures_equal_the_serial_decode(encoded, name, skip):
    path = encoded[name]
    serial_workers, serial = _pictures(path, gops=1, skip=skip)
    workers, parallel = _pictures(path, gops=2, skip=skip)
    assert serial_workers == 1
    assert len(serial) > 50
    assert parallel == serial  # times, PTS, key flags and every plane's bytes, in order
    boundaries = _closed_boundaries(path)
    if name == "mpeg4":
        assert workers == 1 and boundaries == 0  # no closed-GOP test for this codec: decoded in order
    elif name == "h264-open-gop":
        assert workers == 2 and boundaries <= 2  # its recovery-point keyframes are not boundaries
    else:
        assert workers == 2 and boundaries >= 6, boundaries  # really split: 6 s of 25 fps, GOPs ≤ 1 s


def test_three_workers_and_a_resume_point_give_the_serial_frames(encoded):
    path = encoded["h264-mp4"]
    _, serial = _pictures(path, gops=1, start_s=2.3)
    _, parallel = _pictures(path, gops=3, start_s=2.3)
    assert serial and serial[0][0] >= 2.3 - 1e-6
    assert parallel == serial


def test_stop_ends_a_gop_parallel_decode_promptly(demo_long):
    with Source.open(demo_long) as src:
        assert src.gop_workers("DEFAULT") == 2
        frames = src.frames()
        next(frames)
        threading.Timer(0.2, src.stop).start()
        started = time.monotonic()
        n = sum(1 for _ in frames)
        assert time.monotonic() - started < 5.0
        assert n < 1400  # 60 s at 25 fps: it stopped early


def test_a_truncated_file_raises_after_its_frames_in_gop_parallel_decoding(encoded, tmp_path):
    whole = encoded["h264-mp4"]  # its index first (faststart): cut short, it still declares 6 s
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with Source.open(cut, config=SourceConfig(decode_gops=2)) as src:
        got = []
        with pytest.raises(InvalidVideoError) as err:
            for f in src.frames():
                got.append(f.t)
    _, serial = _pictures(whole, gops=1)
    assert got and got == [t for t, *_ in serial[: len(got)]]
    assert "truncated" in str(err.value)
