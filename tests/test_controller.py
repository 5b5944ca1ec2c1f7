"""The reconciling controller against real Ray and a real Redis server: the registry is the truth.

- pause / resume / remove (with purge) take effect from the spec alone;
- a controller killed mid-file is restarted by Ray and, with no call from anyone, resumes every
  running spec from its watermark;
- a worker that stops beating (SIGSTOP: alive to the OS, frozen to us) is shown as lost, killed and
  replaced, and the file still ends with the segments of an undisturbed run.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from waiting import until

ray = pytest.importorskip("ray")

from longwatch.pipeline.config import Settings  # noqa: E402
from longwatch.pipeline.registry import Registry  # noqa: E402
from longwatch.pipeline.store import SegmentStore  # noqa: E402


def _settings(redis_server, data_dir, **runtime) -> Settings:
    settings = Settings()
    rt = settings.runtime.model_copy(
        update={
            "redis_url": redis_server.url,
            "data_dir": str(data_dir),
            "redis_prefix": f"c{uuid.uuid4().hex[:8]}",
            "heartbeat_s": 0.5,
            "heartbeat_timeout_s": 5.0,
            **runtime,
        }
    )
    # Every frame at 2 fps through the detector: slow enough to act on a stream mid-file.
    sampler = settings.sampler.model_copy(update={"min_fps": 2.0, "max_fps": 2.0})
    return settings.model_copy(update={"runtime": rt, "sampler": sampler})


def _shape(store: SegmentStore, sid: str) -> list[tuple]:
    return sorted((s.id, s.event, round(s.start, 3), round(s.end, 3), s.state) for s in store.query(stream=sid))


@pytest.fixture(scope="module")
def long_demo(demo_long):
    """bikes.mp4 six times over: a minute of street footage the project fetches itself."""
    return demo_long


@pytest.fixture(scope="module")
def reference(ray_local, redis_server, tmp_path_factory, long_demo):
    """The undisturbed run of the file, under stream id "clip" (segment ids are comparable)."""
    from longwatch.actors.runtime import Runtime

    settings = _settings(redis_server, tmp_path_factory.mktemp("ref"))
    with Runtime(settings) as rt:
        rt.add(str(long_demo), stream_id="clip")
        status = rt.wait(timeout=240)
        assert status["clip"]["state"] == "done", status
        return _shape(rt.store, "clip")


@pytest.mark.timeout(400)
def test_the_registry_drives_pause_resume_remove_and_a_restarted_controller(
    ray_local, redis_server, tmp_path, long_demo, reference
):
    from longwatch.actors.runtime import Runtime

    settings = _settings(redis_server, tmp_path)
    with Runtime(settings, service=True) as rt:
        reg: Registry = rt.registry
        store: SegmentStore = rt.store
        rt.add(str(long_demo), stream_id="clip")
        rt.add(str(long_demo), stream_id="gone")
        until(lambda: float(store.meta("clip").get("footage_s") or 0) >= 4, 120)

        # Pause: the worker stops, its place is kept.
        reg.set_state("clip", "paused")
        ray.get(rt.controller.reconcile.remote())
        paused = until(lambda: (m := store.meta("clip")).get("state") == "paused" and m, 60)
        held = float(paused["footage_s"])
        time.sleep(2)
        assert float(store.meta("clip")["footage_s"]) == held and rt.status()["clip"]["state"] == "paused"

        # Remove with purge: the worker stops, its segments and spec go.
        reg.update("gone", state="removed", purge=True)
        until(lambda: reg.find("gone") is None, 60)
        assert store.query(stream="gone") == [] and store.watermark("gone") is None

        # Resume, then kill the controller mid-file: Ray restarts it and it resumes the running spec.
        reg.set_state("clip", "running")
        ray.get(rt.controller.reconcile.remote())
        until(lambda: float(store.meta("clip").get("footage_s") or 0) > held, 60)
        workers_before = rt.status()["clip"]
        ray.kill(rt.controller, no_restart=False)
        status = until(lambda: store.meta("clip").get("state") == "done" and store.meta("clip"), 240)
        assert status["generation"] == reg.get("clip").generation
        assert _shape(store, "clip") == reference, workers_before
    # The specs stay (the service's next start would resume them); the finished one is not re-run.
    with Runtime(settings, service=True) as again:
        time.sleep(2)
        assert again.status()["clip"]["state"] == "done"


@pytest.mark.timeout(300)
def test_a_worker_that_stops_beating_is_lost_and_replaced(ray_local, redis_server, tmp_path, long_demo, reference):
    from longwatch.actors.runtime import Runtime

    with Runtime(_settings(redis_server, tmp_path)) as rt:
        rt.add(str(long_demo), stream_id="clip")
        store = rt.store
        until(lambda: float(store.meta("clip").get("footage_s") or 0) >= 4, 120)
        pid = int(until(lambda: store.meta("clip").get("pid"), 30))  # its heartbeat's (a call waits for run())
        os.kill(pid, signal.SIGSTOP)  # alive to the OS, frozen to us: no heartbeat, no progress
        try:  # lost, killed and replaced: the replacement runs and the status says why it restarted
            lost = until(lambda: (m := store.meta("clip")).get("restarts") == 1 and m, 30)
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass  # killed by the controller already
        assert "worker lost (no heartbeat" in lost["last_restart"], lost
        status = rt.wait(timeout=240)
        assert status["clip"]["state"] == "done" and status["clip"]["restarts"] == 1, status
        assert _shape(store, "clip") == reference
