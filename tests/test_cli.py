"""The CLI as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LONGWATCH = [str(Path(sys.executable).with_name("longwatch"))]


def run(*args, env=None):
    return subprocess.run(LONGWATCH + list(args), capture_output=True, text=True, timeout=120, env=env)


def test_inspect_json_plan(synthetic):
    out = run("inspect", synthetic["cfr"].path, "--json", "--min-fps", "1", "--max-fps", "4", "--clip-seconds", "4",
              "--start-at", "2026-11-22T14:02:00Z")
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


def test_inspect_bad_input_exits_2_with_a_message(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    out = run("inspect", str(bad))
    assert out.returncode == 2
    assert "error:" in out.stderr and "bad.mp4" in out.stderr
    out = run("inspect", "ftp://127.0.0.1/x")
    assert out.returncode == 2 and "unsupported scheme" in out.stderr


def test_env_overrides_config(synthetic):
    import os

    env = {**os.environ, "LONGWATCH_SAMPLER__MAX_FPS": "1", "LONGWATCH_SAMPLER__MIN_FPS": "1"}
    out = run("inspect", synthetic["cfr"].path, "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert {json.loads(line)["fps"] for line in out.stdout.splitlines()} == {1.0}
    env["LONGWATCH_SAMPLER__MIN_FPS"] = "5"  # min above max: rejected with a clear message
    out = run("inspect", synthetic["cfr"].path, env=env)
    assert out.returncode != 0 and "min_fps" in (out.stderr + out.stdout)
