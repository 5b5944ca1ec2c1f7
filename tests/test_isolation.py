"""Two longwatch runtimes on one Ray cluster: each prefix (``runtime.redis_prefix``) has its own named
controller and its own Serve pools, so closing one never touches the other, and a second runtime with a
prefix that is already running is refused instead of adopting the running one's controller."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from longwatch.pipeline.config import Settings  # noqa: E402
from longwatch.pipeline.store import SegmentStore  # noqa: E402


def _settings(redis_server, data_dir, prefix: str) -> Settings:
    settings = Settings()
    rt = settings.runtime.model_copy(
        update={"redis_url": redis_server.url, "data_dir": str(data_dir), "redis_prefix": prefix}
    )
    return settings.model_copy(update={"runtime": rt})


def _apps() -> set[str]:
    from ray import serve

    return set(serve.status().applications)


def _controller_alive(name: str) -> bool:
    try:
        actor = ray.get_actor(name)
    except ValueError:
        return False
    ray.get(actor.status.remote(), timeout=10)
    return True


def _segments(redis_url: str, prefix: str, stream: str) -> list[tuple]:
    store = SegmentStore.from_url(redis_url, prefix=prefix)
    try:
        # no ids: they name the stream, and the copies run under other stream ids than the reference
        return [(s.event, round(s.start, 3), round(s.end, 3), s.state) for s in store.query(stream=stream)]
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_a_second_prefix_leaves_the_first_untouched(ray_local, redis_server, synthetic, tmp_path):
    from longwatch.actors.controller import controller_name
    from longwatch.actors.model_pool import app_name
    from longwatch.actors.runtime import Runtime, RuntimeAlreadyRunningError

    pa, pb = f"a{tmp_path.name[-6:]}", f"b{tmp_path.name[-6:]}"
    data_dir = tmp_path / "data"
    clip_a, clip_b = synthetic["gop"].path, synthetic["cfr"].path

    # The reference: clip A processed alone, under a prefix of its own.
    ref = Runtime(_settings(redis_server, data_dir, f"r{tmp_path.name[-6:]}")).start()
    try:
        ref.add(clip_a, stream_id="clip")
        ref_status = ref.wait(timeout=90)
        reference = _segments(ref.redis_url, ref.settings.runtime.redis_prefix, "clip")
    finally:
        ref.close()
    assert ref_status["clip"]["state"] == "done", ref_status
    assert reference, "the reference run found no segment to compare with"

    a = Runtime(_settings(redis_server, data_dir, pa)).start()
    try:
        b = Runtime(_settings(redis_server, data_dir, pb)).start()
        try:
            assert a.controller is not b.controller
            assert {app_name("detector", pa), app_name("detector", pb)} <= _apps()
            b.add(clip_b, stream_id="clip")  # the same stream id: each prefix has its own keys
            for i in range(4):  # several copies queue for the CPUs, so A is busy while B closes
                a.add(clip_a, stream_id=f"clip{i}")
            a.add(clip_a, stream_id="clip")
        finally:
            b.close()  # while A runs
        a_states_at_b_close = {s["state"] for s in a.status().values()}
        # B's controller and pool are gone; A's are untouched.
        apps = _apps()
        assert app_name("detector", pb) not in apps and app_name("detector", pa) in apps, apps
        assert not _controller_alive(controller_name(pb))
        assert _controller_alive(controller_name(pa))

        # The same prefix again while A runs: a typed error, and nothing of A's is adopted or redeployed.
        with pytest.raises(RuntimeAlreadyRunningError, match=f"prefix '{pa}' is already running"):
            Runtime(_settings(redis_server, data_dir, pa)).start()
        assert _controller_alive(controller_name(pa)) and app_name("detector", pa) in _apps()

        status = a.wait(timeout=90)
    finally:
        a.close()
    assert a_states_at_b_close & {"starting", "running", "waiting"}, a_states_at_b_close
    assert {s["state"] for s in status.values()} == {"done"} and len(status) == 5, status
    for sid in status:
        assert _segments(a.redis_url, pa, sid) == reference, sid
    assert app_name("detector", pa) not in _apps() and not _controller_alive(controller_name(pa))

    # Once A is closed its prefix is free again.
    again = Runtime(_settings(redis_server, data_dir, pa))
    again.start()
    again.close()
