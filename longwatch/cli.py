"""The ``longwatch`` command line."""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from longwatch.pipeline.config import QwenCompatConfig, SamplerConfig, Settings
from longwatch.pipeline.errors import LongwatchError, MissingSecretError
from longwatch.pipeline.source import Source
from longwatch.pipeline.store import SegmentStore

from .reaper import start_reaper
from .views import segment_json, utc_or_none

app = typer.Typer(add_completion=False, no_args_is_help=True, help="longwatch: watch long footage.")
console = Console()
err_console = Console(stderr=True)


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log source events (reconnects, PTS fixes)"),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    _check_settings()


def _check_settings() -> None:
    """The settings from the environment, checked before any command runs: each bad one is named with
    its variable, what was wrong and the value (credentials masked), and the command exits 2."""
    from pydantic import ValidationError

    from longwatch.pipeline.secrets import redact

    try:
        Settings()
    except ValidationError as exc:
        for e in exc.errors():
            loc = [str(p) for p in e["loc"]]
            env = "LONGWATCH_" + "__".join(p.upper() for p in loc)
            got = redact(repr(e.get("input")))
            err_console.print(
                f"[bold red]error:[/] setting {'.'.join(loc)} ({env}): {e['msg']}, got {got}",
                markup=True,
                highlight=False,
            )
        raise typer.Exit(2) from None


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
    min_fps: float | None = typer.Option(None, help="lowest sampling rate (default from config: 0.5)"),
    max_fps: float | None = typer.Option(None, help="highest sampling rate (default from config: 2)"),
    clip_seconds: float | None = typer.Option(None, help="clip length in seconds"),
    overlap_seconds: float | None = typer.Option(None, help="overlap between consecutive clips"),
    max_pixels: int | None = typer.Option(None, help="pixel budget per frame (smart_resize)"),
    token_budget: float | None = typer.Option(None, help="vision tokens per second of footage, per stream"),
    qwen: bool = typer.Option(False, "--qwen", help="qwen-vl-utils 0.0.14 sampling (bounded files): one clip"),
    fps: float = typer.Option(2.0, help="with --qwen: frames per second to sample"),
    start_at: str | None = typer.Option(None, help="stream epoch: ISO 8601 UTC or Unix seconds"),
    max_seconds: float | None = typer.Option(None, help="stop after this many seconds of footage"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON lines"),
) -> None:
    """Print the clip / patch plan for SOURCE: rates, frames, grids, tokens, absolute times, MRoPE temporal ids."""
    settings = Settings()
    overrides = {
        k: v
        for k, v in dict(
            min_fps=min_fps,
            max_fps=max_fps,
            clip_seconds=clip_seconds,
            overlap_seconds=overlap_seconds,
            max_pixels=max_pixels,
            tokens_per_second_budget=token_budget,
        ).items()
        if v is not None
    }
    try:
        sampler_cfg = SamplerConfig(**{**settings.sampler.model_dump(), **overrides})
        src = Source.open(source, config=settings.source, start_at=start_at)
    except LongwatchError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except ValueError as exc:  # pydantic validation of the options
        err_console.print(f"[bold red]invalid options:[/] {exc}")
        raise typer.Exit(2) from None

    kind = "live" if src.live else "file"
    (err_console if as_json else console).print(
        f"[bold]{src.uri}[/]  {kind}, {src.codec} {src.width}x{src.height}"
        f"{f' @ {src.native_fps:.3f} fps' if src.native_fps else ''}"
        f"{f', {src.duration:.1f} s' if src.duration else ''}, "
        f"{f'epoch {src.epoch.isoformat()}' if _utc(src.epoch, src.epoch) else 'no epoch (times in stream seconds)'}"
    )
    # here, not at the top: `run` and the clients never sample or patchify in this process
    from longwatch.model.position_ids import temporal_ids
    from longwatch.pipeline.patches import patchify
    from longwatch.pipeline.sampler import choose_skip, sample_clips, sample_qwen

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
        columns = [
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=err_console, transient=True, disable=as_json) as progress:
            task = progress.add_task("ingest", total=total, speed="")
            for clip in clips:
                patches = patchify(clip)
                tids = temporal_ids(clip.times, tokens_per_second=settings.tokens_per_second)
                row = {
                    "clip": clip.index,
                    "start_s": round(clip.start, 3),
                    "end_s": round(clip.end, 3),
                    "start_utc": utc.isoformat() if (utc := _utc(clip.epoch, clip.utc())) else None,
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
                progress.update(
                    task,
                    completed=min(footage, total) if total else footage,
                    speed=f"{footage / wall:.1f}× real time" if wall > 0 else "",
                )
                if max_seconds is not None and footage >= max_seconds:
                    src.stop()
                    break
    except LongwatchError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
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
            str(r["clip"]),
            f"{r['start_s']:.2f}",
            f"{r['end_s']:.2f}",
            clip_utc_hms(r["start_utc"]) if r["start_utc"] else "—",
            f"{r['fps']:.3g}",
            str(r["frames"]),
            "x".join(map(str, r["grid_thw"])),
            str(r["tokens"]),
            f"{r['activity']:.2f}",
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


# ---- the runtime: run, query, streams ------------------------------------------------------------


def _settings(**runtime_overrides) -> Settings:
    settings = Settings()
    rt = {k: v for k, v in runtime_overrides.items() if v is not None}
    if rt:
        settings = settings.model_copy(update={"runtime": settings.runtime.model_copy(update=rt)})
    return settings


@contextmanager
def _store(settings: Settings) -> Iterator[SegmentStore]:
    """The configured Redis, or the embedded one in the data dir (attached if already running; a
    server this command started is stopped again when the block ends)."""
    import os

    from longwatch.pipeline.redis_server import EmbeddedRedis

    url = settings.runtime.redis_url or os.environ.get("REDIS_URL")
    embedded = None
    if not url:
        embedded = EmbeddedRedis(Path(settings.runtime.data_dir) / "redis").start()
        url = embedded.url
    try:
        store = SegmentStore.from_url(url, prefix=settings.runtime.redis_prefix)
        try:
            yield store
        finally:
            store.close()
    finally:
        if embedded:
            embedded.stop()


def _parse_when(value: str | None):
    """Stream seconds (a number) or an absolute time (ISO 8601)."""
    if value is None:
        return None, None
    try:
        return float(value), None
    except ValueError:
        from longwatch.pipeline.timebase import parse_epoch

        try:
            return None, parse_epoch(value)
        except ValueError as exc:
            raise typer.BadParameter(
                f"{value!r}: give stream seconds (e.g. 842.5) or an ISO time (2026-11-22T14:02:00Z)"
            ) from exc


_utc = utc_or_none


def _segments_table(segments, title: str) -> Table:
    return _rows_table([segment_json(s) for s in segments], title)


def _rows_table(rows: list[dict], title: str) -> Table:
    """Segments (as :func:`longwatch.views.segment_json` rows) as a table."""
    table = Table(title=title, pad_edge=False)
    for col, right in (
        ("stream", False),
        ("event", False),
        ("start s", True),
        ("end s", True),
        ("start (UTC)", False),
        ("dur s", True),
        ("score", True),
    ):
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    for r in rows:
        open_mark = " (open)" if r["state"] == "open" else ""
        table.add_row(
            r["stream"],
            r["event"].removesuffix("_present"),
            f"{r['start_s']:.2f}",
            f"{r['end_s']:.2f}{open_mark}",
            r["start_utc"][:19].replace("T", " ") if r["start_utc"] else "—",
            f"{r['end_s'] - r['start_s']:.1f}",
            f"{r['score']:.2f}",
        )
    return table


@app.command()
def run(
    sources: list[str] = typer.Argument(..., help="files, rtsp:// cameras, http(s):// streams"),
    events: Path | None = typer.Option(None, "--events", "-e", help="events YAML (default: the shipped one)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (or RAY_ADDRESS); default: local"),
    redis_url: str | None = typer.Option(None, "--redis-url", help="Redis URL (or REDIS_URL); default: embedded"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="embedded Redis data and model cache"),
    start_at: str | None = typer.Option(None, help="epoch for files: ISO 8601 UTC or Unix seconds"),
    stream_id: list[str] | None = typer.Option(None, "--id", help="stream ids, in the order of SOURCES"),
    show: bool = typer.Option(True, help="print the segments when the files are done"),
    reprocess: bool = typer.Option(
        False, "--reprocess", help="delete these streams' segments and watermarks first, and start them over"
    ),
) -> None:
    """Process SOURCES: decode → sample → detect → segments in Redis. Files run to their end;
    cameras run until Ctrl-C (the watermark is saved after every clip).

    A stream's id is --id, or derived from the whole source (a file: its name and a hash of its
    path). An id that already holds segments of another source, or of other events or sampler
    settings, is refused; --reprocess starts it over."""
    from longwatch.actors.runtime import Runtime, RuntimeAlreadyRunningError, stream_id_for
    from longwatch.pipeline.events import default_events_path, load_events
    from longwatch.pipeline.identity import check_stream_id
    from longwatch.pipeline.source import classify

    settings = _settings(ray_address=address, redis_url=redis_url, data_dir=data_dir)
    try:
        events_text = (events or Path(default_events_path())).read_text()
        events_spec = load_events(events_text)  # rejected before anything starts
        for uri in sources:
            classify(uri)
        given = [check_stream_id(sid) for sid in stream_id or []]
        if len(given) > len(sources):
            raise typer.BadParameter(f"{len(given)} --id for {len(sources)} sources", param_hint="--id")
        if len(set(given)) < len(given):
            dup = next(sid for sid in given if given.count(sid) > 1)
            raise typer.BadParameter(f"stream id {dup!r} is given twice", param_hint="--id")
    except (LongwatchError, OSError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    ids: list[str] = list(given)
    for uri in sources[len(given) :]:
        ids.append(stream_id_for(uri, set(ids)))
    # Probe every source once: a file that is missing, corrupt or not video is a permanent error and
    # fails at once, before anything starts; a camera that does not answer now may come back, so the
    # runtime waits for it.
    durations: dict[str, float | None] = {}
    live: dict[str, bool] = {}
    rejected: dict[str, str] = {}
    for sid, uri in zip(ids, sources):
        try:
            with Source.open(uri, config=settings.source.model_copy(update={"connect_attempts": 1})) as probe:
                durations[sid] = None if probe.live else probe.duration
                live[sid] = probe.live
        except LongwatchError as exc:
            if classify(uri)[0] == "file" or isinstance(exc, MissingSecretError):  # permanent: fail now
                rejected[sid] = str(exc)
            else:
                durations[sid], live[sid] = None, True
    if len(rejected) == len(ids):  # every source fails its probe: nothing starts
        for sid, reason in rejected.items():
            err_console.print(f"[bold red]{sid} failed:[/] {reason}")
        raise typer.Exit(1)
    runtime = Runtime(settings, events_text=events_text)
    # SIGTERM (what systemd and Kubernetes send) stops like Ctrl-C: watermarks saved, Ray and the
    # embedded Redis shut down, nothing left running.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    status: dict = {}
    try:
        try:
            start_reaper()  # killed or not, nothing of ours outlives this process
            with err_console.status("starting runtime (Ray, Redis, model pool)…"):
                runtime.start_redis()  # the runtime's Redis: the identities are checked there, no server of their own
                rejected.update(
                    _check_identities(runtime.store, settings, events_spec, ids, sources, rejected, reprocess)
                )
                for sid, reason in rejected.items():
                    err_console.print(f"[bold red]{sid} failed:[/] {reason}")
                if len(rejected) == len(ids):
                    raise typer.Exit(1)
                ids, sources = (
                    [sid for sid in ids if sid not in rejected],
                    [u for sid, u in zip(ids, sources) if sid not in rejected],
                )
                runtime.expected_streams = len(ids)  # one: the detector runs in its worker (runtime.model_host)
                runtime.start(wait_pools=False)  # the streams start while the model replicas do
                signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # again: ray.init installs its own
                for sid, uri in zip(ids, sources):
                    runtime.add(uri, stream_id=sid, start_at=start_at)
                runtime.wait_pools()  # a pool that fails to deploy is reported here
            _watch(runtime, ids, durations, live)
            err_console.print()  # end the progress display's line before the table
        except KeyboardInterrupt:
            err_console.print()  # end the live display's last line, as after a finished run
            err_console.print("[yellow]stopping: watermarks are saved; run again to resume[/]")
        except LongwatchError as exc:  # Redis unreachable, a model pool that failed to deploy, …
            err_console.print(f"[bold red]error:[/] {exc}")
            if isinstance(exc, RuntimeAlreadyRunningError):
                err_console.print("(if it is `longwatch serve`, give it these sources with `longwatch add`)")
            raise typer.Exit(2) from None
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
            try:
                status = runtime.status() if runtime.controller is not None else {}
            except Exception:
                pass
            runtime.close(keep_redis=True)  # the table below reads the embedded Redis: no second start
        failed = {sid: st for sid, st in status.items() if st.get("state") == "failed"}
        for sid, st in failed.items():
            err_console.print(f"[bold red]{sid} failed:[/] {st.get('error')}")
        for sid, st in status.items():  # stopped while a camera did not answer: say why it waited
            if sid in ids and st.get("state") == "waiting" and st.get("reason"):
                err_console.print(f"[yellow]{sid} was waiting:[/] {st['reason']}")
        if show:
            if runtime.store is not None:
                segs = [s for sid in ids for s in runtime.store.query(stream=sid)]
            else:
                with _store(settings) as store:
                    segs = [s for sid in ids for s in store.query(stream=sid)]
            console.print(_segments_table(sorted(segs, key=lambda s: (s.stream_id, s.start)), f"{len(segs)} segments"))
    finally:
        runtime.close()  # the store and the embedded Redis
    if failed or rejected:  # the others ran to their end; the exit code still says one failed
        raise typer.Exit(1)


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _check_identities(
    store: SegmentStore, settings: Settings, events_spec, ids, sources, rejected, reprocess: bool
) -> dict[str, str]:
    """Before any stream starts: with ``reprocess``, drop each stream's segments and watermark (one
    transaction per stream); else refuse (stream id → reason) every id whose stored watermark names
    another source or another pipeline (:func:`longwatch.pipeline.identity.check_identity`)."""
    from longwatch.pipeline.errors import StreamIdentityError
    from longwatch.pipeline.identity import check_identity, fingerprints

    refused: dict[str, str] = {}
    for sid, uri in zip(ids, sources):
        if sid in rejected:
            continue
        if reprocess:
            store.drop_stream(sid)
            continue
        wm = store.watermark(sid)
        if not wm:
            continue
        try:
            check_identity(sid, wm, fingerprints(uri, events_spec, settings.sampler))
        except StreamIdentityError as exc:
            refused[sid] = str(exc)
    return refused


def _watch(runtime, ids: list[str], durations: dict, live_ids: dict[str, bool]) -> None:
    """Progress bars for files (ETA, × real time), a live table for cameras. Returns when every file
    has ended and every camera has failed or stopped (with cameras running: on Ctrl-C)."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    progress = Progress(*columns, console=err_console)
    tasks = {sid: progress.add_task(sid, total=durations[sid], info="") for sid in ids if not live_ids[sid]}
    cams = [sid for sid in ids if live_ids[sid]]
    ended = ("done", "failed", "stopped")

    def cam_table(status) -> Table | Group:
        t = Table(title="live streams", pad_edge=False)
        t.add_column("stream", overflow="fold")
        for col in ("state", "footage s", "lag s", "clips", "dropped", "restarts"):
            t.add_column(col)
        notes = []
        for sid in cams:
            st = status.get(sid, {})
            t.add_row(
                sid,
                st.get("state", "?"),
                str(st.get("footage_s", "")),
                str(st.get("lag_s", "")),
                str(st.get("clips", "")),
                str(st.get("dropped_clips", "")),
                str(st.get("restarts", "")),
            )
            # a camera that does not answer waits (it may come back): say why, one line per stream under
            # the table (a column would fold it into an unreadable strip on an 80-column terminal)
            why = st.get("error") or (st.get("reason") if st.get("state") in ("waiting", "restarting", "lost") else "")
            if why:
                notes.append(Text(f"{sid} {st.get('state', '?')}: {why}", style="red" if st.get("error") else "yellow"))
        return Group(t, *notes) if notes else t

    with Live(
        Group(progress, cam_table({})) if cams else progress, console=err_console, refresh_per_second=4, transient=False
    ) as live:
        status: dict = {}
        while True:
            pending = [sid for sid in tasks if status.get(sid, {}).get("state") not in ended]
            if pending:
                status = runtime.wait(timeout=1.0, stream_ids=pending)
            else:
                time.sleep(1.0)
                status = runtime.status()
            for sid, task in tasks.items():
                st = status.get(sid, {})
                footage = float(st.get("footage_s") or 0)
                done = st.get("state") in ended
                info = f"{st.get('speed', 0)}× real time" if st.get("state") == "running" else st.get("state", "")
                progress.update(task, completed=(durations[sid] or footage) if done else footage, info=info)
            if cams:
                live.update(Group(progress, cam_table(status)))
            if all(status.get(sid, {}).get("state") in ended for sid in ids):
                return


@app.command()
def query(
    stream: str | None = typer.Option(None, "--stream", "-s", help="one stream id (default: all)"),
    event: str | None = typer.Option(None, "--event", "-e", help="one event (default: all)"),
    from_: str | None = typer.Option(None, "--from", help="stream seconds or ISO 8601 time"),
    to: str | None = typer.Option(None, "--to", help="stream seconds or ISO 8601 time"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines"),
    url: str | None = typer.Option(None, "--url", help="ask the service there (or LONGWATCH_URL); default: Redis"),
    redis_url: str | None = typer.Option(None, "--redis-url"),
    data_dir: str | None = typer.Option(None, "--data-dir"),
) -> None:
    """What happened between --from and --to: segments overlapping that window."""
    import os

    t0, u0 = _parse_when(from_)
    t1, u1 = _parse_when(to)
    if (t0 is not None or t1 is not None) and (u0 is not None or u1 is not None):
        raise typer.BadParameter("give --from/--to both as stream seconds or both as ISO times")
    if (url or os.environ.get("LONGWATCH_URL")) and not redis_url:
        with _service_errors(), _client(url, data_dir, required=True) as client:
            rows = list(client.events(stream=stream, event=event, after=from_, before=to))
        if as_json:
            for r in rows:
                print(json.dumps(r))
            return
        console.print(_rows_table(rows, f"{len(rows)} segments"))
        return
    settings = _settings(redis_url=redis_url, data_dir=data_dir)
    with _store(settings) as store:
        if u0 is not None or u1 is not None:
            segs = store.query_utc(stream, event, u0, u1)
        else:
            segs = store.query(stream=stream, event=event, t0=t0, t1=t1)
    if as_json:
        for s in segs:
            print(json.dumps(segment_json(s)))
        return
    console.print(_segments_table(segs, f"{len(segs)} segments"))


def _client(url: str | None, data_dir: str | None, *, required: bool):
    """A client of the running service: at ``url`` / LONGWATCH_URL (must answer), or the local one if it
    answers; None (``required=False``) when no local service runs: the caller reads Redis itself."""
    import os

    from longwatch.client import Client, service_url

    explicit = bool(url or os.environ.get("LONGWATCH_URL"))
    client = Client(service_url(url, data_dir=data_dir or Settings().runtime.data_dir))
    if explicit or required or client.health():
        return client
    client.close()
    return None


@contextmanager
def _service_errors() -> Iterator[None]:
    """Client errors as one red line and exit 2 (the service answered no), or 3 (no service)."""
    from longwatch.client import ApiError, ServiceUnavailableError

    try:
        yield
    except ServiceUnavailableError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(3) from None
    except ApiError as exc:
        err_console.print(f"[bold red]error ({exc.code}):[/] {exc}")
        raise typer.Exit(2) from None


URL_OPTION = typer.Option(None, "--url", help="the service (or LONGWATCH_URL); default: the local `longwatch serve`")


@app.command()
def streams(
    as_json: bool = typer.Option(False, "--json"),
    url: str | None = URL_OPTION,
    redis_url: str | None = typer.Option(None, "--redis-url", help="read Redis directly (no service)"),
    data_dir: str | None = typer.Option(None, "--data-dir"),
) -> None:
    """Streams: desired and actual state, reason, footage processed, lag, speed, restarts, errors."""
    client = None if redis_url else _client(url, data_dir, required=False)
    if client is not None:
        with _service_errors(), client:
            rows = client.streams()
    else:
        from longwatch.pipeline.registry import Registry

        from .views import stream_json

        settings = _settings(redis_url=redis_url, data_dir=data_dir)
        with _store(settings) as store:
            specs = {s.id: s for s in Registry.of(store).list() if s.state != "removed"}
            infos = {i.stream_id: i.meta for i in store.streams()}
        rows = [stream_json(specs.get(sid), infos.get(sid), stream_id=sid) for sid in sorted(set(specs) | set(infos))]
    if as_json:
        for r in rows:
            print(json.dumps(r, default=str))
        return
    table = Table(title=f"{len(rows)} streams", pad_edge=False)
    for col in ("stream", "state", "footage s", "lag s", "speed ×", "clips", "restarts", "source", "reason / error"):
        table.add_column(col)
    for r in rows:
        state = r["state"] or ""
        if r.get("desired") and r["desired"] != "running" and r["desired"] != state:
            state += f" → {r['desired']}"
        table.add_row(
            r["id"],
            state,
            _cell(r.get("footage_s")),
            _cell(r.get("lag_s")),
            _cell(r.get("speed")),
            _cell(r.get("clips")),
            _cell(r.get("restarts")),
            str(r["source"])[:40],
            str(r.get("error") or r.get("reason") or "")[:60],
        )
    console.print(table)


def _cell(value) -> str:
    return "" if value is None else str(value)


def _abs_source(source: str) -> str:
    """A file path as the service must see it: absolute (it runs in another directory)."""
    from longwatch.pipeline.source import classify

    try:
        kind, _ = classify(source)
    except LongwatchError:
        return source
    return str(Path(source).expanduser().absolute()) if kind == "file" else source


def _parse_sampler(items: list[str] | None) -> dict:
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: give KEY=VALUE, e.g. max_fps=1", param_hint="--sampler")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


@app.command()
def add(
    source: str = typer.Argument(..., help="file path, rtsp:// camera (${VAR} for secrets), http(s)://"),
    stream_id: str | None = typer.Option(None, "--id", help="stream id (default: derived from the whole source)"),
    events: Path | None = typer.Option(None, "--events", "-e", help="events YAML for this stream"),
    sampler: list[str] | None = typer.Option(None, "--sampler", help="sampler override KEY=VALUE (repeatable)"),
    start_at: str | None = typer.Option(None, help="a file's epoch: ISO 8601 UTC or Unix seconds"),
    validate: bool = typer.Option(True, help="probe the source first (--no-validate: add a camera that is down)"),
    reprocess: bool = typer.Option(False, "--reprocess", help="drop this stream's segments and start it over"),
    url: str | None = URL_OPTION,
) -> None:
    """Add a stream to the running service (it keeps running across restarts until removed)."""
    try:
        events_text = events.read_text() if events else None
    except OSError as exc:
        err_console.print(f"[bold red]error:[/] cannot read the events file: {exc}")
        raise typer.Exit(2) from None
    with _service_errors(), _client(url, None, required=True) as client:
        st = client.add(
            _abs_source(source),
            id=stream_id,
            events=events_text,
            sampler=_parse_sampler(sampler),
            start_at=start_at,
            validate=validate,
            reprocess=reprocess,
        )
    console.print(f"added [bold]{st['id']}[/] ({st['source']}): {st['state'] or 'starting'}")


def _set_state(stream_id: str, url: str | None, verb: str) -> None:
    with _service_errors(), _client(url, None, required=True) as client:
        st = getattr(client, verb)(stream_id)
    console.print(f"{st['id']}: desired {st['desired']}, now {st['state']}")


@app.command()
def pause(stream_id: str = typer.Argument(..., metavar="ID"), url: str | None = URL_OPTION) -> None:
    """Pause a stream: its worker stops, its place is kept; `resume` goes on from there."""
    _set_state(stream_id, url, "pause")


@app.command()
def resume(stream_id: str = typer.Argument(..., metavar="ID"), url: str | None = URL_OPTION) -> None:
    """Resume a paused (or failed) stream from its watermark."""
    _set_state(stream_id, url, "resume")


@app.command()
def remove(
    stream_id: str = typer.Argument(..., metavar="ID"),
    purge: bool = typer.Option(False, "--purge", help="delete its segments too"),
    url: str | None = URL_OPTION,
) -> None:
    """Remove a stream: its worker stops and a camera's open segments close; --purge deletes its segments."""
    with _service_errors(), _client(url, None, required=True) as client:
        client.remove(stream_id, purge=purge)
    console.print(f"{stream_id}: removed{' (segments deleted)' if purge else ' (segments kept)'}")


@app.command()
def follow(
    stream: str | None = typer.Option(None, "--stream", "-s", help="one stream (default: all)"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines"),
    url: str | None = URL_OPTION,
) -> None:
    """Tail the live feed: segments as they open, grow and close (Ctrl-C to stop)."""
    try:
        with _service_errors(), _client(url, None, required=True) as client:
            for item in client.follow(stream=stream):
                if item["kind"] == "stream.state":
                    st = item["stream"]
                    if as_json:
                        print(json.dumps({"kind": item["kind"], **st}), flush=True)
                    else:
                        why = f"  ({st['reason']})" if st.get("reason") else ""
                        console.print(f"state  {st['stream']}  {st['state']}{why}")
                    continue
                seg = item["segment"]
                if as_json:
                    print(json.dumps({"kind": item["kind"], **seg}), flush=True)
                    continue
                when = seg["start_utc"][11:19] if seg.get("start_utc") else f"{seg['start_s']:.1f}s"
                console.print(
                    f"{item['kind'].removeprefix('segment.'):6} {seg['stream']}  {seg['event']}  {when}  "
                    f"{seg['start_s']:.1f} → {seg['end_s']:.1f} s  score {seg['score']:.2f}"
                )
    except KeyboardInterrupt:
        pass


token_app = typer.Typer(
    no_args_is_help=True,
    help="API tokens of `longwatch serve`: stored hashed in <data dir>/tokens (or LONGWATCH_TOKENS_FILE).",
)
app.add_typer(token_app, name="token")


def _tokens_file(data_dir: str | None) -> Path:
    from .auth import tokens_path

    return tokens_path(_settings(data_dir=data_dir))


@token_app.command("create")
def token_create(
    scope: str = typer.Option("read", "--scope", help="read (query, follow) or admin (also add, change, remove)"),
    name: str | None = typer.Option(None, "--name", help="a name to revoke it by (default: scope-N)"),
    data_dir: str | None = typer.Option(None, "--data-dir"),
) -> None:
    """Make a token and print it (the only time it is shown: only its hash is kept). A running service
    accepts it within a second."""
    from .auth import SCOPES, create_token, list_tokens

    if scope not in SCOPES:
        raise typer.BadParameter(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    path = _tokens_file(data_dir)
    try:
        if name is None:
            taken = {t.name for t in list_tokens(path)} if path.exists() else set()
            name = next(f"{scope}-{i}" for i in range(1, 10_000) if f"{scope}-{i}" not in taken)
        token = create_token(path, scope=scope, name=name)
    except (LongwatchError, OSError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    print(token)
    err_console.print(
        f"token {name!r} ({scope}) saved hashed in {path}; give it to clients as LONGWATCH_TOKEN or "
        "`Authorization: Bearer …`; it is not shown again"
    )


@token_app.command("list")
def token_list(data_dir: str | None = typer.Option(None, "--data-dir")) -> None:
    """The tokens' names and scopes (never the tokens)."""
    from .auth import list_tokens

    path = _tokens_file(data_dir)
    entries = list_tokens(path) if path.exists() else []
    for entry in entries:
        print(f"{entry.name}\t{entry.scope}")
    if not entries:
        err_console.print(f"no tokens in {path}")


@token_app.command("revoke")
def token_revoke(name: str = typer.Argument(...), data_dir: str | None = typer.Option(None, "--data-dir")) -> None:
    """Remove a token by name (a running service refuses it within a second)."""
    from .auth import revoke_token

    path = _tokens_file(data_dir)
    if not path.exists() or not revoke_token(path, name):
        err_console.print(f"[bold red]error:[/] no token named {name!r} in {path}")
        raise typer.Exit(2)
    err_console.print(f"revoked {name!r}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8470, help="port of the HTTP API"),
    events: Path | None = typer.Option(None, "--events", "-e", help="events YAML (default: the shipped one)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (or RAY_ADDRESS); default: local"),
    redis_url: str | None = typer.Option(None, "--redis-url", help="Redis URL (or REDIS_URL); default: embedded"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="embedded Redis data, model cache, logs"),
    media_root: list[Path] = typer.Option(
        [], "--media-root", help="a folder whose files HTTP clients may add (repeat; or LONGWATCH_MEDIA_ROOTS)"
    ),
) -> None:
    """Run the always-on service: Ray, Redis, the controller and the HTTP API, until SIGINT/SIGTERM.
    Every stream whose spec says running resumes from its watermark, with no command.

    API tokens (``longwatch token create``, or LONGWATCH_API_TOKENS): once any exists every route but
    /healthz needs one; a non-loopback --host needs one."""
    import os
    import socket

    from longwatch.actors.runtime import Runtime
    from longwatch.client import SERVE_FILE
    from longwatch.pipeline.events import default_events_path, load_events

    from .auth import LiveTokenSet, install_log_redaction, is_loopback, media_roots, tokens_path

    settings = _settings(ray_address=address, redis_url=redis_url, data_dir=data_dir)
    if media_root:
        settings = settings.model_copy(update={"media_roots": os.pathsep.join(str(p.absolute()) for p in media_root)})
    try:
        events_text = (events or Path(default_events_path())).read_text()
        load_events(events_text)
        tokens = LiveTokenSet(settings)
        roots = media_roots(settings)
    except (LongwatchError, OSError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if not is_loopback(host) and not tokens.enabled:
        err_console.print(
            f"[bold red]error:[/] refusing to listen on {host} without API tokens: anyone who reaches it could "
            f"add and remove streams. Create one with `longwatch token create --scope admin` (stored hashed in "
            f"{tokens_path(settings)}) or set LONGWATCH_API_TOKENS, or listen on 127.0.0.1."
        )
        raise typer.Exit(2)
    try:  # a taken port fails now, before Ray and Redis start
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        err_console.print(f"[bold red]error:[/] cannot listen on {host}:{port}: {exc.strerror or exc}")
        raise typer.Exit(2) from None
    runtime = Runtime(settings, events_text=events_text, service=True)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    serve_file = Path(settings.runtime.data_dir) / SERVE_FILE
    try:
        start_reaper()  # killed or not, nothing of ours outlives this process
        with err_console.status("starting (Ray, Redis, model pool, controller)…"):
            runtime.start()
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # again: ray.init installs its own
        import ray
        import uvicorn

        from .api import create_app

        controller = runtime.controller

        def nudge() -> None:
            ray.get(controller.reconcile.remote(), timeout=60)

        def ready() -> bool:
            return ray.get(controller.ping.remote(), timeout=5) == runtime.redis_url

        def live_status() -> dict:
            return ray.get(controller.status.remote(), timeout=30)

        # The API's own connection gives up within seconds when Redis is away (the workers' wait on):
        # then GET /streams shows the controller's view instead of hanging.
        api_store = SegmentStore.from_url(
            runtime.redis_url, prefix=settings.runtime.redis_prefix, retries=2, retry_deadline_s=3.0
        )
        api = create_app(
            store=api_store,
            events_text=events_text,
            settings=settings,
            nudge=nudge,
            ready=ready,
            live_status=live_status,
            tokens=tokens,
            media_roots=roots,
        )
        install_log_redaction()
        server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning", lifespan="off"))
        shown = f"[{host}]" if ":" in host else host
        serve_file.write_text(json.dumps({"url": f"http://{shown}:{port}", "pid": os.getpid()}))
        err_console.print(
            f"longwatch serving on [bold]http://{shown}:{port}[/] (API /api/v1, docs /docs); "
            f"data in {settings.runtime.data_dir}; Ctrl-C to stop"
        )
        err_console.print(
            f"  tokens: {len(tokens) or 'none (open to this machine only)'}; files over HTTP from: "
            + (", ".join(str(r) for r in roots) or "nowhere (--media-root DIR allows a folder)")
        )
        # uvicorn stops on SIGINT / SIGTERM itself, then raises the signal again with the handler it
        # found: ignored, so that the clean-up below is not cut short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server.run()
    except KeyboardInterrupt:
        pass
    except LongwatchError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        err_console.print("[yellow]stopping: workers save their watermarks; specs stay for the next start[/]")
        serve_file.unlink(missing_ok=True)
        runtime.close()


def entry() -> None:
    """The ``longwatch`` command (the console script): the app, then an exit that skips the interpreter's
    own teardown. Once a command has returned, everything of ours is closed (Ray shut down, Redis and
    files closed), yet Python would spend another ~0.5 s freeing the objects of the libraries it loaded
    (Ray's core worker, gRPC, PyAV, OpenCV, onnxruntime): measured after ``ray.shutdown`` here. So this
    runs the exit handlers (logging's flush among them), flushes the standard streams and leaves with the
    command's exit code. A thread that is not a daemon still running means work not done: then the
    exit is Python's usual one, which waits for it. ``app()`` called from Python is unaffected."""
    import atexit
    import os
    import sys
    import threading

    try:
        app()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, exit status 1
        print(code, file=sys.stderr)
        code = 1
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`longwatch … | head`): nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
