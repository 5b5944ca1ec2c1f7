"""The CLI as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import processes_mentioning

from longwatch.pipeline.identity import default_stream_id

LONGWATCH = [str(Path(sys.executable).with_name("longwatch"))]


def run(*args, env=None):
    return subprocess.run(LONGWATCH + list(args), capture_output=True, text=True, timeout=120, env=env)


def test_inspect_json_plan(synthetic):
    out = run(
        "inspect",
        synthetic["cfr"].path,
        "--json",
        "--min-fps",
        "1",
        "--max-fps",
        "4",
        "--clip-seconds",
        "4",
        "--start-at",
        "2026-11-22T14:02:00Z",
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) >= 4
    assert rows[0]["start_s"] == 0.0 and rows[0]["start_utc"].startswith("2026-11-22T14:02:00")
    for r in rows:
        assert 1.0 <= r["fps"] <= 4.0
        assert r["grid_thw"][1:] == [20, 28]  # 320x240 is under min_pixels: smart_resize -> 392x280
        assert r["temporal_ids"][0] == 0


def test_inspect_table_and_qwen_mode(synthetic):
    out = run("inspect", synthetic["gop"].path, "--qwen", "--fps", "1")
    assert out.returncode == 0, out.stderr
    assert "qwen-vl-utils" in out.stdout and "1 clips" in out.stdout


def test_a_bad_setting_in_the_environment_is_named_at_once(tmp_path):
    """A mistyped or invalid LONGWATCH_* variable: exit 2 before anything starts, naming the setting, its
    variable and the value, without a traceback and without a credential the value held."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGWATCH_")}
    env["LONGWATCH_DETECTION__ENGINE"] = "tensorrt"
    res = run("run", str(tmp_path / "none.mp4"), "--data-dir", str(tmp_path), env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "detection.engine (LONGWATCH_DETECTION__ENGINE)" in res.stderr and "'tensorrt'" in res.stderr
    assert "Traceback" not in res.stderr and "validation error" not in res.stderr
    env.pop("LONGWATCH_DETECTION__ENGINE")
    env["LONGWATCH_RUNTIME__REDIS_URLL"] = "redis://:hunter2secret@127.0.0.1:6390/0"  # a typo'd name
    res = run("query", env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "runtime.redis_urll (LONGWATCH_RUNTIME__REDIS_URLL)" in res.stderr
    assert "hunter2secret" not in res.stdout + res.stderr


def test_inspect_bad_input_exits_2_with_a_message(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    out = run("inspect", str(bad))
    assert out.returncode == 2
    assert "error:" in out.stderr and "bad.mp4" in out.stderr
    out = run("inspect", "ftp://127.0.0.1/x")
    assert out.returncode == 2 and "unsupported scheme" in out.stderr


def test_env_overrides_config(synthetic):

    env = {**os.environ, "LONGWATCH_SAMPLER__MAX_FPS": "1", "LONGWATCH_SAMPLER__MIN_FPS": "1"}
    out = run("inspect", synthetic["cfr"].path, "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert {json.loads(line)["fps"] for line in out.stdout.splitlines()} == {1.0}
    env["LONGWATCH_SAMPLER__MIN_FPS"] = "5"  # min above max: rejected with a clear message
    out = run("inspect", synthetic["cfr"].path, env=env)
    assert out.returncode != 0 and "min_fps" in (out.stderr + out.stdout)


# ---- the runtime commands: run, query, streams (real Ray, embedded Redis, the CPU detector) -------


def _runtime_env(tmp_path):
    import tempfile

    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS")}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_TMPDIR=tempfile.mkdtemp(prefix="lwcli-", dir="/tmp"),
        LONGWATCH_RUNTIME__DATA_DIR=str(tmp_path / "data"),
    )
    return env


@pytest.mark.timeout(300)
def test_run_then_query_and_streams(tmp_path, demo_clip):
    clip = demo_clip  # sample_videos/demo/bikes.mp4: the same bytes as shared/footage/bikes.mp4
    env = _runtime_env(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = subprocess.run(
        LONGWATCH + ["run", str(clip), str(empty)], capture_output=True, text=True, timeout=240, env=env
    )
    # The empty file fails alone, named, and the exit code says so; the good file runs to its end.
    assert out.returncode == 1, out.stderr[-3000:]
    assert f"{default_stream_id(str(empty))} failed: {empty}: file is empty" in " ".join(out.stderr.split()), (
        out.stderr[-3000:]
    )
    assert "segments" in out.stdout and "person" in out.stdout  # street scene: people are found
    # The data stayed in the embedded Redis's data dir: a later query restarts it and reads it back.
    q = subprocess.run(
        LONGWATCH + ["query", "--event", "person_present", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert q.returncode == 0, q.stderr
    rows = [json.loads(line) for line in q.stdout.splitlines()]
    assert rows and all(r["stream"] == default_stream_id(str(clip)) and r["event"] == "person_present" for r in rows)
    assert all(0.0 <= r["start_s"] <= r["end_s"] <= 10.5 for r in rows)
    # No creation time and no --start-at: no known epoch, so times are stream seconds only, never 1970.
    assert all(r["start_utc"] is None and r["end_utc"] is None for r in rows)
    assert "1970" not in out.stdout + out.stderr
    # Absolute-time query: the clip has no creation time, so its epoch is 1970-01-01T00:00:00Z.
    q = subprocess.run(
        LONGWATCH + ["query", "--from", "1970-01-01T00:00:30Z", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert q.returncode == 0 and q.stdout.strip() == ""  # nothing after the clip's end
    # Scene cuts are a signal every stream gets: bikes.mp4 is edited footage with hard cuts.
    q = subprocess.run(
        LONGWATCH + ["query", "--event", "scene_cut", "--json"], capture_output=True, text=True, timeout=60, env=env
    )
    cuts = [json.loads(line)["start_s"] for line in q.stdout.splitlines()]
    assert len(cuts) >= 3 and all(0 < t < 10 for t in cuts), cuts
    s = subprocess.run(LONGWATCH + ["streams", "--json"], capture_output=True, text=True, timeout=60, env=env)
    info = [json.loads(line) for line in s.stdout.splitlines()]
    assert [(i["id"], i["state"]) for i in info] == [(default_stream_id(str(clip)), "done")]


def test_run_rejects_bad_events_before_starting(tmp_path):
    env = _runtime_env(tmp_path)
    bad = tmp_path / "events.yaml"
    bad.write_text("- event: person_present\n  detector: {class: persn}\n")
    out = subprocess.run(
        LONGWATCH + ["run", "--events", str(bad), "x.mp4"], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 2
    assert "did you mean 'person'" in out.stderr and "line 2" in out.stderr
    bad.write_text("- event: [unclosed\n")
    out = subprocess.run(
        LONGWATCH + ["run", "--events", str(bad), "x.mp4"], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 2 and "events file" in out.stderr
    assert not (tmp_path / "data").exists()  # nothing was started: no Redis data dir, no Ray


def test_query_rejects_mixed_time_kinds(tmp_path):
    env = _runtime_env(tmp_path)
    out = subprocess.run(
        LONGWATCH + ["query", "--from", "3", "--to", "2026-01-01T00:00:00Z"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2 and "both" in out.stderr


@pytest.mark.timeout(400)
# The team's person clip ("footage") makes the same drill 35 s longer and shows nothing the demo does
# not: the service drills (tests/test_service.py) stop the person clip mid-file by SIGTERM as well.
@pytest.mark.parametrize("case", ["demo"])
def test_sigterm_saves_the_watermark_leaves_nothing_running_and_a_second_run_resumes(tmp_path, request, case):
    """SIGTERM is what systemd and Kubernetes send; it takes the same path as Ctrl-C (SIGINT).

    ``demo``: bikes.mp4 24 times over (4 minutes of real footage the project fetches itself, one person
    segment per copy); ``footage``: the team's person clip (139 s, six people one at a time)."""
    import signal
    import time

    from conftest import footage_file
    from demo_clips import loop_clip

    if case == "demo":
        copies = 24  # 4 minutes: still mid-file when the signal lands, however fast this machine runs
        clip = loop_clip(request.getfixturevalue("demo_clip"), tmp_path / f"bikes-x{copies}.mp4", copies)
        duration, people = 10.0 * copies, copies
    else:
        clip = footage_file("one-by-one-person-detection.mp4")
        duration, people = 139.4, 6
    env = _runtime_env(tmp_path)
    proc = subprocess.Popen(
        LONGWATCH + ["run", str(clip), "--no-show"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 120
    progressed = False
    while time.time() < deadline and proc.poll() is None:
        s = subprocess.run(LONGWATCH + ["streams", "--json"], capture_output=True, text=True, timeout=60, env=env)
        info = [json.loads(line) for line in s.stdout.splitlines()] if s.returncode == 0 else []
        if info and float(info[0].get("footage_s") or 0) >= 20:
            progressed = True
            break
        time.sleep(0.2)
    assert progressed, "the run never got going"
    # A lean local Ray (runtime.ray_lean, the default): its GCS and raylet, but no autoscaler monitor,
    # dashboard API server or log monitor.
    ray_procs = processes_mentioning(env["RAY_TMPDIR"])
    assert any("gcs_server" in p for p in ray_procs) and any("raylet" in p for p in ray_procs), ray_procs
    assert not [p for p in ray_procs if "monitor.py" in p or "dashboard/dashboard.py" in p], ray_procs
    # and the raylet's dashboard agent loads none of its modules (actors/lean_agent.py)
    agent_logs = list(Path(env["RAY_TMPDIR"]).glob("ray/session_*/logs/dashboard_agent.log"))
    assert agent_logs and "Loaded 0 modules" in agent_logs[0].read_text(), agent_logs
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert "stopping" in err
    # Nothing of that run is left: no Ray process of its temp dir, no Redis server on its data dir.
    deadline = time.time() + 20
    while (
        left := processes_mentioning(env["RAY_TMPDIR"], env["LONGWATCH_RUNTIME__DATA_DIR"])
    ) and time.time() < deadline:
        time.sleep(0.5)
    assert left == [], left
    s = subprocess.run(LONGWATCH + ["streams", "--json"], capture_output=True, text=True, timeout=60, env=env)
    first = json.loads(s.stdout.splitlines()[0])
    assert (
        first["state"] == "paused" and first["desired"] == "paused" and 20 <= float(first["footage_s"]) < duration - 1
    ), first
    # Run again: it resumes from the watermark and finishes; the segments are whole.
    again = subprocess.run(LONGWATCH + ["run", str(clip)], capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    q = subprocess.run(
        LONGWATCH + ["query", "--event", "person_present", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    segs = [json.loads(line) for line in q.stdout.splitlines()]
    assert len(segs) == people and all(r["state"] == "closed" for r in segs), segs
    if case == "demo":  # one segment per copy, each the first one shifted by 10 s: none split at the stop
        segs.sort(key=lambda r: r["start_s"])
        s0, e0 = segs[0]["start_s"], segs[0]["end_s"]
        assert 0 < s0 < e0 < 10.0, segs[0]
        for k, r in enumerate(segs):
            assert r["start_s"] == pytest.approx(s0 + 10 * k, abs=1e-3), (k, r, segs[0])
            assert r["end_s"] == pytest.approx(e0 + 10 * k, abs=1e-3), (k, r, segs[0])


BAD_FILES = {
    "missing": (None, "no such file"),
    "empty": (b"", "file is empty"),
    "garbage": (random.Random(0).randbytes(50_000), "not a readable video"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_run_on_a_bad_file_alone_fails_at_once_naming_it(tmp_path, name):
    content, message = BAD_FILES[name]
    path = tmp_path / f"{name}.mp4"
    if content is not None:
        path.write_bytes(content)
    env = _runtime_env(tmp_path)
    out = subprocess.run(LONGWATCH + ["run", str(path)], capture_output=True, text=True, timeout=60, env=env)
    err = " ".join(out.stderr.split())  # rich wraps long lines
    assert out.returncode == 1, err[-2000:]
    assert f"{default_stream_id(str(path))} failed: {path}: {message}" in err, err[-2000:]
    assert not (tmp_path / "data").exists()  # failed before anything started: no Redis, no Ray


@pytest.mark.parametrize(
    "model,message",
    [("/nonexistent/qwen-dir", "does not exist"), ("Qwen/Qwen2.5-VL-3B-Instruct", "not a local directory")],
)
def test_run_rejects_an_unusable_vlm_before_any_stream(tmp_path, synthetic, model, message):
    pytest.importorskip("torch")
    env = _runtime_env(tmp_path)
    env.update(LONGWATCH_VLM__MODEL=model, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    events = tmp_path / "events.yaml"
    events.write_text("- event: fall\n  backend: qwen2_5_vl\n  prompt: a person falls\n  threshold: 0.5\n")
    out = subprocess.run(
        LONGWATCH + ["run", "--events", str(events), "--no-show", synthetic["cfr"].path],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert message in out.stderr


@pytest.mark.timeout(300)
def test_a_dead_camera_waits_and_the_live_table_says_why(tmp_path):
    """A camera that does not answer may come back: the run waits for it (no failure, no exit), and
    the live table says why it waits, without the camera's password."""
    import signal
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _runtime_env(tmp_path)
    proc = subprocess.Popen(
        LONGWATCH + ["run", f"rtsp://admin:hunter2secret@127.0.0.1:{port}/cam", "--no-show"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 150
    reason = ""
    seen = None
    while time.time() < deadline and proc.poll() is None and not reason:
        seen = subprocess.run(LONGWATCH + ["streams", "--json"], capture_output=True, text=True, timeout=60, env=env)
        info = [json.loads(line) for line in seen.stdout.splitlines()] if seen.returncode == 0 else []
        if info and info[0]["state"] == "waiting":
            reason = info[0]["reason"]
        time.sleep(1.5)  # each `streams` is a Python process: polling faster only slows the run it watches
    assert proc.poll() is None, "the run ended instead of waiting for the camera"
    assert "unreachable" in reason and "hunter2secret" not in reason, seen and (seen.stdout + seen.stderr)[-2000:]
    time.sleep(3.0)  # a later refresh of the live table (each second, once the status call answers) has it
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    table = " ".join(err.split())
    # under the live table (when the run got that far), and again as the run stops
    assert "cam was waiting: source unreachable" in table and "Connection refused" in table, err[-3000:]
    assert "hunter2secret" not in out + err
    assert "Traceback" not in err
