"""Credentials in source URLs: redacted wherever shown or stored, ``${VAR}`` resolved only where opened.

The end-to-end check runs the real CLI (real Ray, the embedded Redis in a private data dir) on a real
RTSP server on 127.0.0.1 (GStreamer's, which ignores the credentials: what matters is that longwatch
sends them and shows them nowhere), with a literal password, a ``${VAR}`` password and a wrong port
with a password (so connect errors are produced), then greps everything the run left behind.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest

from longwatch.pipeline.config import SourceConfig
from longwatch.pipeline.errors import MissingSecretError, SourceError, SourceUnreachableError
from longwatch.pipeline.secrets import expand, redact, references, secret_values
from longwatch.pipeline.source import Source

PASSWORD = "Pw4417xq"  # literal, in the URL
ENV_PASSWORD = "Ev9031zk"  # the value of ${LW_TEST_CAM_PASSWORD}
LONGWATCH = [str(Path(sys.executable).with_name("longwatch"))]


# ---- redact / expand ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, shown",
    [
        ("rtsp://cam:hunter2@10.0.0.5/stream", "rtsp://cam:***@10.0.0.5/stream"),
        ("rtsp://cam:p@ss:w@10.0.0.5:554/s", "rtsp://cam:***@10.0.0.5:554/s"),  # raw @ and : in the password
        ("rtsp://cam:${CAM3_PASSWORD}@10.0.0.5/stream", "rtsp://cam:${CAM3_PASSWORD}@10.0.0.5/stream"),
        ("https://ghp_TOKEN123@example.com/live.m3u8", "https://***@example.com/live.m3u8"),  # a lone user
        ("https://h/live.m3u8?token=abc123&x=1&Signature=zz9", "https://h/live.m3u8?token=***&x=1&Signature=***"),
        ("/videos/a@b.mp4", "/videos/a@b.mp4"),
        ("rtsp://10.0.0.5/stream", "rtsp://10.0.0.5/stream"),
        (
            "[Errno 111] Connection refused: 'rtsp://admin:hunter2@127.0.0.1:1/x' then rtsp://u:hunter3@h/",
            "[Errno 111] Connection refused: 'rtsp://admin:***@127.0.0.1:1/x' then rtsp://u:***@h/",
        ),
    ],
)
def test_redact(text, shown):
    assert redact(text) == shown
    assert redact(shown) == shown  # idempotent


def test_redact_masks_known_values_outside_urls():
    assert redact("401 for user cam with hunter2", secrets=["hunter2"]) == "401 for user cam with ***"


def test_expand_resolves_references_and_names_a_missing_variable_never_a_value():
    env = {"CAM_USER": "cam", "CAM_PW": "s3cr3t"}
    assert expand("rtsp://${CAM_USER}:${CAM_PW}@h/s", env) == "rtsp://cam:s3cr3t@h/s"
    assert references("rtsp://${A}:${B}@h/${A}") == ["A", "B"]
    assert secret_values("rtsp://cam:s3cr3t@h/s?token=t0k") == ["s3cr3t", "t0k"]
    with pytest.raises(MissingSecretError) as info:
        expand("rtsp://cam:${CAM_PW}@h/s?k=${OTHER_MISSING}", {"CAM_PW": "s3cr3t"})
    err = info.value
    assert err.variables == ["OTHER_MISSING"] and "OTHER_MISSING" in str(err)
    assert "s3cr3t" not in str(err) and isinstance(err, SourceError) and isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))  # crosses processes (Ray) intact
    assert str(again) == str(err) and again.variables == ["OTHER_MISSING"]


def test_source_errors_redact_uri_and_message():
    err = SourceUnreachableError("refused: 'rtsp://a:hunter2@h/x'", uri="rtsp://a:hunter2@h/x")
    assert "hunter2" not in str(err) and err.uri == "rtsp://a:***@h/x"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc.__dict__)


def test_a_refused_camera_shows_no_password_in_errors_logs_or_tracebacks(caplog, monkeypatch):
    monkeypatch.setenv("LW_TEST_CAM_PASSWORD", ENV_PASSWORD)
    port = _free_port()
    cfg = SourceConfig(connect_attempts=2, open_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.1)
    caplog.set_level(logging.DEBUG)
    for uri in (
        f"rtsp://cam:{PASSWORD}@127.0.0.1:{port}/x",
        f"rtsp://cam:${{LW_TEST_CAM_PASSWORD}}@127.0.0.1:{port}/x",
    ):
        with pytest.raises(SourceUnreachableError) as info:
            Source.open(uri, config=cfg)
        text = _all_text(info.value)
        assert "refused" in text.lower()  # FFmpeg's reason is kept, its URL redacted
        for secret in (PASSWORD, ENV_PASSWORD):
            assert secret not in text and secret not in caplog.text
    assert "connect attempt 1 failed" in caplog.text


def test_an_unset_variable_fails_open_naming_it(monkeypatch):
    monkeypatch.delenv("LW_TEST_UNSET_PW", raising=False)
    with pytest.raises(MissingSecretError, match="LW_TEST_UNSET_PW"):
        Source.open("rtsp://cam:${LW_TEST_UNSET_PW}@127.0.0.1:1/x")


@pytest.mark.rtsp
@pytest.mark.timeout(60)
def test_a_camera_opened_through_a_variable_keeps_the_reference(synthetic, monkeypatch, caplog):
    from rtsp_server import RtspServer

    monkeypatch.setenv("LW_TEST_CAM_PASSWORD", ENV_PASSWORD)
    caplog.set_level(logging.DEBUG)
    with RtspServer(synthetic["gop"].path, mount="/cam") as srv:
        uri = srv.url.replace("rtsp://", "rtsp://cam:${LW_TEST_CAM_PASSWORD}@")
        with Source.open(uri, config=SourceConfig(open_timeout_s=8.0)) as src:
            assert src.live and src.uri == uri and ENV_PASSWORD in src.target
            assert next(iter(src.frames())).width > 0
    assert ENV_PASSWORD not in caplog.text


# ---- end to end: the CLI, real Ray, the embedded Redis, a real RTSP server -----------------------


def _redis_dump(url: str) -> str:
    """Every key and every value of every type, as text."""
    import redis

    r = redis.Redis.from_url(url)
    out = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        if kind == "string":
            value = r.get(key)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "set":
            value = r.smembers(key)
        elif kind == "zset":
            value = r.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = r.xrange(key)
        else:
            value = r.dump(key)
        out.append(f"{key!r} {kind} {value!r}")
    r.close()
    return "\n".join(out)


def _files_text(*roots: Path) -> str:
    chunks = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    chunks.append(path.read_bytes().decode("latin-1"))
                except OSError:
                    pass
    return "\n".join(chunks)


@pytest.mark.rtsp
@pytest.mark.timeout(120)
def test_run_with_camera_passwords_leaks_them_nowhere(synthetic, tmp_path):
    from rtsp_server import RtspServer

    from longwatch.pipeline.redis_server import EmbeddedRedis

    data = tmp_path / "data"
    ray_tmp = Path(tempfile.mkdtemp(prefix="lwsec-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS")}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_TMPDIR=str(ray_tmp),
        LONGWATCH_RUNTIME__DATA_DIR=str(data),
        LONGWATCH_SOURCE__BACKOFF_MAX_S="1",
        LW_TEST_CAM_PASSWORD=ENV_PASSWORD,
    )
    with RtspServer(synthetic["gop"].path, mount=["/cam1", "/cam2"]) as srv:
        literal = srv.urls[0].replace("rtsp://", f"rtsp://cam:{PASSWORD}@")
        referenced = srv.urls[1].replace("rtsp://", "rtsp://cam:${LW_TEST_CAM_PASSWORD}@")
        wrong = f"rtsp://cam:{PASSWORD}@127.0.0.1:{_free_port()}/nothing"
        proc = subprocess.Popen(
            [*LONGWATCH, "-v", "run", literal, referenced, wrong, "--id", "lit", "--id", "ref", "--id", "wrong"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            # Until both cameras have committed clips (their status is in Redis), then a few seconds more.
            deadline = time.time() + 75
            while time.time() < deadline and proc.poll() is None and not _cameras_ran(data, ["lit", "ref"]):
                time.sleep(1)
            time.sleep(1.5)  # a few more clips, and the wrong port's retries
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode is not None
    assert "stopping" in err, err[-2000:]
    streams = subprocess.run([*LONGWATCH, "streams", "--json"], capture_output=True, text=True, timeout=60, env=env)
    rows = {r["id"]: r for r in map(json.loads, streams.stdout.splitlines())}
    assert int(rows["lit"]["clips"] or 0) > 0 and int(rows["ref"]["clips"] or 0) > 0, rows  # they ran
    assert rows["lit"]["source"] == literal.replace(PASSWORD, "***")
    assert rows["ref"]["source"] == referenced  # the reference is stored, so a restart can resolve it
    server = EmbeddedRedis(data / "redis").start()
    try:
        dump = _redis_dump(server.url)
    finally:
        server.stop()
    assert "lit" in dump and "${LW_TEST_CAM_PASSWORD}" in dump
    places = {
        "run stdout": out,
        "run stderr": err,
        "streams output": streams.stdout + streams.stderr,
        "redis keys and values": dump,
        "files in the data dir (logs, Redis RDB/AOF)": _files_text(data),
        "Ray's session logs": _files_text(ray_tmp),
    }
    import shutil

    shutil.rmtree(ray_tmp, ignore_errors=True)
    for where, text in places.items():
        for secret in (PASSWORD, ENV_PASSWORD):
            assert secret not in text, f"{secret} in {where}"
    # The wrong port did produce errors (in Ray's worker logs), redacted.
    assert "cam:***@127.0.0.1" in places["Ray's session logs"] + err


def _cameras_ran(data: Path, ids: list[str]) -> bool:
    """Both cameras have reported clips (attached to the run's embedded Redis, which stays its own)."""
    from longwatch.pipeline.config import Settings
    from longwatch.pipeline.redis_server import EmbeddedRedis
    from longwatch.pipeline.store import SegmentStore

    if not (data / "redis" / EmbeddedRedis.STATE_FILE).exists():
        return False
    try:
        server = EmbeddedRedis(data / "redis").start()
        store = SegmentStore.from_url(server.url, prefix=Settings().runtime.redis_prefix)
        try:
            clips = {i.stream_id: int((i.meta or {}).get("clips") or 0) for i in store.streams()}
        finally:
            store.close()
            server.stop()
    except Exception:
        return False
    return all(clips.get(i, 0) > 0 for i in ids)
