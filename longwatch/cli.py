"""The ``longwatch`` command line."""

from __future__ import annotations

import json
import logging
import time
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from model.position_ids import temporal_ids
from pipeline.config import QwenCompatConfig, SamplerConfig, Settings
from pipeline.errors import LongwatchError
from pipeline.patches import patchify
from pipeline.sampler import choose_skip, sample_clips, sample_qwen
from pipeline.source import Source

app = typer.Typer(add_completion=False, no_args_is_help=True, help="longwatch: watch long footage.")
console = Console()
err_console = Console(stderr=True)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log source events (reconnects, PTS fixes)")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def clip_utc_hms(iso: str) -> str:
    from datetime import datetime

    return datetime.fromisoformat(iso).strftime("%H:%M:%S.%f")[:-4]


def _fmt_ids(ids, limit: int = 8) -> str:
    ids = list(ids)
    text = ",".join(str(i) for i in ids[:limit])
    return text + (",…" if len(ids) > limit else "")


@app.command()
def inspect(
    source: str = typer.Argument(..., help="file path, rtsp://, http(s):// (HLS too)"),
    min_fps: Optional[float] = typer.Option(None, help="lowest sampling rate (default from config: 0.5)"),
    max_fps: Optional[float] = typer.Option(None, help="highest sampling rate (default from config: 2)"),
    clip_seconds: Optional[float] = typer.Option(None, help="clip length in seconds"),
    overlap_seconds: Optional[float] = typer.Option(None, help="overlap between consecutive clips"),
    max_pixels: Optional[int] = typer.Option(None, help="pixel budget per frame (smart_resize)"),
    token_budget: Optional[float] = typer.Option(None, help="vision tokens per second of footage, per stream"),
    qwen: bool = typer.Option(False, "--qwen", help="qwen-vl-utils 0.0.14 sampling (bounded files): one clip"),
    fps: float = typer.Option(2.0, help="with --qwen: frames per second to sample"),
    start_at: Optional[str] = typer.Option(None, help="stream epoch: ISO 8601 UTC or Unix seconds"),
    max_seconds: Optional[float] = typer.Option(None, help="stop after this many seconds of footage"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON lines"),
) -> None:
    """Print the clip / patch plan for SOURCE: rates, frames, grids, tokens, absolute times, MRoPE temporal ids."""
    settings = Settings()
    overrides = {
        k: v
        for k, v in dict(
            min_fps=min_fps, max_fps=max_fps, clip_seconds=clip_seconds, overlap_seconds=overlap_seconds,
            max_pixels=max_pixels, tokens_per_second_budget=token_budget,
        ).items()
        if v is not None
    }
    try:
        sampler_cfg = SamplerConfig(**{**settings.sampler.model_dump(), **overrides})
        src = Source.open(source, config=settings.source, start_at=start_at)
    except LongwatchError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2)
    except ValueError as exc:  # pydantic validation of the options
        err_console.print(f"[bold red]invalid options:[/] {exc}")
        raise typer.Exit(2)

    kind = "live" if src.live else "file"
    (err_console if as_json else console).print(
        f"[bold]{source}[/]  {kind}, {src.codec} {src.width}x{src.height}"
        f"{f' @ {src.native_fps:.3f} fps' if src.native_fps else ''}"
        f"{f', {src.duration:.1f} s' if src.duration else ''}, epoch {src.epoch.isoformat()}"
    )
    rows = []
    started = time.perf_counter()
    footage = 0.0
    try:
        if qwen:
            clips = [sample_qwen(src, QwenCompatConfig(fps=fps), stream_id="inspect")]
            mode = "qwen-vl-utils"
        else:
            mode = f"dynamic, skip={choose_skip(src, sampler_cfg)}"
            clips = sample_clips(src, sampler_cfg, stream_id="inspect")
        total = src.duration if (src.duration and not src.live) else None
        columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), TextColumn("{task.fields[speed]}"),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=err_console, transient=True, disable=as_json) as progress:
            task = progress.add_task("ingest", total=total, speed="")
            for clip in clips:
                patches = patchify(clip)
                tids = temporal_ids(clip.times, tokens_per_second=settings.tokens_per_second)
                row = {
                    "clip": clip.index,
                    "start_s": round(clip.start, 3),
                    "end_s": round(clip.end, 3),
                    "start_utc": clip.utc().isoformat(),
                    "fps": round(clip.fps, 4),
                    "frames": clip.n,
                    "size": f"{clip.size[0]}x{clip.size[1]}",
                    "grid_thw": list(patches.grid_thw),
                    "second_per_grid_t": round(patches.second_per_grid_t, 4),
                    "tokens": patches.num_tokens,
                    "activity": round(clip.activity, 4),
                    "temporal_ids": tids.tolist(),
                }
                rows.append(row)
                footage = clip.end
                if as_json:
                    print(json.dumps(row), flush=True)
                wall = time.perf_counter() - started
                progress.update(task, completed=min(footage, total) if total else footage,
                                speed=f"{footage / wall:.1f}× real time" if wall > 0 else "")
                if max_seconds is not None and footage >= max_seconds:
                    src.stop()
                    break
    except LongwatchError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2)
    except KeyboardInterrupt:
        src.stop()
        err_console.print("[yellow]stopped[/]")
    finally:
        src.close()
    wall = time.perf_counter() - started
    if as_json:
        return
    size = rows[0]["size"] if rows else "-"
    table = Table(title=f"clip plan ({mode}; frames {size})", pad_edge=False)
    for col in ("#", "start s", "end s", "UTC", "fps", "n", "grid", "tokens", "act", "MRoPE t"):
        table.add_column(col, justify="left" if col in ("UTC", "MRoPE t") else "right", no_wrap=col != "MRoPE t")
    for r in rows:
        table.add_row(
            str(r["clip"]), f"{r['start_s']:.2f}", f"{r['end_s']:.2f}", clip_utc_hms(r["start_utc"]), f"{r['fps']:.3g}",
            str(r["frames"]), "x".join(map(str, r["grid_thw"])), str(r["tokens"]), f"{r['activity']:.2f}",
            _fmt_ids(r["temporal_ids"], 4),
        )
    console.print(table)
    tokens = sum(r["tokens"] for r in rows)
    st = src.stats
    console.print(
        f"{len(rows)} clips, {footage:.1f} s of footage in {wall:.1f} s ({footage / wall if wall else 0:.1f}× real time), "
        f"{tokens} vision tokens ({tokens / footage if footage else 0:.1f}/s); decoded {st.frames} frames, "
        f"PTS fixes {st.pts_discontinuities}, estimated {st.pts_estimated}, corrupt packets {st.corrupt_packets}, "
        f"reconnects {st.reconnects}"
    )


if __name__ == "__main__":
    app()
