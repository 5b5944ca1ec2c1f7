"""Failure policy: a model or Redis that is away for a while never fails a stream. The stream waits with
backoff, its status says why, and it finishes with the same segments as an undisturbed run.

StreamProcessor without Ray (a score function we control), a real Redis server, the synthetic clip.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from longwatch.pipeline.config import Settings
from longwatch.pipeline.errors import ModelError
from longwatch.pipeline.events import load_events
from longwatch.pipeline.redis_server import EmbeddedRedis
from longwatch.pipeline.store import SegmentStore
from longwatch.pipeline.worker import StreamProcessor

EVENTS = load_events("- event: person_present\n  detector: {class: person, min_score: 0.4}\n")
PRESENT = [(5.0, 12.0), (18.0, 24.0)]  # where the fake model "sees" a person (stream seconds)


def score_truth(clip) -> dict[str, np.ndarray]:
    t = np.asarray(clip.times, dtype=np.float64)
    hit = np.zeros(len(t), dtype=bool)
    for t0, t1 in PRESENT:
        hit |= (t >= t0) & (t < t1)
    return {"person_present": np.where(hit, 0.9, 0.0)}


def _settings(**runtime) -> Settings:
    s = Settings()
    sampler = s.sampler.model_copy(update={"min_fps": 2, "max_fps": 2, "clip_seconds": 2})
    rt = s.runtime.model_copy(update={"model_backoff_initial_s": 0.05, "model_backoff_max_s": 0.5, **runtime})
    return s.model_copy(update={"sampler": sampler, "runtime": rt})


def _shape(store: SegmentStore, stream: str) -> list[tuple]:
    return [(s.event, s.start, s.end, s.score, s.state) for s in store.query(stream=stream)]


def _reference(store: SegmentStore, path: str, settings: Settings) -> list[tuple]:
    rep = StreamProcessor("ref", path, settings=settings, events=EVENTS, store=store, score_fn=score_truth).run()
    assert rep.state == "done"
    ref = _shape(store, "ref")
    assert [e for e, *_ in ref] == ["person_present", "person_present"]  # one segment per PRESENT span
    return ref


def _watch_status(store: SegmentStore, stream: str, stop: threading.Event) -> tuple[threading.Thread, list]:
    """Poll the stream's status in Redis; collect every distinct (state, reason) seen."""
    seen: list[tuple[str, str]] = []

    def poll() -> None:
        while not stop.is_set():
            try:
                meta = store.meta(stream)
            except Exception:
                meta = {}
            pair = (meta.get("state", ""), meta.get("reason", ""))
            if pair[0] and (not seen or seen[-1] != pair):
                seen.append(pair)
            stop.wait(0.05)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    return t, seen


@pytest.mark.timeout(60)
def test_a_hung_model_times_out_the_stream_waits_and_loses_nothing(synthetic, store):
    """Clip 3's model call hangs (far past the timeout) for ~3 s, then answers: each hung call times out,
    the stream shows "waiting" with the reason, goes back to running, and its segments are the reference's."""
    settings = _settings(model_timeout_s=0.4)
    path = synthetic["gop"].path
    reference = _reference(store, path, settings)

    hang_until: list[float] = []
    calls: list[int] = []

    def hangs_for_a_while(clip):
        calls.append(clip.index)
        if clip.index == 3:
            if not hang_until:
                hang_until.append(time.monotonic() + 3.0)
            if time.monotonic() < hang_until[0]:
                time.sleep(30)  # hung: never answers in time (its thread is abandoned)
        return score_truth(clip)

    stop = threading.Event()
    watcher, seen = _watch_status(store, "hung", stop)
    started = time.monotonic()
    rep = StreamProcessor("hung", path, settings=settings, events=EVENTS, store=store, score_fn=hangs_for_a_while).run()
    stop.set()
    watcher.join(timeout=5)
    assert rep.state == "done" and rep.reason == "" and rep.error is None
    assert time.monotonic() - started >= 3.0
    assert calls.count(3) >= 3  # timed out and retried, then answered
    assert _shape(store, "hung") == reference
    waiting = [r for s, r in seen if s == "waiting"]
    assert waiting and all(r.startswith("model unavailable: TimeoutError") and "retrying in" in r for r in waiting)
    states = [s for s, _ in seen]
    assert "running" in states[states.index("waiting") :]  # back to running after
    meta = store.meta("hung")
    assert meta["state"] == "done" and meta["reason"] == ""


@pytest.mark.timeout(60)
def test_a_model_away_longer_than_the_old_budget_still_loses_nothing(synthetic, store):
    """The model fails every call for 16 s (the old policy gave up after 5 attempts, ~15 s): the stream
    waits as long as it takes; a typed error (ModelError) still fails a stream at once."""
    settings = _settings(model_backoff_max_s=1.0)
    path = synthetic["gop"].path
    reference = _reference(store, path, settings)

    failures: list[int] = []
    down_until = time.monotonic() + 16.0

    def away(clip):
        if time.monotonic() < down_until:
            failures.append(clip.index)
            raise ConnectionError("replica restarting")
        return score_truth(clip)

    rep = StreamProcessor("away", path, settings=settings, events=EVENTS, store=store, score_fn=away).run()
    assert rep.state == "done" and len(failures) > 5 and set(failures) == {0}
    assert _shape(store, "away") == reference

    def broken(clip):
        raise ModelError("weights do not match")

    with pytest.raises(ModelError):
        StreamProcessor("typed", path, settings=settings, events=EVENTS, store=store, score_fn=broken).run()
    assert store.meta("typed")["state"] == "failed"


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own, to stop and start (the session server stays up)."""
    server = EmbeddedRedis(tmp_path / "redis", reuse=False, appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(90)
def test_redis_down_longer_than_the_retry_deadline_the_stream_waits_and_loses_nothing(synthetic, own_redis):
    """Redis stops for ~6 s while the store gives up after 2 s: the stream waits (in-memory status
    "waiting", "Redis unreachable"), writes its status when Redis is back, and finishes identical."""
    prefix = f"f{uuid.uuid4().hex[:8]}"
    # retries=2: redis-py's own per-command retry (about 25 s by default) would outlast the outage by itself.
    store = SegmentStore.from_url(own_redis.url, prefix=prefix, retry_deadline_s=2.0, retries=2)
    settings = _settings()
    path = synthetic["gop"].path
    try:
        reference = _reference(store, path, settings)

        def slow(clip):
            time.sleep(0.15)
            return score_truth(clip)

        proc = StreamProcessor("outage", path, settings=settings, events=EVENTS, store=store, score_fn=slow)
        result: list = []
        runner = threading.Thread(target=lambda: result.append(proc.run()), daemon=True)
        runner.start()
        deadline = time.monotonic() + 30
        while (store.watermark("outage") or {}).get("clip_index", -1) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        own_redis.stop()
        down_at = time.monotonic()
        waiting: list[dict] = []
        while time.monotonic() - down_at < 6.0:
            status = proc.report.as_status()
            if status["state"] == "waiting":
                waiting.append(status)
            time.sleep(0.1)
        own_redis.start()
        runner.join(timeout=45)
        assert not runner.is_alive() and result and result[0].state == "done"
        assert waiting and all(s["reason"].startswith("Redis unreachable") for s in waiting)
        assert _shape(store, "outage") == reference
        meta = store.meta("outage")
        assert meta["state"] == "done" and meta["reason"] == "" and meta["error"] == ""
        assert (store.watermark("outage") or {}).get("done") is True
    finally:
        if not own_redis.running:
            own_redis.start()
        store.close()
