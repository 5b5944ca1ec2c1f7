"""Make synthetic clips whose truth is known: frame times, events, gaps.

Every frame carries its own presentation time (milliseconds) as a 32-bit barcode across its top rows,
so a test can check that the time longwatch gives a frame is the time the frame was encoded with.
A moving white square is drawn while an event is "on", so event boundaries are known to the frame
and activity is high exactly then.

    python -m sample_videos.make_synthetic [OUT_DIR]     # writes the standard set, prints a manifest
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 32
BAR_ROWS = 6


@dataclass
class Synthetic:
    path: str
    times: list[float]
    events: list[tuple[float, float]] = field(default_factory=list)
    width: int = 320
    height: int = 240
    note: str = ""


def draw(t: float, width: int, height: int, events: list[tuple[float, float]]) -> np.ndarray:
    """RGB frame for time t: barcode of round(t*1000) on top, a moving square while an event is on,
    over a static gradient."""
    img = np.full((height, width, 3), 60, dtype=np.uint8)
    ramp = (np.arange(width) % 256).astype(np.uint8) // 4
    img[BAR_ROWS:, :, 1] = 60 + ramp[None, :]
    ms = int(round(t * 1000))
    bw = width // BITS
    for b in range(BITS):
        on = (ms >> (BITS - 1 - b)) & 1
        img[:BAR_ROWS, b * bw : (b + 1) * bw] = 255 if on else 0
    if any(s <= t < e for s, e in events):
        # The "event": a white square that moves (so activity is high while it lasts).
        side = height // 3
        x0 = int((t * 120) % (width - side))
        y0 = height // 3
        img[y0 : y0 + side, x0 : x0 + side] = 255
    return img


def read_barcode(image: np.ndarray, *, drawn_height: int = 240, drawn_width: int = 320) -> float:
    """Inverse of :func:`draw`'s barcode: seconds. Works on resized frames too (give the drawn size)."""
    height, width = image.shape[:2]
    bw = drawn_width // BITS * width / drawn_width
    row = image[int(BAR_ROWS / 2 * height / drawn_height), :, :].mean(axis=1)
    ms = 0
    for b in range(BITS):
        ms = (ms << 1) | int(row[int((b + 0.5) * bw)] > 127)
    return ms / 1000.0


def event_on(image: np.ndarray) -> bool:
    """Is the event's white square in this (original-size) frame?"""
    h = image.shape[0]
    band = image[h // 3 + 4 : 2 * h // 3 - 4].mean(axis=2)
    return bool((band > 230).mean(axis=0).max() > 0.9)


def write(
    spec: Synthetic,
    *,
    codec: str = "libx264",
    rate: int = 30,
    gop: int | None = None,
    options: dict | None = None,
    frames: Iterable[tuple[float, np.ndarray]] | None = None,
) -> Synthetic:
    """Encode ``spec`` to ``spec.path`` with explicit PTS (time base 1/1000 s). ``frames``: (time, RGB)
    pairs to encode instead of :func:`draw`'s pictures at ``spec.times``."""
    path = Path(spec.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = spec.width, spec.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        if gop:
            stream.codec_context.gop_size = gop
        opts = {"preset": "veryfast", "crf": "18"} if codec == "libx264" else {}
        opts.update(options or {})
        stream.codec_context.options = opts
        pictures = (
            frames if frames is not None else ((t, draw(t, spec.width, spec.height, spec.events)) for t in spec.times)
        )
        for t, rgb in pictures:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = int(round(t * 1000))
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return spec


def cfr_times(duration: float, fps: float, start: float = 0.0) -> list[float]:
    return [round(start + i / fps, 3) for i in range(int(round(duration * fps)))]


def motion_clip(
    path: str | Path,
    *,
    duration: float = 20.0,
    fps: int = 10,
    step_at: float = 4.0,
    step: int = 35,
    small: tuple[float, float] = (7.0, 10.0),
    large: tuple[float, float] = (13.0, 16.5),
    seed: int = 11,
) -> Synthetic:
    """A clip for motion detection (320×240, ``fps``, ``duration`` s, no barcode): a static textured grey
    background with mild noise (σ 2 grey levels per frame); at ``step_at`` s the whole picture gets ``step``
    grey levels brighter and stays so (a light switched on: NOT motion); during ``small`` a bright 10×10 px
    square moves (40 px/s); during ``large`` a dark 60×100 px "person" walks across (60 px/s). Each object
    is in view exactly during its interval, so ``events`` (the two intervals) is the motion truth."""
    width, height = 320, 240
    rng = np.random.default_rng(seed)
    # Texture: coarse random blobs + a ramp, 60..180 grey levels before the step.
    coarse = rng.uniform(0, 1, (height // 16 + 2, width // 16 + 2))
    yy, xx = np.mgrid[0:height, 0:width] / 16.0
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = yy - y0, xx - x0
    tex = (
        coarse[y0, x0] * (1 - fx) * (1 - fy)
        + coarse[y0, x0 + 1] * fx * (1 - fy)
        + coarse[y0 + 1, x0] * (1 - fx) * fy
        + coarse[y0 + 1, x0 + 1] * fx * fy
    )
    base = 60.0 + 80.0 * tex + 40.0 * np.arange(width)[None, :] / width
    times = cfr_times(duration, fps)
    spec = Synthetic(
        str(path),
        times,
        [small, large],
        width,
        height,
        note=f"motion: +{step} grey step at {step_at} s (not motion), small square {small}, large object {large}",
    )

    def frames():
        for t in times:
            img = base + (step if t >= step_at else 0) + rng.normal(0.0, 2.0, base.shape)
            if small[0] <= t < small[1]:
                x = int(40 + 40 * (t - small[0]))
                img[150:160, x : x + 10] = 250
            if large[0] <= t < large[1]:
                x = int(20 + 60 * (t - large[0]))
                img[90:190, x : x + 60] = 20
            grey = np.clip(np.rint(img), 0, 255).astype(np.uint8)
            yield t, np.repeat(grey[:, :, None], 3, axis=2)

    return write(spec, rate=fps, options={"crf": "20"}, frames=frames())


def standard_set(out_dir: str | Path) -> dict[str, Synthetic]:
    """The clips the tests and the demo use."""
    out = Path(out_dir)
    rng = np.random.default_rng(7)
    made: dict[str, Synthetic] = {}
    # 30 fps constant rate, two events.
    made["cfr"] = write(
        Synthetic(str(out / "cfr30.mp4"), cfr_times(20, 30), [(5.0, 9.0), (13.5, 16.0)], note="30 fps CFR"), gop=30
    )
    # Variable frame rate: intervals drawn from 20..90 ms.
    vfr, t = [], 0.0
    while t < 12.0:
        vfr.append(round(t, 3))
        t += float(rng.integers(20, 91)) / 1000.0
    made["vfr"] = write(Synthetic(str(out / "vfr.mkv"), vfr, [(3.0, 6.0)], note="VFR 11-50 fps"), rate=30)
    # A PTS jump: 8 s, a 30 s hole, 8 more s (a camera that stopped recording).
    jump = cfr_times(8, 25) + cfr_times(8, 25, start=38.0)
    made["jump"] = write(
        Synthetic(str(out / "pts_jump.mkv"), jump, [(2.0, 4.0), (40.0, 43.0)], note="25 fps, +30 s PTS jump at 8 s"),
        rate=25,
    )
    # Long GOP 10 fps file for keyframe-aware sampling (keyframe every 1 s).
    made["gop"] = write(
        Synthetic(str(out / "gop10.mp4"), cfr_times(30, 10), [(10.0, 20.0)], note="10 fps, keyframe every 1 s"),
        rate=10,
        gop=10,
        options={"bframes": "0", "sc_threshold": "0"},
    )
    # Motion detection: a brightness step (not motion), a small and a large moving object (own seed).
    made["motion"] = motion_clip(out / "motion.mp4")
    return made


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else Path(__file__).parent / "generated")
    made = standard_set(out)
    manifest = {
        k: {**asdict(v), "times": f"{len(v.times)} frames {v.times[0]}..{v.times[-1]}"} for k, v in made.items()
    }
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
