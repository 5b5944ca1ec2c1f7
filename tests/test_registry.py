"""The registry of stream specs and the service lease, on a real Redis server (no Ray)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from longwatch.pipeline.errors import ConfigError, InvalidStreamIdError
from longwatch.pipeline.lease import LeaseHeldError, ServiceLease
from longwatch.pipeline.registry import Registry, SpecExistsError, SpecNotFoundError, StreamSpec
from longwatch.pipeline.store import SegmentStore


@pytest.fixture
def registry(redis_server, request):
    store = SegmentStore.from_url(redis_server.url, prefix=f"reg{abs(hash(request.node.name)) % 10**8}")
    reg = Registry.of(store)
    for spec in reg.list():
        reg.delete(spec.id)
    yield reg
    for spec in reg.list():
        reg.delete(spec.id)
    store.r.delete(f"{store.prefix}:lease")
    store.close()


def test_a_spec_is_validated_on_construction():
    with pytest.raises(InvalidStreamIdError):
        StreamSpec(id="../etc", source="a.mp4")
    with pytest.raises(ConfigError, match="state must be one of"):
        StreamSpec(id="a", source="a.mp4", state="dancing")
    with pytest.raises(ConfigError, match="unknown sampler setting.*max_fsp"):
        StreamSpec(id="a", source="a.mp4", sampler={"max_fsp": 2})
    with pytest.raises(ConfigError, match="sampler.max_fps: Input should be greater than 0"):
        StreamSpec(id="a", source="a.mp4", sampler={"max_fps": -1})
    with pytest.raises(ConfigError, match="shown source"):
        StreamSpec(id="a", source="rtsp://u:secret@10.0.0.5/s")
    spec = StreamSpec(id="a", source="rtsp://u:${PW}@10.0.0.5/s", sampler={"max_fps": 1})
    assert StreamSpec.from_json(spec.to_json()) == spec


def test_put_get_list_update_delete(registry):
    a = registry.put(StreamSpec(id="a", source="/v/a.mp4"))
    assert a.generation == 1 and a.created > 0 and a.updated >= a.created
    registry.put(StreamSpec(id="b", source="/v/b.mp4", state="paused"))
    assert [s.id for s in registry.list()] == ["a", "b"]
    assert registry.get("a") == a
    paused = registry.set_state("a", "paused")
    assert paused.state == "paused" and paused.generation == 2 and paused.created == a.created
    again = registry.put(StreamSpec(id="a", source="/v/a.mp4"))  # the same stream added again: running again
    assert again.state == "running" and again.generation == 3
    with pytest.raises(SpecExistsError, match="another source"):
        registry.put(StreamSpec(id="a", source="/v/other.mp4"))
    with pytest.raises(SpecExistsError, match="other events or sampler"):
        registry.put(StreamSpec(id="a", source="/v/a.mp4", sampler={"max_fps": 1}))
    replaced = registry.put(StreamSpec(id="a", source="/v/other.mp4"), replace_existing=True)
    assert replaced.source == "/v/other.mp4" and replaced.generation == 4
    registry.delete("a")
    assert registry.find("a") is None
    with pytest.raises(SpecNotFoundError, match="no stream 'a'"):
        registry.get("a")
    with pytest.raises(KeyError):  # the builtin it subclasses
        registry.update("a", state="paused")


def test_a_literal_credential_is_kept_apart_from_the_spec(registry):
    given = "rtsp://admin:hunter2@10.0.0.5:554/stream"
    shown = "rtsp://admin:***@10.0.0.5:554/stream"
    registry.put(StreamSpec(id="cam", source=shown), source=given)
    assert registry.source("cam") == given  # what the controller opens after a restart
    spec_text = registry.r.hget(registry.specs_key, "cam")
    assert "hunter2" not in spec_text and registry.get("cam").source == shown
    # A reference names the secret instead: nothing secret is stored at all.
    ref = "rtsp://admin:${CAM_PW}@10.0.0.5:554/stream"
    registry.put(StreamSpec(id="cam", source=ref), source=ref, replace_existing=True)
    assert registry.r.hget(registry.sources_key, "cam") is None and registry.source("cam") == ref
    registry.delete("cam")
    assert registry.r.hlen(registry.sources_key) == 0


def test_the_lease_refuses_a_second_live_holder_and_takes_over_a_dead_ones(registry):
    prefix = registry.prefix
    first = ServiceLease(registry.r, prefix=prefix, ttl_s=5).acquire()
    try:
        with pytest.raises(LeaseHeldError, match=f"prefix '{prefix}' is already running"):
            ServiceLease(registry.r, prefix=prefix).acquire()
    finally:
        first.release()
    assert registry.r.get(f"{prefix}:lease") is None
    # A holder on this host whose process is gone (SIGKILLed serve): taken over at once, no TTL wait.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = ServiceLease(registry.r, prefix=prefix, ttl_s=60)
    stale.owner["pid"] = int(dead.stdout)
    registry.r.set(f"{prefix}:lease", __import__("json").dumps(stale.owner, sort_keys=True), px=60_000)
    started = time.monotonic()
    lease = ServiceLease(registry.r, prefix=prefix).acquire()
    try:
        assert time.monotonic() - started < 2
        assert lease.holder()["pid"] == lease.owner["pid"]
    finally:
        lease.release()
