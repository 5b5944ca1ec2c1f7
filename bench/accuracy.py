#!/usr/bin/env python
"""Accuracy benchmark: the CPU detector's person boxes and longwatch's event segments against ground truth.

    .venv/bin/python bench/accuracy.py                 # both parts
    .venv/bin/python bench/accuracy.py --skip events   # boxes only

1. **Boxes** (``vtest.avi``, PETS 2009 S2.L1, per-frame person boxes): every ``--step``-th frame (5: 2 fps),
   resized to the sampler's model size as the pipeline does, through several detector configurations:
   whole frame at 320 (the default), 416, 608; 320 + 2×2 tiles (:func:`tile_regions`); 320 + motion
   regions (``longwatch.pipeline.motion.MotionModel`` fed 160-px grey thumbnails at 8 fps, where that
   module exists). Person recall and precision at IoU ≥ 0.3 (greedy one-to-one, best score first),
   against all boxes (headline; PETS annotates occluded people) and against boxes less than half hidden
   by a nearer GT box ("vis."), over a min_score sweep, plus detector CPU ms per frame and CPU s per footage
   second (at 2 fps sampling). The operating point: the cheapest configuration with recall ≥ 0.6 at
   precision ≥ 0.8, and the min_score that gives it.
2. **Events** (``events.csv``): each clip through the real :class:`~longwatch.pipeline.worker.StreamProcessor`
   (no Ray; an embedded Redis; the shipped default events; the detector in-process), then per clip and
   event: truth segments, found segments, matched (both boundaries within 1 s), worst boundary error,
   extra segments, and detector CPU s per footage second. Truth names map to longwatch events by name
   (``people_present`` → ``person_present``; ``motion`` uses the person visits where a ``motion`` event exists).

A benchmark that prints figures, never a test: it asserts nothing and exits 0 where the footage is absent.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402

FOOTAGE = Path(os.environ.get("LONGWATCH_FOOTAGE", ROOT.parent / "shared" / "footage"))
IOU = 0.3
TARGET_RECALL, TARGET_PRECISION = 0.6, 0.8
SWEEP = [round(x, 2) for x in np.arange(0.25, 0.91, 0.05)]
BOUNDARY_S = 1.0
EVENT_ALIASES = {"people_present": ["person_present"], "person_present": ["person_present", "motion"]}


# ------------------------------------------------------------------------------------------------
# 1. boxes on vtest.avi


def load_gt(path: Path, width: float = 768.0, height: float = 576.0) -> dict[int, np.ndarray]:
    """frame → (N, 5) [x0, y0, x1, y1 fractions, occluded fraction] of the PETS boxes (pixels of 768×576)."""
    rows: dict[int, list[list[float]]] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            x, y, w, h = (float(r[k]) for k in ("x_left", "y_top", "width", "height"))
            rows.setdefault(int(r["frame"]), []).append([x / width, y / height, (x + w) / width, (y + h) / height])
    out = {}
    for n, boxes in rows.items():
        b = np.clip(np.array(boxes), 0.0, 1.0)
        occ = np.zeros(len(b))
        for i in range(len(b)):  # share of box i covered by nearer (lower-standing) boxes, by a pixel grid
            nearer = [j for j in range(len(b)) if j != i and b[j, 3] > b[i, 3]]
            if not nearer:
                continue
            xs, ys = np.linspace(b[i, 0], b[i, 2], 12), np.linspace(b[i, 1], b[i, 3], 24)
            gx, gy = np.meshgrid(xs, ys)
            hid = np.zeros(gx.shape, bool)
            for j in nearer:
                hid |= (gx >= b[j, 0]) & (gx <= b[j, 2]) & (gy >= b[j, 1]) & (gy <= b[j, 3])
            occ[i] = hid.mean()
        out[n] = np.concatenate([b, occ[:, None]], axis=1)
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def match(dets: np.ndarray, gt: np.ndarray) -> tuple[int, np.ndarray]:
    """Greedy one-to-one matching (dets (N, 5) [box, score] best first, gt (M, 4)); (true positives, gt hit)."""
    hit = np.zeros(len(gt), bool)
    if len(dets) == 0 or len(gt) == 0:
        return 0, hit
    iou = iou_matrix(dets[:, :4], gt[:, :4])
    tp = 0
    for k in np.argsort(-dets[:, 4], kind="stable"):
        cand = np.where(hit, -1.0, iou[k])
        j = int(np.argmax(cand))
        if cand[j] >= IOU:
            hit[j] = True
            tp += 1
    return tp, hit


def read_frames(path: Path, step: int, limit: int | None) -> tuple[list[int], list[np.ndarray], list, float]:
    """Every ``step``-th frame (RGB at the sampler's model size), all frames' grey 160-px thumbnails, fps."""
    import cv2

    from longwatch.pipeline import SamplerConfig
    from longwatch.pipeline.sampler import choose_size

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    w0, h0 = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    h, w = choose_size(w0, h0, SamplerConfig())
    idx, frames, thumbs = [], [], []
    n = 0
    while True:
        ok, bgr = cap.read()
        if not ok or (limit is not None and len(idx) >= limit and n % step == 0):
            break
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        thumbs.append(cv2.resize(gray, (160, round(160 * h0 / w0)), interpolation=cv2.INTER_AREA))
        if n % step == 0:
            idx.append(n)
            frames.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (w, h), interpolation=cv2.INTER_AREA))
        n += 1
    cap.release()
    return idx, frames, thumbs, fps


def motion_regions(idx: list[int], thumbs: list, fps: float) -> tuple[list | None, str]:
    """Per sampled frame, the regions the stream worker would give the detector: the shipped
    :class:`~longwatch.pipeline.motion_gate.MotionGate` (default detection settings) fed the grey
    thumbnails of the first frame of each 1/8 s slot, as the sampler picks them."""
    import math

    import numpy as np

    try:
        from longwatch.pipeline.config import DetectionConfig
        from longwatch.pipeline.events import default_events
        from longwatch.pipeline.motion_gate import MotionGate
    except ImportError as exc:
        return None, f"longwatch.pipeline.motion_gate is not importable ({exc})"
    config = DetectionConfig()
    times, picked, slot = [], [], None
    for n, th in enumerate(thumbs):
        t = n / fps
        s = math.floor(t * config.motion_fps + 1e-6)
        if slot is None or s > slot:
            slot = s
            times.append(t)
            picked.append(th)
    gate = MotionGate(default_events(), config)
    res = gate.process(np.array(times), np.stack(picked), [n / fps for n in idx], tracking=False)
    return [list(r) for r in res.regions], ""


def bench_boxes(args, weights, say) -> list[dict]:
    from longwatch.model.detector import YoloDetector, tile_regions

    path, gt_path = FOOTAGE / "vtest.avi", FOOTAGE / "vtest_gt_boxes.csv"
    if not (path.is_file() and gt_path.is_file()):
        say(f"boxes: {path} or its ground truth is missing: skipped")
        return []
    gt = load_gt(gt_path)
    idx, frames, thumbs, fps = read_frames(path, args.step, args.frames)
    say(f"boxes: {len(frames)} frames of vtest.avi (every {args.step}th; {frames[0].shape[1]}×{frames[0].shape[0]})")
    motion, why = motion_regions(idx, thumbs, fps)
    tiles = tile_regions(2, 2)
    motion_rows = (lambda k: motion[k]) if motion is not None else None
    other_engine = "opencv" if args.engine == "onnxruntime" else "onnxruntime"
    configs: list[tuple[str, dict, Callable[[int], list] | None]] = [
        ("whole 320, stock cfg (mask 0,1,2)", {"input_size": 320, "tiny_masks": None}, None),
        ("whole 608, stock cfg", {"input_size": 608, "tiny_masks": None}, None),
        ("320 + motion regions, stock cfg", {"input_size": 320, "tiny_masks": None}, motion_rows),
        ("whole 320 (default without motion)", {"input_size": 320}, None),
        ("whole 416", {"input_size": 416}, None),
        ("whole 608", {"input_size": 608}, None),
        ("320 + 2×2 tiles", {"input_size": 320}, lambda k: tiles),
        ("320 + motion regions (default)", {"input_size": 320}, motion_rows),
        (f"320 + motion regions, {other_engine}", {"input_size": 320, "engine": other_engine}, motion_rows),
    ]
    rows = []
    for name, kw, regions in configs:
        if "motion" in name and motion is None:
            rows.append({"name": name, "note": f"skipped: {why}"})
            continue
        det = YoloDetector(weights, conf=0.25, threads=args.threads, **{"engine": args.engine, **kw})
        det.detect([frames[0]])  # warm-up
        found, cpu = [], 0.0
        for k, img in enumerate(frames):
            regs = [regions(k)] if regions is not None else None
            c0 = time.process_time()
            dets = det.detect([img], regions=regs)[0]
            cpu += time.process_time() - c0
            found.append(np.array([[*d.box, d.score] for d in dets if d.label == "person"]).reshape(-1, 5))
        row = {"name": name, "cpu_ms": 1000 * cpu / len(frames), "crops": det.crops_done / len(frames), "sweep": {}}
        for s in SWEEP:
            tp = fp = n_gt = n_vis = tp_vis = 0
            for n, d in zip(idx, found):
                g = gt.get(n, np.zeros((0, 5)))
                d = d[d[:, 4] >= s]
                t, hit = match(d, g)
                tp += t
                fp += len(d) - t
                n_gt += len(g)
                vis = g[:, 4] < 0.5
                n_vis += int(vis.sum())
                tp_vis += int(hit[vis].sum())
            row["sweep"][s] = (tp / max(n_gt, 1), tp / max(tp + fp, 1), tp_vis / max(n_vis, 1))
        rows.append(row)
        r, p, v = row["sweep"][0.4]
        say(f"  {name}: {row['cpu_ms']:.0f} ms/frame, at 0.4: recall {r:.2f} precision {p:.2f} (vis. {v:.2f})")
    return rows


def box_table(rows: list[dict], step: int, fps: float = 10.0) -> list[str]:
    per_s = fps / step  # sampled frames per footage second
    out = [
        "| config | recall @0.4 | precision @0.4 | recall vis. @0.4 | best recall at precision ≥ 0.8 (min_score) "
        "| CPU ms / frame | CPU s / footage s (2 fps) | crops / frame |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "note" in r:
            out.append(f"| {r['name']} | {r['note']} | | | | | | |")
            continue
        ok = [(rec, s) for s, (rec, prec, _) in r["sweep"].items() if prec >= TARGET_PRECISION]
        best = max(ok, default=None)
        rec, prec, vis = r["sweep"][0.4]
        out.append(
            f"| {r['name']} | {rec:.2f} | {prec:.2f} | {vis:.2f} | "
            + (f"{best[0]:.2f} ({best[1]:.2f})" if best else "none")
            + f" | {r['cpu_ms']:.0f} | {r['cpu_ms'] * per_s / 1000:.2f} | {r['crops']:.1f} |"
        )
    reach = []
    for r in rows:
        if "note" in r:
            continue
        for s, (rec, prec, _) in sorted(r["sweep"].items()):
            if rec >= TARGET_RECALL and prec >= TARGET_PRECISION:
                reach.append((r["cpu_ms"], r["name"], s, rec, prec))
                break
    if reach:
        cpu, name, s, rec, prec = min(reach)
        out.append(
            f"\nOperating point (recall ≥ {TARGET_RECALL} at precision ≥ {TARGET_PRECISION}): cheapest config that "
            f"reaches it is **{name}** at min_score {s:.2f} (recall {rec:.2f}, precision {prec:.2f}, {cpu:.0f} ms/frame)."
        )
    else:
        best = max(
            ((rec, r["name"], s, prec) for r in rows if "note" not in r for s, (rec, prec, _) in r["sweep"].items()),
            key=lambda x: (x[3] >= TARGET_PRECISION, x[0]),
            default=None,
        )
        out.append(
            f"\nNo config reaches recall ≥ {TARGET_RECALL} at precision ≥ {TARGET_PRECISION}"
            + (
                f"; the best is {best[1]} at min_score {best[2]:.2f}: recall {best[0]:.2f}, precision {best[3]:.2f}."
                if best
                else "."
            )
        )
    return out


# ------------------------------------------------------------------------------------------------
# 2. events through the real worker


def truth_events(path: Path) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """clip → truth event name → [(start s, end s)] from events.csv (``empty`` rows left out)."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["event"] != "empty":
                out.setdefault(r["clip"], {}).setdefault(r["event"], []).append(
                    (float(r["start_s"]), float(r["end_s"]))
                )
    return out


def compare(truth: list[tuple[float, float]], found: list[tuple[float, float]]) -> dict:
    """Matched: a found segment with both boundaries within 1 s of a truth one (one-to-one). Worst error: over
    truth segments, the best overlapping found segment's larger boundary error (inf: none overlaps)."""
    used: set[int] = set()
    matched, worst = 0, 0.0
    for a, b in truth:
        errs = [(max(abs(s - a), abs(e - b)), k) for k, (s, e) in enumerate(found) if s < b and e > a]
        err, k = min(errs, default=(float("inf"), -1))
        worst = max(worst, err)
        if err <= BOUNDARY_S and k not in used:
            used.add(k)
            matched += 1
    return {
        "n_truth": len(truth),
        "found": len(found),
        "matched": matched,
        "worst": worst,
        "extra": len(found) - len(used),
    }


def bench_events(args, weights_dir: str, say) -> list[dict]:
    from longwatch.model.detector import DetectorBackend
    from longwatch.pipeline.config import Settings
    from longwatch.pipeline.events import default_events
    from longwatch.pipeline.redis_server import EmbeddedRedis
    from longwatch.pipeline.store import SegmentStore
    from longwatch.pipeline.worker import StreamProcessor

    ev_path = FOOTAGE / "events.csv"
    if not ev_path.is_file():
        say(f"events: {ev_path} is missing: skipped")
        return []
    events = default_events()
    names = {e.event for e in events.events}
    backend = DetectorBackend(events, data_dir=weights_dir, threads=args.threads, engine=args.engine)
    cpu = [0.0]

    def score(clip):
        c0 = time.process_time()
        try:
            return backend.score([clip])[0]
        finally:
            cpu[0] += time.process_time() - c0

    rows = []
    with tempfile.TemporaryDirectory(prefix="lwacc-") as tmp:
        server = EmbeddedRedis(tmp, reuse=False).start()
        store = SegmentStore.from_url(server.url, prefix=f"acc{uuid.uuid4().hex[:6]}")
        try:
            for clip, truth in truth_events(ev_path).items():
                path = FOOTAGE / clip
                if not path.is_file():
                    continue
                cpu[0] = 0.0
                sid = Path(clip).stem.replace(".", "_")[:40]
                proc = StreamProcessor(sid, str(path), settings=Settings(), events=events, store=store, score_fn=score)
                t0 = time.perf_counter()
                rep = proc.run()
                wall = time.perf_counter() - t0
                footage = float(getattr(rep, "footage_s", 0.0) or 0.0)
                segs = store.query(stream=sid)
                say(f"events: {clip}: {rep.state}, {footage:.1f} s of footage in {wall:.1f} s, {len(segs)} segments")
                for tname, tsegs in truth.items():
                    for ev in EVENT_ALIASES.get(tname, [tname]):
                        if ev not in names:
                            continue
                        found = sorted((s.start, s.end) for s in segs if s.event == ev)
                        rows.append(
                            {
                                "clip": clip,
                                "truth": tname,
                                "event": ev,
                                **compare(tsegs, found),
                                "cpu_per_s": cpu[0] / footage if footage else float("nan"),
                                "found_list": found,
                            }
                        )
        finally:
            store.close()
            server.stop()
    return rows


def event_table(rows: list[dict]) -> list[str]:
    out = [
        "| clip | truth → event | truth | found | matched (±1 s) | worst boundary error s | extra | detector CPU s / footage s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['clip']} | {r['truth']} → {r['event']} | {r['n_truth']} | "
            f"{r['found']} | {r['matched']} | {r['worst']:.1f} | {r['extra']} | {r['cpu_per_s']:.3f} |"
        )
    return out


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step", type=int, default=5, help="boxes: every STEP-th frame of vtest.avi (5: 2 fps)")
    ap.add_argument("--frames", type=int, default=None, help="boxes: at most this many frames (default all)")
    ap.add_argument("--threads", type=int, default=None, help="the detector's threads (OpenCV's, onnxruntime's)")
    ap.add_argument(
        "--engine",
        choices=["onnxruntime", "opencv"],
        default="onnxruntime",
        help="what runs the detector's network (one boxes row also runs the other engine)",
    )
    ap.add_argument("--skip", action="append", default=[], choices=["boxes", "events"], help="skip a part")
    args = ap.parse_args(argv)
    command = shlex.join(
        [
            ".venv/bin/python" if ".venv" in sys.executable else Path(sys.executable).name,
            "bench/accuracy.py",
            *(argv if argv is not None else sys.argv[1:]),
        ]
    )
    if not FOOTAGE.is_dir():
        print(
            f"bench/accuracy.py: the shared footage is not at {FOOTAGE} (set LONGWATCH_FOOTAGE to point elsewhere): "
            "nothing measured."
        )
        return 0
    from longwatch.model.weights import DetectorWeights
    from longwatch.pipeline.config import default_data_dir

    say = lambda s: print(s, flush=True)  # noqa: E731
    data_dir = str(default_data_dir())
    weights = DetectorWeights.locate(data_dir)
    lines = [f"longwatch accuracy benchmark — {machine()}", ""]
    if "boxes" not in args.skip:
        rows = bench_boxes(args, weights, say)
        if rows:
            lines += [
                f"### Person boxes on vtest.avi (every {args.step}th frame; IoU ≥ {IOU}; all GT boxes incl. occluded; "
                "vis.: GT boxes < 50 % hidden by nearer ones)",
                "",
                *box_table(rows, args.step),
                "",
            ]
    if "events" not in args.skip:
        rows = bench_events(args, data_dir, say)
        if rows:
            lines += ["### Event segments through StreamProcessor (default events, default sampler)", ""]
            lines += event_table(rows)
            lines += [""] + [
                f"- {r['clip']} {r['event']} found: " + ", ".join(f"{a:.1f}–{b:.1f}" for a, b in r["found_list"])
                for r in rows
            ]
            lines.append("")
    lines.append(f"Command: `{command}`")
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
