"""One real `longwatch serve` for the whole test session (uvicorn in a subprocess, real Ray, the embedded
real Redis), with API tokens and a media root configured as an operator would: the modules that test
the API, its clients, auth and metrics share it. Registered in tests/conftest.py."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from waiting import free_port

ROOT = Path(__file__).resolve().parents[1]
LONGWATCH = [sys.executable, "-m", "longwatch.cli"]


class ServiceHandle(dict):
    """``url``, ``env`` (the CLI finds the service and its admin token with no flags), ``log``, ``port``,
    ``admin`` / ``read`` (tokens), ``media`` (the media root), ``data`` (the data dir)."""

    def headers(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self[scope]}"}

    def store(self):
        """A SegmentStore on the service's own (embedded) Redis, attached to it."""
        from longwatch.pipeline.redis_server import EmbeddedRedis
        from longwatch.pipeline.store import SegmentStore

        if "_store" not in self:
            redis = EmbeddedRedis(self["data"] / "redis").start()  # attaches to the running server
            self["_redis"] = redis
            self["_store"] = SegmentStore.from_url(redis.url, prefix="lw")
        return self["_store"]


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    media = tmp / "media"
    media.mkdir()
    port = free_port()
    admin, read = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS", "LONGWATCH_URL")}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_TMPDIR=tempfile.mkdtemp(prefix="lwapi-", dir="/tmp"),
        LONGWATCH_RUNTIME__DATA_DIR=str(tmp / "data"),
        LONGWATCH_API_TOKENS=f"admin:{admin},read:{read}",
        LONGWATCH_MEDIA_ROOTS=str(media),
        LONGWATCH_TOKEN=admin,  # what the CLI's client commands send
    )
    log = tmp / "serve.log"
    proc = subprocess.Popen(
        LONGWATCH + ["serve", "--port", str(port)], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/readyz", headers={"Authorization": f"Bearer {read}"}, timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    handle = ServiceHandle(
        url=url, env=env, log=log, port=port, admin=admin, read=read, media=media, data=tmp / "data", proc=proc
    )
    yield handle
    if "_store" in handle:
        handle["_store"].close()
        handle["_redis"].stop()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert not (tmp / "data" / "serve.json").exists()
    assert admin not in text and read not in text, "a token reached the service's log"
