"""Exactly-once resume at any clip: a file stopped after clip k and run again from its watermark ends
with the segments of an uninterrupted run (ids, times, states), for every event the detector and the
cheap signals give (persons held through motion, scene cuts). Real footage the project fetches itself,
the real detector in-process, a real Redis server; no Ray (the pipeline alone).

What this pins down: the first sample after a resume measures its motion against the frame of the
slot before the resume point (as an uninterrupted run does), and the scene-cut detector resumes warm
on frames of the same absolute grid."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from longwatch.pipeline.config import Settings
from longwatch.pipeline.events import default_events_path, load_events
from longwatch.pipeline.store import SegmentStore
from longwatch.pipeline.worker import StreamProcessor

EVENTS = load_events(Path(default_events_path()).read_text())


def _settings(**sampler) -> Settings:
    s = Settings()
    return s.model_copy(update={"sampler": s.sampler.model_copy(update=sampler)})


def _run(redis_server, path, settings, scorer, stop_after: int | None) -> list[tuple]:
    store = SegmentStore.from_url(redis_server.url, prefix=f"rs{uuid.uuid4().hex[:8]}")
    try:
        states = []
        for attempt in range(2):
            proc = StreamProcessor("clip", str(path), settings=settings, events=EVENTS, store=store, score_fn=scorer)
            if stop_after is not None and attempt == 0:
                proc.on_clip = lambda rep, p=proc: p.stop() if rep.clips >= stop_after else None
            states.append(proc.run().state)
            if states[-1] == "done":
                break
        assert states == (["done"] if stop_after is None else ["stopped", "done"]), states
        return sorted((s.id, s.event, s.start, s.end, s.state, s.score) for s in store.query(stream="clip"))
    finally:
        store.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sampler", [{"min_fps": 2.0, "max_fps": 2.0}, {}], ids=["2fps", "dynamic"])
def test_a_file_stopped_after_any_clip_resumes_to_identical_segments(redis_server, demo_long, scorer, sampler):
    settings = _settings(**sampler)
    reference = _run(redis_server, demo_long, settings, scorer, None)
    assert {e for _i, e, *_ in reference} >= {"person_present", "scene_cut"}, reference
    for k in (2, 5):
        assert _run(redis_server, demo_long, settings, scorer, k) == reference, f"stopped after clip {k}"
