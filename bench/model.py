#!/usr/bin/env python
"""Model benchmark: the Qwen2.5-VL backend's vision tokens/s and clips/s, batch sizes 1 and 4.

    .venv/bin/python bench/model.py                      # tiny random Qwen2.5-VL on CPU (no download)
    .venv/bin/python bench/model.py --size 7b            # the full-size 7B architecture, random weights
    .venv/bin/python bench/model.py --model DIR          # a real checkpoint directory (GPU if present)
    .venv/bin/python bench/model.py --model DIR --attn flash_attention_2 --dtype bf16 --events 8

``--size 3b|7b`` builds Qwen2.5-VL-3B/7B-Instruct's published architecture (every layer's size, from its
config.json, kept in ``tests/tiny_qwen.py``) with random weights, in memory: nothing is downloaded. A
forward pass costs the same whatever the weights' values, so vision tokens/s and clips/s are the real
model's wherever it runs (a GPU when one is lent; on a CPU it is slow: try ``--clips 1 --repeats 1``).

What it measures, for each scoring strategy (see ``model/qwen_vl.py``) and batch size:

* ``prefix``   — video encoded once per batch; the LLM runs the shared prefix (template + video tokens) once
  with a KV cache, then each event question's suffix over it;
* ``batched``  — video encoded once per batch; every (clip, question) row in one padded LLM forward,
  sharing the clip's vision embeddings;
* ``reencode`` — the plain transformers path, ``input_ids`` + ``pixel_values_videos`` once per question
  (the vision tower runs again for every question): the baseline.

Figures: clips/s (each clip scored for every event), vision tokens/s (LLM video tokens — after the 2×2
merge — of the clips scored, per second of the whole scoring call), the vision tower's own throughput
(patches/s through the ViT), and ms per clip. Clips are synthetic noise at a smart_resize size
(default 8 s at 2 fps, 252×448: 8 temporal patches × 144 = 1152 video tokens per clip), streams of
different sizes mixed when ``--mixed``. Grounding is off (``ground="never"``) so the numbers are the
per-clip cost every clip pays. The header says which model, device, dtype and attention ran.

Object-store bytes per clip: what a stream worker hands Ray for one clip to the VLM pool, measured by
serialising it as Ray does (pickle protocol 5, numpy buffers out of band: the bytes are the buffers plus
the pickle stream). Before (until issue #12): the clip's normalised float32 patches
(``pixel_values_videos``, made in the worker). Now: the clip itself, uint8 frames at the Qwen size; the
patches are made in the model actor (``QwenVLBackend.prepare``), equal bit for bit
(``tests/test_qwen_vl.py``).

This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import machine  # noqa: E402
from longwatch.model.qwen_vl import QwenVLBackend  # noqa: E402
from longwatch.pipeline.events import EventSpec  # noqa: E402
from longwatch.pipeline.types import Clip  # noqa: E402
from tests.tiny_qwen import SIZES, make_random_model, make_tiny_checkpoint  # noqa: E402

PROMPTS = [
    "a person falls to the ground",
    "a truck backs into the dock",
    "a person enters the room",
    "a door opens",
    "a car parks",
    "two people shake hands",
    "a dog runs across",
    "someone leaves a bag behind",
]


def make_clips(
    n: int, *, seconds: float, fps: float, height: int, width: int, mixed: bool, seed: int = 0
) -> list[Clip]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = (height, width) if not mixed or i % 2 == 0 else (max(28, height - 56), width + 56)
        k = max(2, int(round(seconds * fps)))
        frames = rng.integers(0, 256, (k, h, w, 3), dtype=np.uint8)
        out.append(
            Clip(f"cam{i % 4}", i, fps, 60.0 * i + np.arange(k) / fps, frames, epoch=datetime(2024, 1, 1, tzinfo=UTC))
        )
    return out


def wire_bytes(obj) -> int:
    """Bytes ``obj`` takes in Ray's object store: pickle protocol 5, buffers out of band (as Ray stores them)."""
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(stream) + sum(b.raw().nbytes for b in buffers)


def clip_bytes(backend: QwenVLBackend, clip: Clip) -> tuple[int, int]:
    """(before, now): the object-store bytes of one clip sent as its float32 patches (what the model actor
    now makes from it, ``prepare``), and as the clip itself."""
    return wire_bytes(backend.prepare(clip).patches), wire_bytes(clip)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run(backend: QwenVLBackend, clips: list[Clip], batch: int, strategy: str, repeats: int) -> dict:
    backend.strategy = strategy
    backend.max_batch_clips = batch
    backend.ground_mode = "never"
    dev = backend.device
    video_tokens = sum(backend.prepare(c).num_tokens for c in clips)
    backend.score(clips[:batch])  # warm-up (allocator, kernels)
    times, vis = [], []
    for _ in range(repeats):
        backend.stats.clear()
        sync(dev)
        t0 = time.perf_counter()
        for k in range(0, len(clips), batch):
            backend.score(clips[k : k + batch])
        sync(dev)
        times.append(time.perf_counter() - t0)
        vis.append((backend.stats["vision_patches"], backend.stats["vision_s"]))
    best = min(times)
    patches, vis_s = vis[times.index(best)]
    return {
        "strategy": strategy,
        "batch": batch,
        "clips": len(clips),
        "events": len(backend.events),
        "seconds": best,
        "median_s": statistics.median(times),
        "clips_per_s": len(clips) / best,
        "vision_tokens_per_s": video_tokens / best,
        "vit_patches_per_s": patches / vis_s if vis_s else None,  # None: the ViT ran inside forward
        "ms_per_clip": 1000 * best / len(clips),
        "video_tokens_per_clip": video_tokens / len(clips),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a Qwen2.5-VL checkpoint directory (default: a random model of --size)")
    ap.add_argument(
        "--size",
        default="tiny",
        choices=SIZES,
        help="random weights: tiny (2+2 layers, CPU) or the published 3b / 7b architecture",
    )
    ap.add_argument(
        "--device", default=None, help="cpu / cuda / auto (default: cpu for the tiny model, auto otherwise)"
    )
    ap.add_argument("--dtype", default=None, help="bf16 / fp16 / fp32 (default: fp32 on CPU, bf16 on GPU)")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "flash_attention_2", "eager"])
    ap.add_argument("--events", type=int, default=4, help=f"natural-language events per clip (max {len(PROMPTS)})")
    ap.add_argument("--clips", type=int, default=8, help="clips per measurement (a multiple of 4 is best)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--frame", default="252x448", help="frame HxW, multiples of 28")
    ap.add_argument("--mixed", action="store_true", help="alternate two frame sizes (streams of different sizes)")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--strategies", default="prefix,batched,reencode")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(x) for x in args.frame.lower().split("x"))
    tmp = None
    if args.model:
        model_dir, which = args.model, f"checkpoint {args.model}"
        device = args.device or "auto"
        if device == "auto" and not torch.cuda.is_available():
            print(
                "note: no GPU here; a real checkpoint on CPU is slow — consider --clips 4 --repeats 1", file=sys.stderr
            )
    elif args.size == "tiny":
        tmp = tempfile.TemporaryDirectory(prefix="longwatch-tiny-qwen-")
        model_dir = make_tiny_checkpoint(tmp.name)
        which = "tiny random Qwen2.5-VL (2+2 layers, hidden 64/32; built here, no download)"
        device = args.device or "cpu"
    else:
        model_dir, which = (
            None,
            f"Qwen2.5-VL-{args.size.upper()} architecture, random weights (built here, no download)",
        )
        device = args.device or "auto"
    dev_is_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    dtype = args.dtype or ("bf16" if dev_is_cuda or args.size != "tiny" else "fp32")
    if model_dir is not None:
        backend = QwenVLBackend.load(model_dir, dtype=dtype, attn=args.attn, device=device, max_batch_tokens=10**9)
    else:
        from longwatch.model.qwen_vl import DTYPES, _resolve_device

        t = time.perf_counter()
        net, tokenizer = make_random_model(
            args.size, dtype=DTYPES[dtype], device=str(_resolve_device(device)), attn=args.attn
        )
        n_params = sum(p.numel() for p in net.parameters())
        which += f", {n_params / 1e9:.2f} B parameters, built in {time.perf_counter() - t:.0f} s"
        backend = QwenVLBackend(net, tokenizer, name=f"random-{args.size}", max_batch_tokens=10**9)
    backend.set_events(
        [
            EventSpec(event=f"e{i}", backend="qwen2_5_vl", prompt=p, threshold=0.5)
            for i, p in enumerate(PROMPTS[: args.events])
        ]
    )
    clips = make_clips(args.clips, seconds=args.seconds, fps=args.fps, height=h, width=w, mixed=args.mixed)
    dev = backend.device
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    print(f"machine: {machine()}")
    print(f"model:   {which}")
    print(
        f"device:  {dev}{' (' + gpu + ')' if gpu else ''}, dtype {dtype}, attn {args.attn}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} CPU threads)"
    )
    print(
        f"clips:   {len(clips)} × {args.seconds:g} s at {args.fps:g} fps, {h}x{w}{' / mixed sizes' if args.mixed else ''}, "
        f"{args.events} events each, grounding off"
    )
    before, now = clip_bytes(backend, clips[0])
    print(
        f"object store per clip ({clips[0].frames.shape[0]} frames {h}x{w}): before {before / 1e6:.2f} MB "
        f"(float32 patches), now {now / 1e6:.2f} MB (uint8 frames): {before / now:.2f}× fewer bytes"
    )
    results = []
    print(f"\n{'strategy':<9} {'batch':>5} {'clips/s':>9} {'vision tok/s':>13} {'ViT patches/s':>14} {'ms/clip':>9}")
    for strategy in args.strategies.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = run(backend, clips, batch, strategy, args.repeats)
            results.append(r)
            vit = "in forward" if r["vit_patches_per_s"] is None else f"{r['vit_patches_per_s']:.0f}"
            print(
                f"{strategy:<9} {batch:>5} {r['clips_per_s']:>9.2f} {r['vision_tokens_per_s']:>13.0f} "
                f"{vit:>14} {r['ms_per_clip']:>9.1f}"
            )
    best = max(results, key=lambda r: r["clips_per_s"])
    print(f"\nfastest: {best['strategy']} at batch {best['batch']} ({best['clips_per_s']:.2f} clips/s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "model": which,
                    "device": str(dev),
                    "gpu": gpu,
                    "dtype": dtype,
                    "attn": args.attn,
                    "clip_bytes": {"before": before, "now": now},
                    "results": results,
                },
                indent=2,
            )
        )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
