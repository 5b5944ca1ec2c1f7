"""The always-on service, driven as a user drives it: `longwatch serve` in a subprocess (real Ray, the
embedded real Redis, real uvicorn), `longwatch add` from "another terminal", a real RTSP camera on
127.0.0.1, and the serve process killed (SIGKILL) and stopped (SIGTERM) mid-file.

Must show: with no new command, the restarted service continues every stream; the files' final
segments equal an uninterrupted run's (ids, times; nothing lost or duplicated); the camera's stream
seconds only grow, its earlier segments are unchanged, each outage is a recorded gap; after SIGTERM
no process of the service is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from conftest import FOOTAGE
from waiting import free_port, processes_mentioning, until

from longwatch.client import Client
from longwatch.pipeline.identity import default_stream_id

ROOT = Path(__file__).resolve().parents[1]
LONGWATCH = [sys.executable, "-m", "longwatch.cli"]
GAP = "gap"


def _env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS", "LONGWATCH_URL")}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_TMPDIR=tempfile.mkdtemp(prefix="lwsv-", dir="/tmp"),
        LONGWATCH_RUNTIME__DATA_DIR=str(tmp_path / "data"),
        # Every frame at 2 fps through the detector: slow enough to stop the service mid-file.
        LONGWATCH_SAMPLER__MIN_FPS="2",
        LONGWATCH_SAMPLER__MAX_FPS="2",
        LONGWATCH_RUNTIME__HEARTBEAT_S="1",
        LONGWATCH_MEDIA_ROOTS=str(tmp_path.parent),  # the files it adds: this test's folder, the session's clips
    )
    return env


class Service:
    """`longwatch serve` as a subprocess, with the API's base URL."""

    def __init__(self, env: dict[str, str], port: int, log: Path):
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout_s: float = 180) -> Service:
        out = self.log.open("a")
        self.proc = subprocess.Popen(
            LONGWATCH + ["serve", "--port", str(self.port)], env=self.env, stdout=out, stderr=out, cwd=ROOT
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"serve did not become ready: {self.log.read_text()[-3000:]}")

    def streams(self) -> dict[str, dict]:
        return {s["id"]: s for s in httpx.get(f"{self.url}/api/v1/streams", timeout=30).json()}

    def segments(self, stream: str) -> list[dict]:
        return list(Client(self.url).events(stream=stream))

    def kill(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=120)


def _cli(env, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(LONGWATCH + list(args), env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _nothing_left(needles: tuple[str, ...], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := processes_mentioning(*needles)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], left


def _key(seg: dict) -> tuple:
    return (seg["id"], seg["event"], seg["start_s"], seg["end_s"], seg["state"])


@pytest.fixture(scope="module")
def clips(tmp_path_factory, demo_clip):
    """Two files with the same name in two folders, and a longer clip for the camera. The team's
    footage where present; else clips made from the demo's bikes.mp4 (fetched by the project)."""
    out = tmp_path_factory.mktemp("service-clips")
    (out / "a").mkdir()
    (out / "b").mkdir()
    person, car = FOOTAGE / "one-by-one-person-detection.mp4", FOOTAGE / "car-detection.mp4"
    if person.is_file() and car.is_file():
        shutil.copy(person, out / "a" / "cam.mp4")
        shutil.copy(car, out / "b" / "cam.mp4")
        camera = person
    else:  # bikes.mp4 (10 s) repeated: 80 s, 30 s and 150 s of street scenes
        for name, times in (("a/cam.mp4", 8), ("b/cam.mp4", 3), ("camera.mp4", 15)):
            listing = out / f"{name.replace('/', '_')}.txt"
            listing.write_text(f"file '{demo_clip}'\n" * times)
            subprocess.run(
                [
                    "ffmpeg",
                    "-v",
                    "error",
                    "-f",
                    "concat",
                    "-safe",
                    "0",
                    "-i",
                    str(listing),
                    "-c",
                    "copy",
                    str(out / name),
                ],
                check=True,
                timeout=60,
            )
        camera = out / "camera.mp4"
    return out / "a" / "cam.mp4", out / "b" / "cam.mp4", camera


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory) -> dict[str, list[tuple]]:
    """The two files' segments from an uninterrupted one-shot `run` (the same ids: ids come from the
    paths), with the drills' sampler settings."""
    tmp = tmp_path_factory.mktemp("reference")
    env = _env(tmp, 0)
    ids = [default_stream_id(str(p)) for p in clips[:2]]
    ref = _cli(env, "run", str(clips[0]), str(clips[1]), "--no-show", timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = {}
    for sid in ids:
        q = _cli(env, "query", "--stream", sid, "--json")
        out[sid] = sorted(_key(json.loads(line)) for line in q.stdout.splitlines())
    assert sum(len(v) for v in out.values()) >= 4, out
    return out


@pytest.mark.rtsp
@pytest.mark.timeout(900)
def test_serve_survives_sigkill_and_sigterm_mid_file_and_leaves_nothing(tmp_path, clips, reference):
    from rtsp_server import RtspServer

    file_a, file_b = clips[0], clips[1]
    ids = [default_stream_id(str(file_a)), default_stream_id(str(file_b))]
    assert ids[0] != ids[1] and ids[0].startswith("cam-") and ids[1].startswith("cam-")
    port = free_port()
    env = _env(tmp_path, port)
    needles = (env["RAY_TMPDIR"], env["LONGWATCH_RUNTIME__DATA_DIR"])

    log = tmp_path / "serve.log"
    with RtspServer(clips[2], mount="/cam") as cam:
        svc = Service(env, port, log).start()
        # From "another terminal", no flags: the service is found through its data dir. The camera
        # first (short clips, so it has footage soon), then the two files.
        out = _cli(env, "add", cam.url, "--id", "cam", "--sampler", "clip_seconds=2")
        assert out.returncode == 0, out.stderr
        until(lambda: float(svc.streams().get("cam", {}).get("footage_s") or 0) >= 4, 120)
        for path in (file_a, file_b):
            out = _cli(env, "add", str(path))
            assert out.returncode == 0, out.stderr

        # 1. SIGKILL mid-file: once the long file is under way.
        def under_way():
            st = svc.streams()
            return float(st.get(ids[0], {}).get("footage_s") or 0) >= 20 and st

        before = until(under_way, 240)
        assert before[ids[0]]["state"] == "running", before[ids[0]]
        cam_before = {s["id"]: s for s in svc.segments("cam") if s["state"] == "closed"}
        svc.kill(signal.SIGKILL)
        # The reaper takes Ray's processes (workers included) down with the serve process.
        _nothing_left((env["RAY_TMPDIR"],))

        # 2. Started again, no other command: every stream continues.
        svc.start()
        progressed = until(
            lambda: (
                (st := svc.streams())
                and float(st[ids[0]].get("footage_s") or 0) > float(before[ids[0]]["footage_s"])
                and st
            ),
            240,
        )
        assert progressed[ids[0]]["desired"] == "running"
        # 3. SIGTERM mid-file (what systemd sends): a clean stop, nothing of the service left.
        if progressed[ids[0]]["state"] != "done":
            svc.kill(signal.SIGTERM)
            assert svc.proc.returncode == 0, log.read_text()[-3000:]
            _nothing_left(needles)
            svc.start()
        done = until(lambda: (st := svc.streams()) and all(st[s]["state"] == "done" for s in ids) and st, 400)
        for sid in ids:
            got = sorted(_key(s) for s in svc.segments(sid))
            assert got == reference[sid], (sid, got, reference[sid])
            assert len({k[0] for k in got}) == len(got)  # no duplicates
        assert done["cam"]["desired"] == "running"
        until(lambda: svc.streams()["cam"]["state"] == "running", 90)  # reconnected after the restarts
        cam_after = until(
            lambda: (segs := svc.segments("cam")) and len([s for s in segs if s["event"] == GAP]) >= 1 and segs, 60
        )
        # Removing the camera stops it and closes what it had open; its segments stay.
        out = _cli(env, "remove", "cam")
        assert out.returncode == 0, out.stderr
        until(lambda: "cam" not in svc.streams() or svc.streams()["cam"]["state"] == "removed", 60)
        kept = svc.segments("cam")
        assert kept and all(s["state"] == "closed" for s in kept), [s for s in kept if s["state"] != "closed"]
        svc.kill(signal.SIGTERM)
        assert svc.proc.returncode == 0

    after = {s["id"]: s for s in cam_after}
    for sid, seg in cam_before.items():  # earlier camera segments unchanged
        assert sid in after and _key(after[sid]) == _key(seg), (seg, after.get(sid))
    gaps = sorted((s for s in cam_after if s["event"] == GAP), key=lambda s: s["start_s"])
    first_gap = gaps[0]
    assert first_gap["start_s"] >= float(before["cam"]["footage_s"]) - 0.01
    assert first_gap["end_s"] > first_gap["start_s"]
    # No event segment spans an outage; stream seconds only grow (every gap ends before what follows).
    for gap in gaps:
        spanning = [s for s in cam_after if s["event"] != GAP and s["start_s"] < gap["start_s"] < s["end_s"]]
        spanning += [s for s in cam_after if s["event"] != GAP and s["start_s"] < gap["end_s"] - 0.01 < s["end_s"]]
        assert not spanning, (gap, spanning)
    _nothing_left(needles)


def _replica_pids(ray_tmpdir: str) -> list[int]:
    """The detector pool's replica processes of the Ray instance using ``ray_tmpdir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if args.startswith("ray::ServeReplica") and "detector" in args and ray_tmpdir in environ:
            pids.append(int(proc.name))
    return pids


@pytest.mark.timeout(600)
def test_a_hung_replica_and_redis_away_for_90_s_the_stream_waits_says_why_and_loses_nothing(tmp_path, clips, reference):
    from longwatch.pipeline.redis_server import EmbeddedRedis

    file_a = clips[0]
    sid = default_stream_id(str(file_a))
    port = free_port()
    redis = EmbeddedRedis(tmp_path / "redis", reuse=False, appendonly=True).start()
    env = {**_env(tmp_path, port), "REDIS_URL": redis.url, "LONGWATCH_RUNTIME__MODEL_TIMEOUT_S": "3"}
    svc = Service(env, port, tmp_path / "serve.log")
    try:
        svc.start()
        assert _cli(env, "add", str(file_a)).returncode == 0
        until(lambda: float(svc.streams()[sid].get("footage_s") or 0) >= 8, 120)

        # A replica that hangs (SIGSTOP: it takes the request and never answers) past the model timeout.
        pids = _replica_pids(env["RAY_TMPDIR"])
        assert pids, "no detector replica found"
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            hung = until(lambda: (st := svc.streams()[sid])["state"] == "waiting" and st, 60)
            assert "model" in hung["reason"] and "3 s" in hung["reason"], hung
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        until(lambda: svc.streams()[sid]["state"] == "running", 120)

        # Redis stopped for 90 s: the API shows the controller's view, the stream waits and says why.
        redis.stop()
        down_at = time.monotonic()
        seen: list[dict] = []
        while time.monotonic() - down_at < 90:
            try:
                st = svc.streams().get(sid)
                if st:
                    seen.append(st)
            except httpx.HTTPError:
                pass
            time.sleep(2)
        redis.start()
        waiting = [s for s in seen if s.get("redis") == "unreachable" and s["state"] == "waiting"]
        assert waiting and all("Redis unreachable" in s["reason"] for s in waiting), seen[-3:]
        done = until(lambda: (st := svc.streams()[sid])["state"] == "done" and st, 300)
        assert done["error"] == ""
        assert sorted(_key(s) for s in svc.segments(sid)) == reference[sid]
    finally:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.kill(signal.SIGTERM)
        redis.stop()
