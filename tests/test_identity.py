"""Stream identity: ids, fingerprints, the check on start, --reprocess (pipeline, store, worker, CLI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from longwatch.pipeline.config import SamplerConfig, Settings
from longwatch.pipeline.errors import ConfigError, InvalidStreamIdError, StreamIdentityError
from longwatch.pipeline.events import load_events
from longwatch.pipeline.identity import (
    PIPELINE_FP_KEY,
    SOURCE_FP_KEY,
    check_identity,
    check_stream_id,
    default_stream_id,
    fingerprints,
    pipeline_fingerprint,
    source_fingerprint,
    strip_credentials,
)
from longwatch.pipeline.types import Segment
from longwatch.pipeline.worker import StreamProcessor

EVENTS = load_events("- event: person_present\n  detector: {class: person, min_score: 0.4}\n")
OTHER_EVENTS = load_events("- event: person_present\n  detector: {class: person, min_score: 0.6}\n")
EPOCH = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


# ---- ids ------------------------------------------------------------------------------------------


def test_default_ids_differ_for_the_same_stem_in_two_folders(tmp_path, monkeypatch):
    a, b = tmp_path / "a" / "cam.mp4", tmp_path / "b" / "cam.mp4"
    ida, idb = default_stream_id(str(a)), default_stream_id(str(b))
    assert ida != idb and ida.startswith("cam-") and idb.startswith("cam-")
    assert len(ida) == len("cam-") + 8
    # the same file always gets the same id, however it is named (relative, file://, ..)
    monkeypatch.chdir(tmp_path)
    assert default_stream_id("a/cam.mp4") == ida
    assert default_stream_id(f"file://{a}") == ida
    assert default_stream_id(str(tmp_path / "b" / ".." / "a" / "cam.mp4")) == ida
    # an odd or long stem still makes a valid id
    odd = default_stream_id(str(tmp_path / ("my clip (1) ü" + "x" * 80 + ".mp4")))
    assert check_stream_id(odd) == odd and len(odd) <= 64
    # taken ids get a suffix (the same source named twice in one run)
    assert default_stream_id(str(a), {ida}) == ida + "-2"


def test_default_ids_of_urls_drop_scheme_and_credentials():
    assert default_stream_id("rtsp://admin:s3cret@10.0.0.5:554/stream1") == "10.0.0.5-554-stream1"
    assert default_stream_id("https://cams.example.com/live/3.m3u8") == "cams.example.com-live-3.m3u8"
    long = default_stream_id("rtsp://10.0.0.5/" + "p" * 100)
    assert len(long) == 64 and check_stream_id(long)
    assert long != default_stream_id("rtsp://10.0.0.5/" + "p" * 101)  # the hash keeps them apart
    assert "s3cret" not in default_stream_id("rtsp://u:s3cret@h/" + "p" * 100)


@pytest.mark.parametrize("bad", ["", "x" * 65, "cam 3", "cam/3", "cam{3}", "kamera:1", "ümlaut", None, 3])
def test_invalid_ids_are_refused_by_name(bad):
    with pytest.raises(InvalidStreamIdError) as info:
        check_stream_id(bad)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
    assert repr(bad) in str(info.value) and "letters, digits" in str(info.value)
    assert info.value.stream_id == str(bad)


@pytest.mark.parametrize("good", ["cam", "cam-3", "Front_door.2", "x" * 64, "7", "-a.", "a..b"])
def test_valid_ids(good):
    assert check_stream_id(good) == good


# ---- fingerprints ---------------------------------------------------------------------------------


def test_source_fingerprint_of_files(tmp_path):
    """size + mtime + sha256 of the first and last MiB. Documented choice: a byte-identical copy
    with its mtime kept (cp -p, shutil.copy2) is the same source; a copy with a new mtime is not
    (we cannot tell it from an edit without reading the whole file)."""
    path = tmp_path / "a.mp4"
    data = bytearray(os.urandom(3 * (1 << 20)))
    path.write_bytes(data)
    fp = source_fingerprint(str(path))
    assert (
        fp["kind"] == "file" and fp["size"] == len(data) and set(fp) == {"kind", "size", "mtime_ns", "head_tail_sha256"}
    )
    assert source_fingerprint(str(path)) == fp  # stable

    kept = tmp_path / "copy-p.mp4"
    shutil.copy2(path, kept)
    assert source_fingerprint(str(kept)) == fp
    fresh = tmp_path / "copy.mp4"
    shutil.copyfile(path, fresh)
    os.utime(fresh, ns=(fp["mtime_ns"] + 5_000_000_000, fp["mtime_ns"] + 5_000_000_000))
    assert source_fingerprint(str(fresh)) != fp

    st = path.stat()
    for offset in (10, len(data) - 10):  # a change in the head or the tail, same size, same mtime
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        path.write_bytes(changed)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        got = source_fingerprint(str(path))
        assert got["size"] == fp["size"] and got["mtime_ns"] == fp["mtime_ns"]
        assert got["head_tail_sha256"] != fp["head_tail_sha256"]
    path.write_bytes(data + b"more")  # grown
    assert source_fingerprint(str(path))["size"] == len(data) + 4

    small = tmp_path / "small.mp4"  # shorter than a MiB: read once
    small.write_bytes(b"abc")
    assert source_fingerprint(str(small))["size"] == 3


def test_source_fingerprint_of_urls_has_no_credentials():
    fp = source_fingerprint("rtsp://admin:s3cret@10.0.0.5:554/stream1?ch=2")
    assert fp == {"kind": "url", "url": "rtsp://10.0.0.5:554/stream1?ch=2"}
    assert strip_credentials("rtsp://cam:${CAM3_PASSWORD}@10.0.0.5/s") == "rtsp://10.0.0.5/s"
    assert strip_credentials("http://h/x") == "http://h/x"
    assert strip_credentials("https://h/live.m3u8?token=s3cret&ch=1") == "https://h/live.m3u8?token=***&ch=1"
    assert "s3cret" not in default_stream_id("https://h/live.m3u8?token=s3cret")


def test_pipeline_fingerprint():
    s = SamplerConfig()
    fp = pipeline_fingerprint(EVENTS, s)
    assert fp == pipeline_fingerprint(
        load_events("- event: person_present\n  detector: {class: person, min_score: 0.4}\n"), s
    )
    described = load_events(
        "- event: person_present\n  description: someone there\n  detector: {class: person, min_score: 0.4}\n"
    )
    assert pipeline_fingerprint(described, s) == fp  # descriptions change no segment
    assert pipeline_fingerprint(OTHER_EVENTS, s) != fp
    assert pipeline_fingerprint(EVENTS, s.model_copy(update={"max_fps": 3.0})) != fp


def test_check_identity_names_what_differs(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"a" * 100)
    b.write_bytes(b"b" * 200)
    s = SamplerConfig()
    wm = {"done": True, **fingerprints(str(a), EVENTS, s)}
    check_identity("cam", wm, fingerprints(str(a), EVENTS, s))
    check_identity("cam", None, fingerprints(str(b), EVENTS, s))  # a new stream
    check_identity("cam", {"done": True}, fingerprints(str(b), EVENTS, s))  # written before fingerprints
    with pytest.raises(StreamIdentityError) as info:
        check_identity("cam", wm, fingerprints(str(b), EVENTS, s))
    assert info.value.differs == "source" and info.value.stream_id == "cam"
    msg = str(info.value)
    assert "'cam'" in msg and "another source" in msg and "--id" in msg and "--reprocess" in msg
    assert "100 -> 200 bytes" in msg
    with pytest.raises(StreamIdentityError) as info:
        check_identity("cam", wm, fingerprints(str(a), OTHER_EVENTS, s))
    assert info.value.differs == "pipeline" and "events or sampler" in str(info.value)
    with pytest.raises(StreamIdentityError) as info:
        check_identity("cam", wm, fingerprints("rtsp://u:p@h/x", EVENTS, s))
    assert "file source, now a url source" in str(info.value)


# ---- the worker checks the id on start; the store drops a stream in one transaction ---------------


def _none(clip):
    return {"person_present": np.zeros(clip.n)}


def _proc(store, sid, path, events=EVENTS):
    s = Settings()
    settings = s.model_copy(update={"sampler": s.sampler.model_copy(update={"min_fps": 1, "max_fps": 1})})
    return StreamProcessor(sid, str(path), settings=settings, events=events, store=store, score_fn=_none)


@pytest.mark.timeout(120)
def test_worker_refuses_another_source_or_pipeline_under_an_id(synthetic, store, tmp_path):
    a, b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    for p, src in ((a, synthetic["cfr"].path), (b, synthetic["gop"].path)):
        p.parent.mkdir()
        shutil.copy2(src, p)
    rep = _proc(store, "cam", a).run()
    assert rep.state == "done" and rep.clips > 0
    wm = store.watermark("cam")
    assert wm[SOURCE_FP_KEY] == source_fingerprint(str(a)) and wm[PIPELINE_FP_KEY]

    # another file under the same id: failed at once, never "done", nothing decoded or written
    keys_before = store.stream_keys("cam")
    proc = _proc(store, "cam", b)
    with pytest.raises(StreamIdentityError) as info:
        proc.run()
    assert info.value.differs == "source" and proc.report.state == "failed" and proc.report.clips == 0
    assert store.meta("cam")["state"] == "failed" and "--reprocess" in store.meta("cam")["error"]
    assert store.watermark("cam") == wm and store.stream_keys("cam") == keys_before

    # other events under the same id
    proc = _proc(store, "cam", a, events=OTHER_EVENTS)
    with pytest.raises(StreamIdentityError) as info:
        proc.run()
    assert info.value.differs == "pipeline" and proc.report.state == "failed"

    # the same source and events: done from the watermark
    assert _proc(store, "cam", a).run().state == "done"

    # reprocess: drop the stream, then b runs under the id and nothing of a is left
    store.commit("cam", [Segment("cam", "old_event", 500, 510, epoch=EPOCH)], watermark=None)
    assert store.drop_stream("cam") > 0
    assert store.stream_keys("cam") == [] and "cam" not in store.stream_ids() and store.watermark("cam") is None
    rep = _proc(store, "cam", b).run()
    assert rep.state == "done" and rep.resumed_from is None and rep.clips > 0
    assert store.watermark("cam")[SOURCE_FP_KEY] == source_fingerprint(str(b))
    new = store.query(stream="cam")
    assert all(s.event != "old_event" and s.end <= 30.5 for s in new)


def test_drop_stream_is_one_transaction(store):
    segs = [Segment("cam3", "person", i * 10, i * 10 + 3, epoch=EPOCH) for i in range(1200)]
    store.commit("cam3", segs, watermark={"clip": 1}, epoch=EPOCH)
    store.commit("other", [Segment("other", "person", 0, 1, epoch=EPOCH)], watermark={"clip": 1})
    n_keys = len(store.stream_keys("cam3"))
    assert n_keys > 1200

    seen: list[str] = []
    mon = store.r.monitor()
    ready = threading.Event()

    def watch() -> None:
        with mon as m:
            ready.set()
            for cmd in m.listen():
                words = cmd["command"].split(" ", 1)
                seen.append(words[0].upper())
                if words[0].upper() == "SREM":
                    return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    ready.wait(5)
    time.sleep(0.3)
    assert store.drop_stream("cam3") == n_keys
    t.join(10)
    # every DEL sits between one MULTI and its EXEC; the registry is updated after
    dels = [i for i, c in enumerate(seen) if c == "DEL"]
    assert len(dels) == -(-n_keys // 500)
    multi = max(i for i, c in enumerate(seen[: dels[0]]) if c == "MULTI")
    exec_ = dels[-1] + seen[dels[-1] :].index("EXEC")
    assert set(seen[multi + 1 : exec_]) == {"DEL"} and seen.index("SREM") > exec_
    assert store.stream_keys("cam3") == [] and store.query(stream="cam3") == []
    assert store.stream_ids() == ["other"] and len(store.query(stream="other")) == 1
    assert store.drop_stream("cam3") == 0  # nothing left: a no-op


def test_drop_stream_on_redis_cluster(cluster_store):
    """One slot per stream: the drop's MULTI/EXEC works on a three-master Redis Cluster."""
    cl = cluster_store
    cl.commit("cam-3", [Segment("cam-3", "person", i, i + 1, epoch=EPOCH) for i in range(600)], watermark={"c": 1})
    for sid in ("cam3", "lobby"):  # on the other masters
        cl.commit(sid, [Segment(sid, "person", 0, 1, epoch=EPOCH)], watermark={"c": 1})
    n = len(cl.stream_keys("cam-3"))
    assert cl.drop_stream("cam-3") == n > 600
    assert cl.stream_keys("cam-3") == [] and cl.watermark("cam-3") is None
    assert cl.stream_ids() == ["cam3", "lobby"] and len(cl.query()) == 2


# ---- the CLI: default ids, fail fast, --reprocess (one Ray run) --------------------------------------

LONGWATCH = [str(Path(sys.executable).with_name("longwatch"))]


def _cli(args, env, timeout=120):
    return subprocess.run(LONGWATCH + list(args), capture_output=True, text=True, timeout=timeout, env=env)


def _env(data: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS")}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_TMPDIR=tempfile.mkdtemp(prefix="lwid-", dir="/tmp"),
        LONGWATCH_RUNTIME__DATA_DIR=str(data),
    )
    return env


@pytest.fixture(scope="module")
def two_clips_run(synthetic, tmp_path_factory):
    """``longwatch run --reprocess a/clip.mp4 b/clip.mp4`` (one Ray run) on a data dir whose Redis
    already holds an old, finished stream under a/clip.mp4's id, of another source."""
    from longwatch.pipeline.redis_server import EmbeddedRedis
    from longwatch.pipeline.store import SegmentStore

    root = tmp_path_factory.mktemp("identity-cli")
    a, b = root / "a" / "clip.mp4", root / "b" / "clip.mp4"
    for p, src in ((a, synthetic["cfr"].path), (b, synthetic["gop"].path)):
        p.parent.mkdir()
        shutil.copy2(src, p)
    ida, idb = default_stream_id(str(a)), default_stream_id(str(b))
    data = root / "data"
    server = EmbeddedRedis(data / "redis").start()
    try:
        st = SegmentStore.from_url(server.url, prefix="lw")
        old_wm = {"done": True, "footage_s": 999.0, SOURCE_FP_KEY: {"kind": "url", "url": "rtsp://elsewhere/x"}}
        st.commit(ida, [Segment(ida, "old_event", 500, 510, epoch=EPOCH)], watermark=old_wm, epoch=EPOCH)
        st.close()
    finally:
        server.stop()
    env = _env(data)
    out = _cli(["run", "--reprocess", str(a), str(b)], env, timeout=240)
    return dict(root=root, a=a, b=b, ida=ida, idb=idb, env=env, out=out)


@pytest.mark.timeout(300)
def test_cli_same_stem_in_two_folders_both_decoded_after_reprocess(two_clips_run):
    r = two_clips_run
    out = r["out"]
    assert out.returncode == 0, out.stderr[-3000:]
    assert r["ida"] != r["idb"]
    s = _cli(["streams", "--json"], r["env"], timeout=60)
    info = {i["id"]: i for i in map(json.loads, s.stdout.splitlines())}
    assert set(info) == {r["ida"], r["idb"]}, s.stdout
    assert info[r["ida"]]["state"] == info[r["idb"]]["state"] == "done"
    assert 15 < float(info[r["ida"]]["footage_s"]) < 25  # cfr30: 20 s, decoded (not the old 999 s)
    assert 25 < float(info[r["idb"]]["footage_s"]) < 35  # gop10: 30 s
    q = _cli(["query", "--json"], r["env"], timeout=60)
    rows = [json.loads(line) for line in q.stdout.splitlines()]
    assert not [x for x in rows if x["event"] == "old_event" or x["end_s"] > 40], rows  # the old stream is gone


@pytest.mark.timeout(120)
def test_cli_refuses_another_source_or_other_events_under_an_id_before_starting(two_clips_run, tmp_path):
    r = two_clips_run
    env = {**r["env"], "RAY_TMPDIR": tempfile.mkdtemp(prefix="lwid-", dir="/tmp")}
    other = tmp_path / "other" / "cam.mp4"
    other.parent.mkdir()
    shutil.copy2(r["b"], other)
    started = time.monotonic()
    out = _cli(["run", str(other), "--id", r["ida"]], env)
    err = " ".join(out.stderr.split())
    assert out.returncode == 1, err[-2000:]
    assert f"{r['ida']} failed: stream {r['ida']!r} already holds segments of another source" in err, err[-2000:]
    assert "--id" in err and "--reprocess" in err
    assert "segments" not in out.stdout  # nothing ran, nothing shown
    # different events under a's id
    events = tmp_path / "events.yaml"
    events.write_text("- event: car_present\n  detector: {class: car}\n")
    out = _cli(["run", "--events", str(events), str(r["a"])], env)
    err = " ".join(out.stderr.split())
    assert out.returncode == 1, err[-2000:]
    assert "other events or sampler settings" in err and "--reprocess" in err, err[-2000:]
    assert time.monotonic() - started < 60
    assert os.listdir(env["RAY_TMPDIR"]) == []  # Ray never started
    s = _cli(["streams", "--json"], env, timeout=60)
    info = {i["id"]: i for i in map(json.loads, s.stdout.splitlines())}
    assert info[r["ida"]]["state"] == "done"  # the stream itself is untouched


def test_cli_rejects_bad_ids_before_starting(tmp_path, synthetic):
    env = _env(tmp_path / "data")
    out = _cli(["run", synthetic["cfr"].path, "--id", "front door"], env, timeout=60)
    assert out.returncode == 2 and "invalid stream id 'front door'" in " ".join(out.stderr.split())
    out = _cli(["run", synthetic["cfr"].path, synthetic["gop"].path, "--id", "x", "--id", "x"], env, timeout=60)
    assert out.returncode == 2 and "given twice" in " ".join(out.stderr.split())
    out = _cli(["run", synthetic["cfr"].path, "--id", "x", "--id", "y"], env, timeout=60)
    assert out.returncode == 2 and "2 --id for 1 sources" in " ".join(out.stderr.split())
    assert not (tmp_path / "data").exists()
