#!/usr/bin/env python
"""End-to-end benchmark of the Ray runtime: files, live RTSP cameras, Redis queries.

    .venv/bin/python bench/e2e.py            # the full run (~5 minutes on 2 cores)
    .venv/bin/python bench/e2e.py --quick    # smoke run: 1 file, N ≤ 4 cameras, 100k segments

What it measures, in one run (real Ray, a private real Redis, the CPU YOLOv3-tiny detector in the
Ray Serve model pool, the default events file):

1. **Files, × real time** = footage seconds / wall seconds through the whole runtime
   (``Runtime.add`` → stream actor → decode + dynamic 0.5–2 fps sampling → model pool → segmenter →
   Redis), on 1 file and on 4 concurrent files: the four shared clips (person, car, vtest, bikes:
   different lengths, so the tail of that run has fewer streams) and 4 stream ids of the person
   clip (balanced); then the same on a 1280x720 30 fps H.264 file made like ``bench/ingest.py``
   makes it (cached in ``bench/out/``). "total ×" = all streams' footage / the driver's wall time
   from the first ``add`` to the last stream done (it includes starting each stream's actor);
   "per stream ×" = the stream's footage / its worker's own wall clock (``status()['wall_s']``).
   The one-time start-up (``ray.init``, ``Runtime.start``: Serve and the controller, the model
   replica starting in the background, and a first 10-s warm-up file that waits for the replica and
   loads the detector) is timed and reported apart.
2. **Live RTSP cameras**: one GStreamer RTSP server process (``tests/rtsp_server.py``) serves the
   720p30 file on N mounts, camera k from its own point of the file: the file rotated by k/N of its
   length (cut at a keyframe, stream copy, cached in ``bench/out/``), as N real cameras do not see a
   person walk in at the same instant (``--in-step``: every mount from the file's start, the worst
   case where every camera's motion and detector work arrives at once); N = 2, 4, 8, 12, 16 streams go through one Runtime with the default
   settings (dynamic 0.5–2 fps sampling, 1-s live decision windows, motion at 8 fps, the gated
   detector). Each step: add N streams, let them settle for a warm-up, then read every stream's status
   from Redis (as the API does: no call reaches a worker) every second through a measuring window,
   then ``rt.stop()``. **Glass-to-segment** (g2s), the headline: for every ``person_present`` segment
   that starts in the window, the wall time its ``open`` record arrives on the stream's live feed (one
   blocking XREAD over every stream's feed; the record is written in the segment's own transaction)
   − the wall time of its start (start in stream seconds + the stream's epoch, i.e. its first frame's
   PTS on the wall clock). Ray is the lean local one ``longwatch run`` and ``serve`` start. Also shown, as before: lag, the
   runtime's own ``lag_s`` (now − the end of the clip just committed, read at each poll), the data
   age at each poll (now − end of the newest committed clip) and the longest wait between two commits
   of a stream. A step holds when every stream keeps running, g2s p95 ≤ 3 s, no clip is dropped and
   every stream commits ≥ 90 % of the clips the window should give. The sweep stops at the first step
   that does not hold (``--sweep-all``: runs every N).
3. **Redis overlap query** p50/p99 at 1 M segments (``bench/redis_query.py``'s data generator and
   method, by import; a separate private redis-server without persistence).

**File speed** (``--file-speed``: only this section; with ``--quick`` a 2-minute file): a 10-minute
1280x720 30 fps H.264 file (GOP 60, 2 B-frames, ``-preset veryfast``) looped from the person clip with
ffmpeg (cached in ``bench/out/``) goes (a) through ``ffmpeg -threads 2 -i FILE -f null -`` (decode only),
(b) through ``longwatch run FILE --no-show`` as a subprocess, end to end (a fresh data dir with its
detector weights already cached, a fresh Ray, the benchmark's private Redis via ``--redis-url``; the
detector in the stream's worker, as ``runtime.model_host: auto`` puts it for one source), (c) the same
with ``LONGWATCH_RUNTIME__MODEL_HOST=pool`` (the detector in a Ray Serve pool, as before), (d) with
``LONGWATCH_DETECTION__GATE=false`` (the detector on every sampled frame), and (e) with
``LONGWATCH_DETECTION__ENGINE=opencv`` (the detector's network in OpenCV DNN instead of onnxruntime). Per run:
wall time, × real time, ffmpeg's wall / this wall, start-up (process start → first clip committed), the
stream worker's own wall time, teardown (last clip committed → exit), the run's wall time outside the
worker's (wall − worker), and detector frames per footage second and per sampled frame (the stream's
``detected_frames`` / ``sampled_frames``). Each variant's segments are compared with (b)'s.

CPU use is read from /proc (psutil): the whole machine's busy cores, and the CPU seconds of the
processes this benchmark started (Ray's, Redis, the RTSP server), grouped. The load average is
printed before and after each part: the machine may be shared. It prints figures and asserts
nothing; it exits 0 with a message where the footage folder is absent.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
# The project's packages first. bench/ itself must not be on the path (Python puts a script's folder
# there, and Ray hands the driver's script folder to every worker): bench/model.py would shadow model/.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402
from tests.rtsp_server import RtspServer, gi_rtsp_unavailable, gst_version  # noqa: E402

FOOTAGE = Path(os.environ.get("LONGWATCH_FOOTAGE", ROOT.parent / "shared" / "footage"))
PERSON = "one-by-one-person-detection.mp4"
MIXED = [PERSON, "car-detection.mp4", "vtest.avi", "bikes.mp4"]
WARMUP = "bikes.mp4"

TARGET_SPEED = 20.0  # × real time in total, on 2 cores
TARGET_STREAMS = 16  # live 720p30 streams (issue #12)
TARGET_LAG_S = 2.0  # the old, weaker criterion (status lag_s), still shown
TARGET_G2S_S = 3.0  # glass-to-segment p95 of a detector event (issue #12)
G2S_EVENT = "person_present"  # the detector event of the default events the footage is full of
STARTUP_CAP_S = 180.0  # the longest wait for every stream to run and commit before the warm-up starts anyway
G2S_TAIL_S = 6.0  # segments starting this close to the window's end may not be seen yet: not counted
TARGET_P99_MS = 5.0


# ------------------------------------------------------------------------------------------------
# small helpers


def bench_module(name: str):
    """A sibling benchmark script (``bench/<name>.py``) as a module, loaded by path under a private name."""
    import importlib.util

    key = f"_lw_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        spec.loader.exec_module(mod)
    return sys.modules[key]


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def fmt_x(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}×"


def pctl(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    import numpy as np

    return float(np.percentile(np.asarray(xs, dtype=float), q))


class CpuMeter:
    """CPU seconds over a window: the machine's busy time, and this process tree's, by group."""

    GROUPS = (
        ("ServeController", "ray/serve system"),
        ("StreamWorker", "stream workers"),
        ("ServeReplica", "model replica"),
        ("Controller", "controller"),
        ("redis-server", "redis"),
        ("rtsp_server", "rtsp server"),
    )

    def __init__(self):
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()

    def _group(self, p) -> str:
        if p.pid == self.me.pid:
            return "driver"
        try:
            text = " ".join(p.cmdline()) or p.name()
        except Exception:
            text = ""
        for key, name in self.GROUPS:
            if key in text:
                return name
        return "ray/serve system"

    def _snap(self) -> tuple[float, float, dict[int, tuple[str, float]]]:
        ps = self.psutil
        t = ps.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)
        procs = {}
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                ct = p.cpu_times()
                procs[p.pid] = (self._group(p), ct.user + ct.system)
            except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                pass
        return time.perf_counter(), busy, procs

    def start(self) -> CpuMeter:
        self.a = self._snap()
        return self

    def stop(self) -> dict:
        b = self._snap()
        wall = b[0] - self.a[0]
        groups: dict[str, float] = {}
        for pid, (g, cpu) in b[2].items():
            before = self.a[2].get(pid, (g, 0.0))[1]
            groups[g] = groups.get(g, 0.0) + max(0.0, cpu - before)
        return {
            "wall": wall,
            "machine_cores": (b[1] - self.a[1]) / wall if wall > 0 else 0.0,
            "ours_cores": sum(groups.values()) / wall if wall > 0 else 0.0,
            "groups_s": groups,
        }


def cpu_split(cpu: dict, keys=("stream workers", "model replica", "rtsp server", "redis")) -> str:
    g = cpu["groups_s"]
    w = cpu["wall"] or 1.0
    parts = [f"{k.split()[0]} {g.get(k, 0.0) / w:.2f}" for k in keys if g.get(k, 0.0) > 0.005 * w]
    rest = sum(v for k, v in g.items() if k not in keys)
    parts.append(f"other {rest / w:.2f}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------------
# part 1: files


def pool_stats(prefix: str) -> dict:
    from longwatch.actors.model_pool import handle

    try:
        return handle(prefix=prefix).stats.remote().result(timeout_s=10)
    except Exception:
        return {"batches": 0, "clips": 0}


def free_workers(rt, sids: list[str]) -> None:
    """The controller keeps finished/stopped stream actors; kill their idle processes (memory)."""
    import ray

    for sid in sids:
        try:
            ray.kill(rt.worker(sid), no_restart=True)
        except Exception:
            pass


def run_files(rt, label: str, items: list[tuple[str, Path]], say) -> dict:
    """Add every (stream id, file) at once, wait for all; footage / wall, per stream and in total."""
    sids = [sid for sid, _ in items]
    s0 = pool_stats(rt.settings.runtime.redis_prefix)
    meter = CpuMeter().start()
    t0 = time.perf_counter()
    for sid, path in items:
        rt.add(str(path), stream_id=sid)
    deadline = 900.0
    st = rt.wait(timeout=deadline, stream_ids=sids)
    wall = time.perf_counter() - t0
    cpu = meter.stop()
    s1 = pool_stats(rt.settings.runtime.redis_prefix)
    per = {sid: st.get(sid, {}) for sid in sids}
    bad = {sid: s for sid, s in per.items() if s.get("state") != "done"}
    if bad:
        rt.stop()
    footage = sum(float(s.get("footage_s") or 0.0) for s in per.values())
    speeds = [float(s["footage_s"]) / float(s["wall_s"]) for s in per.values() if float(s.get("wall_s") or 0) > 0]
    batches = s1["batches"] - s0["batches"]
    clips = s1["clips"] - s0["clips"]
    res = {
        "label": label,
        "streams": len(items),
        "footage_s": footage,
        "wall_s": wall,
        "total_x": footage / wall if wall > 0 else 0.0,
        "per_x": speeds,
        "cpu": cpu,
        "clips": sum(int(s.get("clips") or 0) for s in per.values()),
        "batch_mean": clips / batches if batches else 0.0,
        "errors": {sid: f"{s.get('state')}: {s.get('error')}" for sid, s in bad.items()},
        "per": {sid: (float(s.get("footage_s") or 0), float(s.get("wall_s") or 0)) for sid, s in per.items()},
        "load": loadavg(),
    }
    say(
        f"  {label}: {footage:.1f} s of footage in {wall:.1f} s = {res['total_x']:.1f}× total; per stream "
        + ", ".join(f"{sid} {f / w:.1f}×" if w else f"{sid} ?" for sid, (f, w) in res["per"].items())
        + f"; machine {cpu['machine_cores']:.2f} cores busy ({cpu_split(cpu)}); "
        f"{res['clips']} clips, {res['batch_mean']:.2f} clips/model batch; load {res['load']}"
        + (f"; FAILED {res['errors']}" if bad else "")
    )
    free_workers(rt, sids)
    return res


# ------------------------------------------------------------------------------------------------
# part 2: live RTSP


class SegmentWatch:
    """Glass-to-segment latency of one event on live streams: a thread follows the streams' live feeds
    (one blocking XREAD over every stream's feed, as ``longwatch follow`` and the API's SSE feed read
    them) and notes the wall time each segment (by id) is first seen: its ``open`` record, written in
    the same transaction as the segment itself. A segment's latency = first seen − the wall time of
    its start (its start in stream seconds + the stream's epoch: the PTS of its first frame mapped to
    wall time). Only segments that start inside ``[t0, t1]`` (wall, epoch s) count."""

    def __init__(self, store, sids: list[str], event: str):
        self.store, self.sids, self.event = store, sids, event
        self.seen: dict[str, tuple[float, str, float]] = {}  # seg id → (first seen wall s, stream, start)
        self.epochs: dict[str, float] = {}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="segment-watch", daemon=True)

    def start(self) -> SegmentWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        from longwatch.pipeline.feed import records_from

        last = {self.store.keys.feed(sid): "0-0" for sid in self.sids}  # each feed from its start
        owner = {self.store.keys.feed(sid): sid for sid in self.sids}
        while not self._halt.is_set():
            try:
                res = self.store.r.xread(last, count=500, block=500)
            except Exception:  # Redis busy: read again (the ids kept say where)
                time.sleep(0.2)
                continue
            t = time.time()
            for key, entries in res or []:
                key = key.decode() if isinstance(key, bytes) else key
                if entries:
                    last[key] = entries[-1][0]
                sid = owner[key]
                for rec in records_from(entries):
                    if rec.segment is None or rec.segment.event != self.event:
                        continue
                    self.seen.setdefault(rec.segment.id, (t, sid, float(rec.segment.start)))

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=10)

    def latencies(self, t0: float, t1: float) -> list[float]:
        for sid in {sid for _, sid, _ in self.seen.values()} - set(self.epochs):
            ep = self.store.epoch(sid)
            if ep is not None:
                self.epochs[sid] = ep.timestamp()
        out = []
        for first, sid, start in self.seen.values():
            ep = self.epochs.get(sid)
            if ep is not None and t0 <= ep + start <= t1:
                out.append(first - (ep + start))
        return out


def redis_status(store, sids: list[str]) -> dict[str, dict]:
    """Each stream's status from Redis, as the API reads it (no call reaches a worker): its meta hash
    (state, lag_s, dropped_clips …, which the worker writes at most every second after a clip and at every change of
    state) with ``clips`` and ``footage_s`` from its watermark, committed with every clip (the
    meta's own clip counter is kept as ``status_clips``: lag_s is new when it moves)."""
    pipe = store.r.pipeline(transaction=False)
    for sid in sids:
        pipe.hgetall(store.keys.meta(sid))
        pipe.hgetall(store.keys.wm(sid))
    res = pipe.execute()
    out = {}
    for i, sid in enumerate(sids):
        meta, wm = ({(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in (raw or {}).items()}
                    for raw in res[2 * i : 2 * i + 2])  # fmt: skip
        meta["status_clips"] = meta.get("clips")
        meta["clips"] = int(wm["clip_index"]) + 1 if wm.get("clip_index") is not None else 0
        if wm.get("footage_s") is not None:
            meta["footage_s"] = wm["footage_s"]
        out[sid] = meta
    return out


def rtsp_step(rt, server: RtspServer, n: int, warm_s: float, window_s: float, clip_s: float, store, say) -> dict:
    sids = [f"live{n}-{uuid.uuid4().hex[:4]}-cam{i}" for i in range(n)]
    rec = {
        sid: {
            "last": 0,
            "last_sc": 0,
            "lags": [],
            "ages": [],
            "states": set(),
            "drop0": None,
            "clips0": None,
            "epoch": None,
            "last_commit": None,
            "gap_max": 0.0,
        }
        for sid in sids
    }
    t_add = time.perf_counter()
    for i, sid in enumerate(sids):
        rt.add(server.urls[i], stream_id=sid)
    add_s = time.perf_counter() - t_add
    watch = SegmentWatch(store, sids, G2S_EVENT).start()
    status = functools.partial(redis_status, store, sids)
    # Start-up first: every stream running and committing (N worker processes start on 2 cores), then the
    # warm-up, then the window. The start-up time is a figure of its own.
    up_deadline = time.perf_counter() + STARTUP_CAP_S
    while time.perf_counter() < up_deadline:
        st = status()
        if all(st.get(sid, {}).get("state") == "running" and int(st[sid].get("clips") or 0) >= 1 for sid in sids):
            break
        time.sleep(0.5)
    up_s = time.perf_counter() - t_add
    warm_end = time.perf_counter() + warm_s
    win_end = warm_end + window_s
    win_wall = (time.time() + warm_s, time.time() + warm_s + window_s - G2S_TAIL_S)  # starts that count
    meter = None
    looks0: dict = {}
    last_st: dict = {}
    warm_lags: list[float] = []
    while True:
        now_p = time.perf_counter()
        if now_p >= win_end:
            break
        in_window = now_p >= warm_end
        if in_window and meter is None:
            meter = CpuMeter().start()
            looks0 = pool_stats(rt.settings.runtime.redis_prefix)
        st = status()
        now = datetime.now(UTC)
        last_st = st
        for sid in sids:
            s, r = st.get(sid, {}), rec[sid]
            clips = int(s.get("clips") or 0)
            drops = int(s.get("dropped_clips") or 0)
            if in_window:
                r["states"].add(s.get("state"))
                if r["drop0"] is None:
                    r["drop0"], r["clips0"] = drops, clips
            lag = s.get("lag_s")
            if in_window:  # longest wall time between two polls that saw the clip counter move
                if clips > r["last"] or r["last_commit"] is None:
                    if r["last_commit"] is not None:
                        r["gap_max"] = max(r["gap_max"], now_p - r["last_commit"])
                    r["last_commit"] = now_p
                else:
                    r["gap_max"] = max(r["gap_max"], now_p - r["last_commit"])
            fresh = int(s.get("status_clips") or 0) > r["last_sc"]  # the worker wrote its status anew
            r["last_sc"] = max(r["last_sc"], int(s.get("status_clips") or 0))
            if fresh and lag not in ("", None):
                (r["lags"] if in_window and r["clips0"] is not None and clips > r["clips0"] else warm_lags).append(
                    float(lag)
                )
            r["last"] = max(r["last"], clips)
            if in_window and clips > 0:
                if r["epoch"] is None:
                    r["epoch"] = store.epoch(sid)
                if r["epoch"] is not None and s.get("footage_s") not in ("", None):
                    r["ages"].append((now - r["epoch"]).total_seconds() - float(s["footage_s"]))
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - now_p)))
    cpu = meter.stop() if meter else None
    looks1 = pool_stats(rt.settings.runtime.redis_prefix)
    looks = (
        {k: (looks1.get(k, 0) - looks0.get(k, 0)) / (n * window_s) for k in ("frames", "crops", "clips")}
        if meter
        else {}
    )
    watch.stop()
    g2s = watch.latencies(*win_wall)
    t_stop = time.perf_counter()
    for sid in sids:  # this step's streams only: rt.stop() with no id closes the controller for good
        rt.stop(sid)
    stop_s = time.perf_counter() - t_stop
    final = rt.status()
    stopped = sum(1 for sid in sids if final.get(sid, {}).get("state") == "stopped")
    free_workers(rt, sids)
    lags = [x for r in rec.values() for x in r["lags"]]
    ages = [x for r in rec.values() for x in r["ages"]]
    # drops from the final status (the Redis one is up to 5 clips old): any drop while stopping counts too
    drops_win = sum(
        int(final.get(sid, last_st.get(sid, {})).get("dropped_clips") or 0) - (rec[sid]["drop0"] or 0) for sid in sids
    )
    drops_all = sum(int(final.get(sid, {}).get("dropped_clips") or 0) for sid in sids)
    expected = window_s / clip_s  # one clip (a decision window) per clip_s of live footage
    got = [int(last_st.get(sid, {}).get("clips") or 0) - (rec[sid]["clips0"] or 0) for sid in sids]
    all_running = all(r["states"] == {"running"} for r in rec.values())
    lag_max = max(lags) if lags else None
    g2s_p95 = pctl(g2s, 95)
    held = bool(
        all_running
        and g2s
        and g2s_p95 is not None
        and g2s_p95 <= TARGET_G2S_S
        and drops_win == 0
        and min(got) >= 0.9 * expected - 1
    )
    age_max = max(ages) if ages else None
    held_strict = bool(held and age_max is not None and age_max < TARGET_LAG_S)
    gap_max = max(r["gap_max"] for r in rec.values())
    why = []
    if not all_running:
        why.append(
            "a stream left 'running': "
            + ", ".join(
                f"{sid}={sorted(map(str, r['states']))} {final.get(sid, {}).get('error', '')}"
                for sid, r in rec.items()
                if r["states"] != {"running"}
            )[:300]
        )
    if not g2s:
        why.append(f"no {G2S_EVENT} segment started in the window")
    elif g2s_p95 is not None and g2s_p95 > TARGET_G2S_S:
        why.append(f"glass-to-segment p95 {g2s_p95:.2f} s")
    if drops_win:
        why.append(f"{drops_win} clips dropped")
    if got and min(got) < 0.9 * expected - 1:
        why.append(f"min {min(got)} clips of {expected:.0f}")
    res = {
        "n": n,
        "lag_p50": pctl(lags, 50),
        "lag_p90": pctl(lags, 90),
        "lag_max": lag_max,
        "g2s_p50": pctl(g2s, 50),
        "g2s_p95": g2s_p95,
        "g2s_max": max(g2s) if g2s else None,
        "g2s_n": len(g2s),
        "age_p50": pctl(ages, 50),
        "age_max": age_max,
        "held_strict": held_strict,
        "gap_max": gap_max,
        "drops_win": drops_win,
        "drops_all": drops_all,
        "clips_min": min(got) if got else 0,
        "clips_exp": expected,
        "cpu": cpu,
        "held": held,
        "why": "; ".join(why),
        "add_s": add_s,
        "up_s": up_s,
        "stop_s": stop_s,
        "stopped": stopped,
        "warm_lag_max": max(warm_lags) if warm_lags else None,
        "samples": len(lags),
        "load": loadavg(),
        "looks": looks,
    }
    f = lambda x: "—" if x is None else f"{x:.2f}"  # noqa: E731
    say(
        f"  N={n}: glass-to-segment ({G2S_EVENT}) p50 {f(res['g2s_p50'])} s, p95 {f(g2s_p95)} s, "
        f"max {f(res['g2s_max'])} s ({len(g2s)} segments); lag p50 {f(res['lag_p50'])} s, p90 {f(res['lag_p90'])} s, max {f(lag_max)} s ({len(lags)} clips); "
        f"data age p50 {f(res['age_p50'])} s, max {f(res['age_max'])} s; longest wait between commits {gap_max:.1f} s; dropped {drops_win} in window "
        f"({drops_all} in all); clips/stream min {res['clips_min']} of {expected:.1f}; "
        + (f"machine {cpu['machine_cores']:.2f} cores busy ({cpu_split(cpu)}); " if cpu else "")
        + (
            f"detector per camera-second: {looks['frames']:.2f} frames, {looks['crops']:.2f} crops, "
            f"{looks['clips']:.2f} clips; "
            if looks
            else ""
        )
        + f"all running and committing {up_s:.1f} s after the first add; stop {stop_s:.1f} s ({stopped}/{n} stopped); "
        f"load {res['load']} → " + ("HELD" if held else f"NOT held ({res['why']})")
    )
    return res


# ------------------------------------------------------------------------------------------------
# part 3: Redis


def redis_part(n_segments: int, queries: int, rounds: int, checks: int, say) -> dict:
    import numpy as np

    from longwatch.pipeline.redis_server import EmbeddedRedis
    from longwatch.pipeline.store import SegmentStore

    rq = bench_module("redis_query")
    EPOCH, make_table, pct, segments_of = rq.EPOCH, rq.make_table, rq.pct, rq.segments_of

    tmp = tempfile.mkdtemp(prefix="lwq-", dir="/tmp")
    server = EmbeddedRedis(tmp, reuse=False, appendonly=False, extra_args=["--save", ""]).start()
    store = SegmentStore.from_url(server.url, prefix="lwbench")
    try:
        version = store.r.info("server")["redis_version"]
        t = time.perf_counter()
        table = make_table(n_segments, 1, 4, 1)
        loaded = 0
        for (sid, ev), arr in table.items():
            loaded += store.bulk_load(sid, segments_of(sid, ev, arr), batch=5000, epoch=EPOCH)
        load_s = time.perf_counter() - t
        mem = int(store.r.info("memory")["used_memory"])
        horizon = max(float(a[:, 1].max()) for a in table.values())
        say(f"  loaded {loaded:,} segments in {load_s:.1f} s; Redis {version} uses {mem / 2**20:,.0f} MiB")
        rng = np.random.default_rng(2)
        streams = sorted({s for s, _ in table})
        events = sorted({e for _, e in table})

        def brute(sid, ev, t0, t1):
            hits = []
            for (s2, e2), arr in table.items():
                if s2 == sid and (ev is None or e2 == ev):
                    m = (arr[:, 1] >= t0) & (arr[:, 0] <= t1)
                    hits += [(float(a), float(b)) for a, b in arr[m]]
            return sorted(hits)

        for _ in range(200):  # warm-up
            t0 = float(rng.uniform(0, horizon))
            store.query(stream=streams[0], event=events[0], t0=t0, t1=t0 + 60)
        kinds = [(w, m) for w in (10.0, 60.0, 600.0) for m in ("one", "all")]
        lat = {k: [] for k in kinds}
        round_p99 = {k: [] for k in kinds}
        ks = {k: [] for k in kinds}
        mismatches = checked = 0
        for rnd in range(rounds):
            for kind in kinds:
                width, mode = kind
                this = []
                for i in range(queries):
                    sid = streams[int(rng.integers(len(streams)))]
                    ev = events[int(rng.integers(len(events)))] if mode == "one" else None
                    t0 = float(rng.uniform(0, horizon - width))
                    q0 = time.perf_counter()
                    got = store.query(stream=sid, event=ev, t0=t0, t1=t0 + width)
                    this.append((time.perf_counter() - q0) * 1000)
                    ks[kind].append(len(got))
                    if rnd == 0 and i < checks:
                        mismatches += sorted((s.start, s.end) for s in got) != brute(sid, ev, t0, t0 + width)
                        checked += 1
                lat[kind] += this
                round_p99[kind].append(pct(this, 99))
        rows = [
            (
                w,
                m,
                pct(lat[(w, m)], 50),
                pct(lat[(w, m)], 99),
                min(round_p99[(w, m)]),
                max(lat[(w, m)]),
                float(np.mean(ks[(w, m)])),
            )
            for w, m in kinds
        ]
        all_lat = [x for v in lat.values() for x in v]
        res = {
            "segments": loaded,
            "version": version,
            "load_s": load_s,
            "rows": rows,
            "checked": checked,
            "mismatches": mismatches,
            "p50": pct(all_lat, 50),
            "p99": pct(all_lat, 99),
            "worst_p99": max(r[3] for r in rows),
            "worst_best_p99": max(r[4] for r in rows),
            "queries": rounds * queries * len(kinds),
            "load": loadavg(),
        }
        for w, m, p50, p99, bp99, mx, mk in rows:
            say(
                f"  window {w:>4.0f} s, {'1 event ' if m == 'one' else 'all 4   '}: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                f"(best round {bp99:.2f}), max {mx:.2f} ms, mean {mk:.1f} segments returned"
            )
        say(
            f"  {checked} queries checked against a brute-force scan: "
            + ("all agree" if not mismatches else f"{mismatches} DISAGREE")
        )
        return res
    finally:
        store.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# --file-speed: one long file through `longwatch run` (the CLI, end to end) against ffmpeg's decode


def rotated_files(path: Path, n: int, gop_s: float) -> list[Path]:
    """``n`` copies of ``path``, copy k starting k/n of the way in and wrapping round to the start (the
    cut on a keyframe, ``gop_s`` apart; stream copy, cached next to it). Copy 0 is ``path`` itself."""
    ingest = bench_module("ingest")
    duration = float(ingest.probe(path)["duration"])
    out = [path]
    for k in range(1, n):
        cut = round(duration * k / n / gop_s) * gop_s
        rot = path.with_name(f"{path.stem}_from{cut:g}s.mp4")
        if not ingest.file_ok(rot, duration - 1):
            listing = rot.with_suffix(".txt")
            # ffmpeg's concat demuxer: the file from the cut to its end, then from its start to the cut.
            listing.write_text(f"file '{path.resolve()}'\ninpoint {cut}\nfile '{path.resolve()}'\noutpoint {cut}\n")
            tmp = rot.with_suffix(".tmp.mp4")
            ingest.run_quiet(
                [ingest.ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
                 "-i", str(listing), "-c", "copy", "-movflags", "+faststart", str(tmp)]
            )  # fmt: skip
            tmp.replace(rot)
            listing.unlink()
        out.append(rot)
    return out


def make_speed_file(seconds: int) -> Path | None:
    """``seconds`` of 1280x720 30 fps H.264 (GOP 60, 2 B-frames) looped from the person clip, cached in
    bench/out/; None where the footage or ffmpeg is absent."""
    src = FOOTAGE / PERSON
    if not src.is_file() or not shutil.which("ffmpeg"):
        return None
    out = BENCH / "out" / f"file_speed_1280x720p30_{seconds}s.mp4"
    ingest = bench_module("ingest")
    if ingest.file_ok(out, seconds):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    loops = int(seconds // 139.4)  # the person clip is 139.4 s long: -stream_loop 4 for 600 s
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(loops), "-i", str(src),
        "-t", str(seconds), "-vf", "scale=1280:720,fps=30", "-g", "60", "-bf", "2",
        "-c:v", "libx264", "-preset", "veryfast", str(tmp),
    ]  # fmt: skip
    print(f"making {out.name} ({seconds} s): {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    ingest.run_quiet(cmd)
    tmp.replace(out)
    print(f"  made in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def cli_run(path: Path, sid: str, env_extra: dict[str, str], redis_url: str, prefix: str) -> dict:
    """``longwatch run PATH --no-show`` as a subprocess, in a fresh data dir (its detector weights cache
    filled beforehand, as after any first run), on the benchmark's private Redis (``--redis-url``: the
    embedded Redis' own start/stop, ~0.1 s, is not in these times). The stream's watermark is polled
    every 50 ms to time the first and the last committed clip; its status gives the worker's figures."""
    from longwatch.model.weights import DetectorWeights
    from longwatch.pipeline.store import SegmentStore

    data_dir = tempfile.mkdtemp(prefix="lwfs-data-", dir="/tmp")
    weights = DetectorWeights.locate(data_dir)
    try:  # and onnxruntime's graph of them, which the first run builds and keeps
        from longwatch.model.detector import ONNX_CACHE_SUBDIR, YoloDetector

        YoloDetector(weights, cache_dir=Path(data_dir) / ONNX_CACHE_SUBDIR)
    except ImportError:  # a checkout from before the onnxruntime engine
        pass
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "LONGWATCH_RUNTIME__REDIS_PREFIX": prefix, **env_extra}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="lwfs-ray-", dir="/tmp")
    exe = Path(sys.executable).with_name("longwatch")
    cmd = [str(exe), "run", str(path), "--id", sid, "--data-dir", data_dir, "--redis-url", redis_url, "--no-show"]
    store = SegmentStore.from_url(redis_url, prefix=prefix)
    first = last = None
    last_idx = None
    log_path = Path(data_dir) / "run.log"  # a file, not a pipe: a pipe nobody reads would block the CLI
    t0 = time.perf_counter()
    with open(log_path, "w") as log_f:
        proc = subprocess.Popen(cmd, env=env, stdout=log_f, stderr=subprocess.STDOUT, text=True)
    try:
        while proc.poll() is None:
            wm = store.watermark(sid) or {}
            idx = wm.get("clip_index")
            if idx is not None and idx != last_idx:
                now = time.perf_counter() - t0
                first = now if first is None else first
                last, last_idx = now, idx
            time.sleep(0.05)
        total = time.perf_counter() - t0
        err = log_path.read_text(errors="replace")
        meta = store.meta(sid)
        segments = sorted((x.event, x.start, x.end) for x in store.query(stream=sid) if x.event != "scene_cut")
    finally:
        if proc.poll() is None:
            proc.kill()
        store.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    return {
        "cmd": shlex.join(cmd),
        "rc": proc.returncode,
        "err": err[-1500:] if proc.returncode else "",
        "total_s": total,
        "first_clip_s": first,
        "teardown_s": None if last is None else total - last,
        "meta": meta,
        "segments": segments,
    }


def compare_segments(a: list[tuple[str, float, float]], b: list[tuple[str, float, float]]) -> str:
    """How ``a`` (gated) matches ``b`` (ungated): per event, segments paired in order, the worst
    boundary difference; a differing count is reported as such."""
    out = []
    for ev in sorted({e for e, _, _ in a} | {e for e, _, _ in b}):
        sa, sb = [x for x in a if x[0] == ev], [x for x in b if x[0] == ev]
        if len(sa) != len(sb):
            out.append(f"{ev}: {len(sa)} vs {len(sb)} segments")
            continue
        worst = max((max(abs(x[1] - y[1]), abs(x[2] - y[2])) for x, y in zip(sa, sb)), default=0.0)
        out.append(f"{ev}: {len(sa)} segments, worst boundary difference {worst:.2f} s")
    return "; ".join(out) or "no segments"


def file_speed(quick: bool, console, say) -> int:
    """The ``--file-speed`` section (see the module docstring's "File speed")."""
    from rich.table import Table

    seconds = 120 if quick else 600
    if not (FOOTAGE / PERSON).is_file():
        say(f"--file-speed: {FOOTAGE / PERSON} is absent (the team's shared footage): nothing measured")
        return 0
    if not shutil.which("ffmpeg"):
        say("--file-speed: ffmpeg not found: nothing measured")
        return 0
    from longwatch.pipeline.config import Settings
    from longwatch.pipeline.redis_server import EmbeddedRedis

    path = make_speed_file(seconds)
    console.print(
        f"[bold]file speed[/]: {path.name} ({seconds} s of 1280x720 30 fps H.264) — load average {loadavg()} "
        f"on {os.cpu_count()} CPUs"
    )
    rows: list[tuple[str, dict]] = []
    t = time.perf_counter()
    dec = subprocess.run(
        ["ffmpeg", "-hide_banner", "-threads", "2", "-i", str(path), "-f", "null", "-"], capture_output=True
    )
    ff_wall = time.perf_counter() - t
    say(f"  (a) ffmpeg -threads 2 decode only: {ff_wall:.1f} s (rc {dec.returncode}); load {loadavg()}")
    gate_ok = "gate" in type(Settings().detection).model_fields
    redis_dir = tempfile.mkdtemp(prefix="lwfs-redis-", dir="/tmp")
    srv = EmbeddedRedis(redis_dir, reuse=False).start()
    notes = []
    try:
        # (label, env, what its segments are compared as, against the default's)
        variants: list[tuple[str, dict[str, str], str]] = [("longwatch run (gate on, default)", {}, "")]
        runtime_fields = type(Settings().runtime).model_fields
        if "model_host" in runtime_fields:
            variants.append(
                (
                    "longwatch run, LONGWATCH_RUNTIME__MODEL_HOST=pool",
                    {"LONGWATCH_RUNTIME__MODEL_HOST": "pool"},
                    "detector in the worker vs in a Serve pool",
                )
            )
        if gate_ok:
            variants.append(
                (
                    "longwatch run, LONGWATCH_DETECTION__GATE=false",
                    {"LONGWATCH_DETECTION__GATE": "false"},
                    "gated vs ungated",
                )
            )
        else:
            notes.append("(ungated run) skipped: the settings have no detection.gate (LONGWATCH_DETECTION__GATE)")
        if "engine" in type(Settings().detection).model_fields:
            variants.append(
                (
                    "longwatch run, LONGWATCH_DETECTION__ENGINE=opencv",
                    {"LONGWATCH_DETECTION__ENGINE": "opencv"},
                    "onnxruntime vs opencv",
                )
            )
        for i, (label, extra, _compared) in enumerate(variants):
            r = cli_run(path, f"fs{i}", extra, srv.url, f"fs{uuid.uuid4().hex[:6]}")
            rows.append((label, r))
            say(f"  ({'bcdef'[i]}) {label}: {r['total_s']:.1f} s (rc {r['rc']}); load {loadavg()}")
            if r["rc"]:
                say("      " + " ".join(r["err"].split())[-600:])
    finally:
        srv.close()
        shutil.rmtree(redis_dir, ignore_errors=True)

    table = Table(title=f"file speed: {path.name}", pad_edge=False)
    for col in (
        "run",
        "wall s",
        "× real time",
        "ffmpeg/this",
        "start-up s",
        "worker s",
        "teardown s",
        "wall − worker s",
        "detected/footage s",
        "detected/sampled",
    ):
        table.add_column(col, justify="left" if col == "run" else "right")
    table.add_row(
        "ffmpeg -threads 2 -f null (decode only)",
        f"{ff_wall:.1f}",
        fmt_x(seconds / ff_wall),
        "1.00",
        "",
        "",
        "",
        "",
        "",
        "",
    )
    for label, r in rows:
        m = r["meta"]
        footage = float(m.get("footage_s") or seconds)
        det, smp = m.get("detected_frames"), m.get("sampled_frames")
        table.add_row(
            label,
            f"{r['total_s']:.1f}",
            fmt_x(footage / r["total_s"]),
            f"{ff_wall / r['total_s']:.2f}",
            "—" if r["first_clip_s"] is None else f"{r['first_clip_s']:.1f}",
            f"{float(m.get('wall_s') or 0):.1f}",
            "—" if r["teardown_s"] is None else f"{r['teardown_s']:.1f}",
            f"{r['total_s'] - float(m.get('wall_s') or 0):.1f}",
            "—" if det in (None, "") else f"{int(det) / footage:.2f}",
            "—" if det in (None, "") or not smp else f"{int(det) / int(smp):.2f}",
        )
    console.print(table)
    say(
        "  start-up s: process start → first clip committed (includes the first clip's own work); worker s: the "
        "stream worker's wall clock (status wall_s); teardown s: last clip committed → process exit (watermark "
        "polled every 50 ms); wall − worker s: the run's time outside the stream worker's own (start-up "
        "before its first frame, teardown after its last commit)."
    )
    for n in notes:
        say("  " + n)
    for (_label, r), (_l, _e, compared) in zip(rows[1:], variants[1:]):
        say(f"  segments, {compared}: " + compare_segments(rows[0][1]["segments"], r["segments"]))
    for label, r in rows:
        say(f"  {label}: {r['cmd']}")
    console.print(f"[bold]machine[/] {machine()}   load average at the end {loadavg()}")
    return 0


def versions() -> str:
    import av
    import cv2
    import numpy
    import ray
    import redis as redis_py

    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "no hiredis"
    libav = ".".join(str(x) for x in av.library_versions.get("libavcodec", ()))
    try:
        ff = (
            subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True)
            .stdout.splitlines()[0]
            .split(" Copyright")[0]
        )
    except Exception:
        ff = "ffmpeg ?"
    try:
        rs = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    except Exception:
        rs = "?"
    return (
        f"Python {platform.python_version()}, ray {ray.__version__}, numpy {numpy.__version__}, "
        f"PyAV {av.__version__} (libavcodec {libav}), OpenCV {cv2.__version__}, redis-py {redis_py.__version__} "
        f"({parser}), redis-server {rs}, {ff}, {gst_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 file, N ≤ 4 cameras, 100k segments")
    ap.add_argument(
        "--max-streams", type=int, default=None, help="largest N for the RTSP sweep (default 16; --quick 4)"
    )
    ap.add_argument(
        "--window", type=float, default=None, help="RTSP measuring window per step, s (default 30; --quick 15)"
    )
    ap.add_argument(
        "--warmup", type=float, default=None, help="RTSP settle time before the window, s (default 8; --quick 6)"
    )
    ap.add_argument(
        "--segments", type=int, default=None, help="segments for the Redis query part (default 1M; --quick 100k)"
    )
    ap.add_argument("--sweep-all", action="store_true", help="RTSP: run every N even after a step does not hold")
    ap.add_argument(
        "--streams", default=None, help="RTSP: the Ns to try, comma-separated (default 2,4,8,12,16 up to --max-streams)"
    )
    ap.add_argument(
        "--in-step",
        action="store_true",
        help="RTSP: every camera serves the file from its start (default: camera k from k/N of the way in)",
    )
    ap.add_argument("--skip", action="append", default=[], choices=["files", "rtsp", "redis"], help="skip a part")
    ap.add_argument(
        "--file-speed",
        action="store_true",
        help="only the file-speed section: a 10-min 720p30 file (--quick: 2 min) through `longwatch run` vs ffmpeg",
    )
    args = ap.parse_args(argv)
    quick = args.quick
    max_n = args.max_streams or (4 if quick else 16)
    if args.streams:
        max_n = max(max_n, *(int(x) for x in args.streams.split(",") if x.strip()))
    window_s = args.window or (15.0 if quick else 30.0)
    warm_s = args.warmup or (6.0 if quick else 8.0)
    n_segments = args.segments or (100_000 if quick else 1_000_000)
    command = shlex.join(
        [
            ".venv/bin/python" if ".venv" in sys.executable else Path(sys.executable).name,
            "bench/e2e.py",
            *(argv if argv is not None else sys.argv[1:]),
        ]
    )

    if args.file_speed:
        from rich.console import Console

        console = Console(highlight=False, width=max(170, shutil.get_terminal_size((170, 40)).columns))
        rc = file_speed(args.quick, console, lambda s: console.print(s, markup=False))
        console.print(f"[bold]command[/] {command}")
        return rc

    if not FOOTAGE.is_dir() or not all((FOOTAGE / f).is_file() for f in MIXED):
        print(
            f"bench/e2e.py: the shared footage is not at {FOOTAGE} (it lives in the team's shared/ folder, not in "
            "the repo; set LONGWATCH_FOOTAGE to point elsewhere): nothing measured."
        )
        return 0

    # A private Ray: its own temp dir (short path: Unix socket names are limited), no auth, Linux only.
    ray_tmp = tempfile.mkdtemp(prefix="lwe2e-", dir="/tmp")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_TMPDIR"] = ray_tmp
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("REDIS_URL", None)

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=max(170, shutil.get_terminal_size((170, 40)).columns))
    say = lambda s: console.print(s, markup=False)  # noqa: E731
    ingest = bench_module("ingest")
    ffmpeg_bin, make_short = ingest.ffmpeg_bin, ingest.make_short

    gi_reason = gi_rtsp_unavailable()
    load_start = loadavg()
    console.print(
        f"[bold]longwatch end-to-end benchmark[/] ({'quick' if quick else 'full'}) — load average at start "
        f"{load_start} on {os.cpu_count()} CPUs"
    )
    hd_s = 60 if quick else 240
    hd = None
    if ffmpeg_bin():
        hd = make_short(hd_s)
    else:
        say("ffmpeg not found: the 720p30 rows and the RTSP part are skipped")

    import ray

    from longwatch.actors.runtime import Runtime
    from longwatch.pipeline.config import RuntimeConfig, SamplerConfig, Settings
    from longwatch.pipeline.redis_server import EmbeddedRedis
    from longwatch.pipeline.store import SegmentStore

    data_dir = tempfile.mkdtemp(prefix="lwe2e-data-", dir="/tmp")
    redis_dir = tempfile.mkdtemp(prefix="lwe2e-redis-", dir="/tmp")
    redis_srv = None
    rt = None
    mserver = None
    startup: dict[str, float] = {}
    files: list[dict] = []
    steps: list[dict] = []
    rq: dict | None = None
    notes: list[str] = []
    t_all = time.perf_counter()
    try:
        redis_srv = EmbeddedRedis(redis_dir, reuse=False).start()

        def settings(prefix: str, sampler: SamplerConfig | None = None) -> Settings:
            rc = RuntimeConfig(redis_url=redis_srv.url, data_dir=data_dir, redis_prefix=prefix)
            return Settings(runtime=rc, sampler=sampler or SamplerConfig())

        t = time.perf_counter()
        from longwatch.actors.runtime import _lean_head

        with _lean_head():  # the local Ray that `longwatch run` and `serve` start (runtime.ray_lean)
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                namespace="longwatch",
                _temp_dir=ray_tmp,
                log_to_driver=False,
                logging_config=ray.LoggingConfig(log_level="WARNING"),
            )
        startup["ray.init"] = time.perf_counter() - t

        # ---- part 1: files ------------------------------------------------------------------------
        if "files" not in args.skip:
            console.print(
                "\n[bold]1. files through the whole runtime[/] (CPU detector, default events, dynamic 0.5–2 fps)"
            )
            t = time.perf_counter()
            rt = Runtime(settings(f"e2e{uuid.uuid4().hex[:6]}")).start()
            startup["Runtime.start (Serve, model replica, controller)"] = time.perf_counter() - t
            t = time.perf_counter()
            rt.add(str(FOOTAGE / WARMUP), stream_id="warmup")
            w = rt.wait(timeout=300, stream_ids=["warmup"]).get("warmup", {})
            startup[
                f"first file ({WARMUP}, {float(w.get('footage_s') or 0):.0f} s: first actor + detector warm-up)"
            ] = time.perf_counter() - t
            free_workers(rt, ["warmup"])
            say("  start-up: " + "; ".join(f"{k} {v:.1f} s" for k, v in startup.items()) + f"; load {loadavg()}")
            tag = uuid.uuid4().hex[:4]
            runs = [("1 file: person clip", [(f"p1-{tag}", FOOTAGE / PERSON)])]
            if not quick:
                runs += [
                    (
                        "4 files: person, car, vtest, bikes",
                        [(f"m4-{tag}-{Path(f).stem[:8]}", FOOTAGE / f) for f in MIXED],
                    ),
                    ("4 streams of the person clip", [(f"p4-{tag}-{i}", FOOTAGE / PERSON) for i in range(4)]),
                ]
            if hd is not None:
                runs.append((f"1 file: 720p30 ({hd_s} s)", [(f"hd1-{tag}", hd)]))
                if not quick:
                    runs.append(("4 streams of the 720p30 file", [(f"hd4-{tag}-{i}", hd) for i in range(4)]))
            for label, items in runs:
                files.append(run_files(rt, label, items, say))
            rt.close(shutdown_ray=False)
            rt = None

        # ---- part 2: live RTSP --------------------------------------------------------------------
        if "rtsp" not in args.skip:
            live_window = Settings().detection.live_window_s
            console.print(
                f"\n[bold]2. live 720p30 RTSP streams[/] (the default settings: dynamic 0.5–2 fps, {live_window:g}-s "
                f"live decision windows, motion gate; warm-up {warm_s:.0f} s, window {window_s:.0f} s per step)"
            )
            if gi_reason or hd is None:
                notes.append(f"RTSP part skipped: {gi_reason or 'no 720p30 file (ffmpeg missing)'}")
                say("  " + notes[-1])
            else:
                cams = [f"/cam{i}" for i in range(max_n)]
                videos = [hd] * max_n if args.in_step else rotated_files(hd, max_n, ingest.GOP / ingest.FPS)
                mserver = RtspServer(hd, mount=cams, videos=videos, skip_if_unavailable=False).start()
                say(
                    f"  RTSP server: {mserver.urls[0]} … {cams[-1]} serving {hd.name} (one process), "
                    + (
                        "every camera from the file's start (--in-step)"
                        if args.in_step
                        else f"camera k from {hd_s / max_n:.0f}·k s in (keyframe-aligned, wrapping round)"
                    )
                )
                t = time.perf_counter()
                rt = Runtime(settings(f"e2e{uuid.uuid4().hex[:6]}")).start()
                clip_s = float(rt.settings.detection.live_window_s or rt.settings.sampler.clip_seconds)
                startup["Runtime.start for the RTSP part"] = time.perf_counter() - t
                store = SegmentStore.from_url(redis_srv.url, prefix=rt.settings.runtime.redis_prefix)
                if args.streams:
                    ns = sorted({int(x) for x in args.streams.split(",") if x.strip()})
                else:
                    ns = [n for n in (2, 4, 8, 12, 16) if n <= max_n]
                    if max_n not in ns:
                        ns.append(max_n)
                try:
                    for n in ns:
                        res = rtsp_step(rt, mserver, n, warm_s, window_s, clip_s, store, say)
                        steps.append(res)
                        if not res["held"] and not args.sweep_all:
                            break
                        time.sleep(2.0)
                finally:
                    store.close()
                rt.close(shutdown_ray=False)
                rt = None
                mserver.stop()
                mserver = None

        # ---- part 3: Redis ------------------------------------------------------------------------
        if "redis" not in args.skip:
            console.print(
                f"\n[bold]3. Redis overlap query at {n_segments:,} segments[/] (bench/redis_query.py's data, "
                "1 stream × 4 events, private redis-server, no persistence)"
            )
            q = 500 if quick else 1000
            rq = redis_part(n_segments, q, 3 if not quick else 2, 20, say)
    finally:
        if rt is not None:
            try:
                rt.close(shutdown_ray=False)
            except Exception:
                pass
        if mserver is not None:
            mserver.stop()
        if ray.is_initialized():
            try:
                from ray import serve

                serve.shutdown()
            except Exception:
                pass
            ray.shutdown()
        if redis_srv is not None:
            redis_srv.stop()
        for d in (data_dir, redis_dir, ray_tmp):
            shutil.rmtree(d, ignore_errors=True)

    # ---- summary ------------------------------------------------------------------------------
    console.print()
    t1 = Table(title="1. files: footage seconds per wall second (start-up excluded)", title_justify="left")
    for col in (
        "run",
        "streams",
        "footage s",
        "wall s",
        "total ×",
        "per stream ×",
        "busy cores (ours: workers/model/other)",
        "load",
    ):
        t1.add_column(col, justify="left" if col in ("run", "load") else "right")
    for r in files:
        c = r["cpu"]
        g = c["groups_s"]
        wk, md = g.get("stream workers", 0.0) / c["wall"], g.get("model replica", 0.0) / c["wall"]
        t1.add_row(
            r["label"],
            str(r["streams"]),
            f"{r['footage_s']:.0f}",
            f"{r['wall_s']:.1f}",
            fmt_x(r["total_x"]),
            ", ".join(f"{x:.1f}" for x in r["per_x"]) + ("  FAILED" if r["errors"] else ""),
            f"{c['machine_cores']:.2f} ({wk:.2f}/{md:.2f}/{c['ours_cores'] - wk - md:.2f})",
            r["load"],
        )
    if files:
        console.print(t1)
        console.print(
            "start-up (once, not in the figures above): " + "; ".join(f"{k} {v:.1f} s" for k, v in startup.items())
        )
    if steps:
        t2 = Table(
            title=f"2. live 720p30 RTSP, default settings, cameras {'in step' if args.in_step else 'staggered'} "
            f"(glass-to-segment of {G2S_EVENT}; lag = status lag_s)",
            title_justify="left",
        )
        for col in (
            "N",
            "g2s p50 s",
            "g2s p95 s",
            "g2s max s (n)",
            "lag p50 s",
            "lag max s",
            "age p50 s",
            "age max s",
            "max commit gap s",
            "dropped",
            "clips/stream (min/exp)",
            "busy cores (ours: workers/model/rtsp/other)",
            "CPU % / stream",
            "up s",
            "stop s",
            "held",
            "age < 2 s",
            "load",
        ):
            t2.add_column(col, justify="right")
        for s in steps:
            c = s["cpu"]
            f = lambda x: "—" if x is None else f"{x:.2f}"  # noqa: E731
            if c:
                g = c["groups_s"]
                parts = [g.get(k, 0.0) / c["wall"] for k in ("stream workers", "model replica", "rtsp server")]
                cores = f"{c['machine_cores']:.2f} ({'/'.join(f'{p:.2f}' for p in parts)}/{c['ours_cores'] - sum(parts):.2f})"
            else:
                cores = "—"
            t2.add_row(
                str(s["n"]),
                f(s["g2s_p50"]),
                f(s["g2s_p95"]),
                f"{f(s['g2s_max'])} ({s['g2s_n']})",
                f(s["lag_p50"]),
                f(s["lag_max"]),
                f(s["age_p50"]),
                f(s["age_max"]),
                f"{s['gap_max']:.1f}",
                f"{s['drops_win']} ({s['drops_all']})",
                f"{s['clips_min']}/{s['clips_exp']:.1f}",
                cores,
                f"{100 * (c['ours_cores'] - c['groups_s'].get('rtsp server', 0.0) / c['wall']) / s['n']:.1f}"
                if c
                else "—",
                f"{s['up_s']:.1f}",
                f"{s['stop_s']:.1f}",
                "yes" if s["held"] else "NO",
                "yes" if s["held_strict"] else "no",
                s["load"],
            )
        console.print(t2)
        console.print(
            f"g2s (glass-to-segment) = the wall time a {G2S_EVENT} segment's open record arrives on its live feed "
            "(a blocking XREAD; written with the segment) − the wall time of its start (its start in stream seconds + the stream's epoch: its "
            f"first frame's PTS on the wall clock), for segments starting in the window (not its last {G2S_TAIL_S:.0f} "
            "s). lag = the stream's status lag_s in Redis (now − the end of the clip just committed), "
            "read each time its worker wrote its status anew (at most every second). age = now − end of the newest committed clip "
            "(its watermark) at each poll. "
            f"held: every stream running, g2s p95 ≤ {TARGET_G2S_S:.0f} s, no drop, ≥ 90 % of the expected clips "
            f"(window / the {clip_s:g}-s decision window). age < 2 s: the older, stricter-on-staleness criterion. dropped: "
            "in the window (whole step). CPU % / stream = all of longwatch's processes (workers, model replica, Ray, "
            "Redis; not the RTSP server) / N. up s = the first add → every stream running and committing (N "
            "worker processes starting on this machine). Measured after that and a warm-up; the RTSP server is one "
            "GStreamer process."
        )
    if rq:
        t3 = Table(title=f"3. Redis overlap query, {rq['segments']:,} segments", title_justify="left")
        for col in ("window", "events", "p50 ms", "p99 ms", "best-round p99 ms", "max ms", "mean k"):
            t3.add_column(col, justify="right")
        for w, m, p50, p99, bp99, mx, mk in rq["rows"]:
            t3.add_row(
                f"{w:.0f} s",
                "1" if m == "one" else "all 4",
                f"{p50:.2f}",
                f"{p99:.2f}",
                f"{bp99:.2f}",
                f"{mx:.2f}",
                f"{mk:.1f}",
            )
        console.print(t3)

    summ = Table(title="summary", title_justify="left")
    for col in ("figure", "result", "target", "met"):
        summ.add_column(col)
    for r in files:
        tgt = f"≥ {TARGET_SPEED:.0f}× total" if r["streams"] == 4 else ""
        met = ("yes" if r["total_x"] >= TARGET_SPEED else "NO") if r["streams"] == 4 else ""
        summ.add_row(
            f"× real time, {r['label']}",
            f"{r['total_x']:.1f}× total ({min(r['per_x']):.1f}–{max(r['per_x']):.1f}× per stream)"
            if r["per_x"]
            else "failed",
            tgt,
            met,
        )
    if steps:
        held = [s["n"] for s in steps if s["held"]]
        best = max(held) if held else 0
        last = steps[-1]
        more = "" if not last["held"] else f" (sweep ended at N={last['n']} without a failure)"
        summ.add_row(
            f"live 720p30 RTSP streams held, glass-to-segment p95 ≤ {TARGET_G2S_S:.0f} s",
            f"{best}{more}",
            f"≥ {TARGET_STREAMS}",
            "yes" if best >= TARGET_STREAMS else ("NO" if not quick else "n/a (--quick)"),
        )
        strict = [s["n"] for s in steps if s["held_strict"]]
        summ.add_row("  … and data age < 2 s at every poll (stricter)", str(max(strict) if strict else 0), "", "")
    if rq:
        summ.add_row(
            f"Redis overlap query at {rq['segments']:,} segments",
            f"p50 {rq['p50']:.2f} ms, p99 {rq['p99']:.2f} ms (worst kind {rq['worst_p99']:.2f}, "
            f"worst best-round {rq['worst_best_p99']:.2f})" + ("" if not rq["mismatches"] else " WRONG RESULTS"),
            f"p99 ≤ {TARGET_P99_MS:.0f} ms",
            "yes" if rq["p99"] <= TARGET_P99_MS and not rq["mismatches"] else "NO",
        )
    console.print(summ)
    for n in notes:
        console.print(n)
    console.print(f"[bold]command[/] {command}   ({time.perf_counter() - t_all:.0f} s)")
    console.print(f"[bold]machine[/] {machine()}")
    console.print(f"[bold]versions[/] {versions()}")
    console.print(
        f"[bold]load average[/] at start {load_start}, at end {loadavg()} (1/5/15 min; the machine may be shared)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
