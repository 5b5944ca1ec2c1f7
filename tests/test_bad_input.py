"""Bad input: a clear, typed error, quickly, never a hang."""

from __future__ import annotations

import socket
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import footage_file

from longwatch.pipeline import (
    EmptySourceError,
    InvalidVideoError,
    NoVideoStreamError,
    ResolutionError,
    Source,
    SourceConfig,
    SourceError,
    SourceNotFoundError,
    SourceUnreachableError,
    UnsupportedSourceError,
)
from longwatch.pipeline.sampler import sample_clips

pytestmark = pytest.mark.timeout(60)


def _drain(path, **kw):
    with Source.open(path, **kw) as src:
        return list(sample_clips(src))


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(EmptySourceError, match="empty"):
        Source.open(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SourceNotFoundError) as info:
        Source.open(tmp_path / "nope.mp4")
    assert isinstance(info.value, FileNotFoundError)  # typed errors subclass the builtin too
    with pytest.raises(InvalidVideoError, match="directory"):
        Source.open(tmp_path)


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.mp4"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    with pytest.raises(InvalidVideoError) as info:
        _drain(p)
    assert isinstance(info.value, ValueError)


# Random bytes FFmpeg takes for something: found by a sweep of 3,000 seeds (seed → what FFmpeg makes
# of the bytes). Each must still be a typed error naming the file, never a crash or "done".
@pytest.mark.parametrize(
    "seed, error",
    [
        (2700, InvalidVideoError),  # metadata that is not UTF-8 (PyAV raised UnicodeDecodeError)
        (1713, InvalidVideoError),  # "h263" with no decodable packet (FFmpeg: EPERM on the first one)
        (131, NoVideoStreamError),  # a "subtitle" stream only
    ],
)
def test_random_bytes_that_ffmpeg_half_recognises(tmp_path, seed, error):
    import random

    p = tmp_path / f"garbage{seed}.mp4"
    p.write_bytes(random.Random(seed).randbytes(50_000))
    with pytest.raises(error, match=f"{p}: (not a readable video|no video stream)"):
        _drain(p)


def test_truncated_header(tmp_path):
    data = footage_file("one-by-one-person-detection.mp4").read_bytes()
    p = tmp_path / "cut-header.mp4"
    p.write_bytes(data[:10_000])  # cuts into the moov box
    with pytest.raises(InvalidVideoError):
        _drain(p)


def test_truncated_body_delivers_what_is_there_then_says_so(tmp_path):
    data = footage_file("one-by-one-person-detection.mp4").read_bytes()
    p = tmp_path / "cut-body.mp4"
    p.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(InvalidVideoError, match="truncated"), Source.open(p) as src:
        for f in src.frames():
            got.append(f.t)
    assert len(got) > 100  # the frames before the cut were delivered, not lost
    assert got[-1] < 139.0


def test_truncated_mkv(synthetic, tmp_path):
    data = Path(synthetic["cfr"].path.replace("cfr30.mp4", "vfr.mkv")).read_bytes()
    p = tmp_path / "cut.mkv"
    p.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InvalidVideoError, match="truncated"):
        _drain(p)


def test_no_video_stream(tmp_path):
    p = tmp_path / "tone.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.sin(np.arange(8000) / 5) * 3000).astype("<i2").tobytes())
    with pytest.raises(NoVideoStreamError, match="no video stream.*audio"):
        Source.open(p)


def test_absurd_resolution_header(tmp_path):
    # A YUV4MPEG2 header that declares a 20000x10000 picture (a 300 MB frame) over 1 kB of data.
    p = tmp_path / "huge.y4m"
    p.write_bytes(b"YUV4MPEG2 W20000 H10000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 1000)
    with pytest.raises(ResolutionError, match="20000x10000"):
        Source.open(p)
    # So large that FFmpeg itself refuses the header: still a typed error, not a crash.
    p.write_bytes(b"YUV4MPEG2 W100000 H100000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 1000)
    with pytest.raises(InvalidVideoError):
        Source.open(p)


def test_resolution_limit_is_configurable(person_clip):
    with pytest.raises(ResolutionError):
        Source.open(person_clip, config=SourceConfig(max_width=640))


@pytest.mark.parametrize("uri", ["ftp://127.0.0.1/x.mp4", "foo://bar", "udp://127.0.0.1:1234", "   "])
def test_wrong_scheme(uri):
    with pytest.raises(UnsupportedSourceError) as info:
        Source.open(uri)
    assert isinstance(info.value, ValueError)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_unreachable_url(scheme):
    cfg = SourceConfig(connect_attempts=2, backoff_initial_s=0.1, open_timeout_s=2, read_timeout_s=2)
    with pytest.raises(SourceUnreachableError, match="unreachable after 2"):
        Source.open(f"{scheme}://127.0.0.1:{_closed_port()}/cam", config=cfg)


def test_corrupt_packets_in_the_middle_are_survived(tmp_path, synthetic):
    # Overwrite a run of bytes in the middle of the stream: the decoder must go on after it.
    data = bytearray(Path(synthetic["cfr"].path).read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    p = tmp_path / "damaged.mp4"
    p.write_bytes(bytes(data))
    times = []
    try:
        with Source.open(p) as src:
            times = [f.t for f in src.frames()]
    except SourceError:
        pass  # a typed error is acceptable; a crash or hang is not
    assert len(times) > 500 and times[-1] > 19.0


def test_all_errors_share_one_base():
    for cls in (
        EmptySourceError,
        InvalidVideoError,
        NoVideoStreamError,
        ResolutionError,
        SourceNotFoundError,
        SourceUnreachableError,
        UnsupportedSourceError,
    ):
        assert issubclass(cls, SourceError)
