"""Multi-node: the runtime joins a real two-node Ray cluster by address and spreads its streams.

``ray.cluster_utils.Cluster`` starts a real head node (GCS + raylet) and a second raylet on 127.0.0.1,
each with one CPU and a custom resource of its own (``lw_head`` / ``lw_worker``), in a private short
temp dir. The :class:`actors.runtime.Runtime` connects to it through ``Settings.runtime.ray_address``
(``init_ray(address)``), with a real Redis server, the real CPU detector and two real files.

Placement is forced with resources only (no change to ``actors/``): stream workers ask for one CPU
(``worker_num_cpus=1``) and the model pool for none (``model_num_cpus=0``), so with one CPU per node the
two workers cannot share a node. Where each worker ran is read three ways that must agree: the
worker's own ``pid()``, the GCS actor table (node id + pid), and the worker process's parent, which is
the raylet of the node that spawned it.

The two-node test runs on ``demo`` (bikes.mp4 and bikes.mp4 × 6, real footage the project fetches
itself) and on ``footage`` (the team's bikes.mp4 and car-detection.mp4, where ../shared/footage is).

The node-removal drill runs bikes.mp4 × 6 once undisturbed. Then it takes the cluster down to its head,
starts the runtime there (so its controller and model pool are on the head), holds the head's CPU with
an actor, adds two worker nodes (three nodes, one CPU each) and, mid-file, removes the worker node that
hosts the stream's worker (``Cluster.remove_node``): Ray restarts the worker on the other worker node,
the runtime resumes it from the watermark, and the segments are those of the undisturbed run. The
cluster is head + one worker node again afterwards.

This module starts and stops its own Ray: it shuts down any Ray already initialised in the pytest
process first, and leaves none behind (tests/test_runtime.py starts its own local instance).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid

import pytest
from conftest import footage_file

ray = pytest.importorskip("ray")

from longwatch.pipeline.config import Settings  # noqa: E402
from longwatch.pipeline.store import SegmentStore  # noqa: E402

HEAD_RES, WORKER_RES, SPARE_RES = "lw_head", "lw_worker", "lw_spare"
FILES = {"bikes": "bikes.mp4", "cars": "car-detection.mp4"}  # 10 s and 30 s of real street footage


def _disconnect() -> None:
    if ray.is_initialized():
        try:
            from ray import serve

            serve.shutdown()
        except Exception:
            pass
        ray.shutdown()


@pytest.fixture(scope="module", params=["demo", "footage"])
def clips(request):
    """Two real street files: ``demo``, bikes.mp4 and bikes.mp4 × 6 (fetched by the project itself);
    ``footage``, the team's bikes.mp4 and car-detection.mp4 (skipped, with the reason, where absent)."""
    if request.param == "demo":
        return {"bikes": request.getfixturevalue("demo_clip"), "long": request.getfixturevalue("demo_long")}
    return {sid: footage_file(name) for sid, name in FILES.items()}


@pytest.fixture(scope="module")
def cluster():
    """Head + one worker node on 127.0.0.1, one CPU and one custom resource each; the driver is NOT connected."""
    from ray.cluster_utils import Cluster

    _disconnect()  # never two Ray instances in one pytest process
    tmp = tempfile.mkdtemp(prefix="lwc-", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 bytes
    env = pytest.MonkeyPatch()
    env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # for the Ray processes started from here on
    # Ray reads that variable once, at import: where ``ray`` was imported before it was set (collection
    # imports other test modules first), the head would advertise the host's address while its GCS
    # listens on 127.0.0.1. Apply it to this process too.
    from ray._private import ray_constants

    env.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    env.setenv("RAY_AUTH_MODE", "disabled")
    env.setenv("RAY_TMPDIR", tmp)
    env.delenv("RAY_ADDRESS", raising=False)
    for var in [v for v in os.environ if v.startswith("LONGWATCH_")]:
        env.delenv(var)
    c = None
    try:
        common = dict(num_cpus=1, node_ip_address="127.0.0.1", temp_dir=os.path.join(tmp, "ray"))
        os.makedirs(common["temp_dir"])
        c = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args=dict(resources={HEAD_RES: 1}, include_dashboard=False, **common),
        )
        c.add_node(resources={WORKER_RES: 1}, **common)
        c.wait_for_nodes(timeout=60)
        c.lw_node_args = common  # for a test that adds nodes of its own
        yield c
    finally:
        _disconnect()
        if c is not None:
            c.shutdown()
        env.undo()
        shutil.rmtree(tmp, ignore_errors=True)


def _node_ids(c) -> dict[str, str]:
    """Cluster node object -> its Ray node id, by custom resource name."""
    return {HEAD_RES: c.head_node.node_id, WORKER_RES: next(iter(c.worker_nodes)).node_id}


def _raylet_pids(c) -> dict[int, str]:
    from ray._private import ray_constants

    out = {}
    for node in c.list_all_nodes():
        for info in node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, []):
            out[info.process.pid] = node.node_id
    return out


def _placement(rt, sid: str) -> dict:
    """Where a stream worker runs. Read while it is alive: its own pid (as its heartbeat writes it into
    the stream's status: a call to the worker would wait for its run() to end), the GCS actor table's
    node id and pid, and the pid of its parent process (the raylet of its node). Should the worker
    already be gone (a controller that frees finished workers), the GCS record of the dead actor still
    names its node and pid, and the parent check is skipped."""
    import psutil
    from ray._private import state

    handle = rt.worker(sid)
    out = {"pid": None, "raylet_pid": None}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = rt.store.meta(sid)
        if meta.get("pid") or meta.get("state") in ("done", "failed", "stopped"):
            break
        time.sleep(0.1)
    try:
        if meta.get("pid"):
            out["raylet_pid"] = psutil.Process(int(meta["pid"])).ppid()
            out["pid"] = int(meta["pid"])
    except psutil.NoSuchProcess:
        pass
    info = state.actors(actor_id=handle._actor_id.hex())
    out.update(gcs_pid=info["Pid"], node_id=info["Address"]["NodeID"], state=info["State"])
    return out


@pytest.mark.timeout(240)
def test_two_files_on_a_two_node_cluster(clips, cluster, redis_server, tmp_path):
    from longwatch.actors.model_pool import handle as pool_handle
    from longwatch.actors.runtime import Runtime

    settings = Settings()
    settings = settings.model_copy(
        update={
            "runtime": settings.runtime.model_copy(
                update={
                    "ray_address": cluster.address,
                    "redis_url": redis_server.url,
                    "data_dir": str(tmp_path / "data"),
                    "redis_prefix": f"c{uuid.uuid4().hex[:8]}",
                    "worker_num_cpus": 1.0,
                    "model_num_cpus": 0.0,
                }
            )
        }
    )
    assert not ray.is_initialized()
    t0 = time.perf_counter()
    rt = Runtime(settings).start()
    try:
        # Joined THIS cluster as a driver: no second local instance was started.
        assert rt._started_ray is True
        assert ray.get_runtime_context().gcs_address == cluster.address
        driver_node = ray._private.worker.global_worker.node
        assert driver_node.session_name == cluster.head_node.session_name
        assert driver_node.raylet_socket_name in {n.raylet_socket_name for n in cluster.list_all_nodes()}
        alive = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        ids = _node_ids(cluster)
        assert set(alive) == set(ids.values()), alive
        assert alive[ids[HEAD_RES]].get(HEAD_RES) == 1 and alive[ids[WORKER_RES]].get(WORKER_RES) == 1

        for sid, path in clips.items():
            rt.add(str(path), stream_id=sid)
        placed = {sid: _placement(rt, sid) for sid in clips}  # while they work
        status = rt.wait(timeout=150)
        elapsed = time.perf_counter() - t0
        pool = pool_handle(prefix=settings.runtime.redis_prefix).stats.remote().result()
    finally:
        rt.close()
    assert not ray.is_initialized()  # the runtime disconnected the driver it connected

    for sid in clips:
        assert status[sid]["state"] == "done", status[sid]
        assert status[sid]["restarts"] == 0, status[sid]

    # Each worker ran on its own node, and three independent views of that agree.
    raylets = _raylet_pids(cluster)
    by_node = {}
    for sid, p in placed.items():
        if p["pid"] is not None:
            assert p["pid"] == p["gcs_pid"], p
            assert raylets.get(p["raylet_pid"]) == p["node_id"], (sid, p, raylets)  # workers are raylet children
        by_node[sid] = p["node_id"]
    assert set(by_node.values()) == set(_node_ids(cluster).values()), (by_node, _node_ids(cluster))

    # One model pool scored both streams' clips; segments and watermarks are in Redis.
    clips_total = sum(int(status[sid].get("clips") or 0) for sid in clips)
    assert clips_total > 0 and pool["clips"] >= clips_total, (pool, status)
    store = SegmentStore.from_url(redis_server.url, prefix=settings.runtime.redis_prefix)
    try:
        for sid in clips:
            segs = store.query(stream=sid)
            assert segs, f"no segments for {sid}: {status[sid]}"
            assert all(s.state == "closed" and s.end >= s.start for s in segs), segs  # scene cuts are instants
            assert (store.watermark(sid) or {}).get("clip_index", -1) >= 0
        events = {sid: sorted({s.event for s in store.query(stream=sid)}) for sid in clips}
        assert all("car_present" in ev for ev in events.values()), events  # street scenes, both
    finally:
        store.close()
    print(f"two files on two nodes in {elapsed:.1f} s: {by_node}, pool {pool}, events {events}")


@pytest.mark.timeout(60)
def test_init_ray_joins_the_cluster_from_RAY_ADDRESS(cluster, monkeypatch):
    """``RAY_ADDRESS`` (what Ray's job supervisor sets for a RayJob's driver) joins the cluster the same way."""
    from longwatch.actors.runtime import init_ray

    _disconnect()
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    try:
        assert init_ray() is True
        assert ray.get_runtime_context().gcs_address == cluster.address
        assert ray.cluster_resources().get(WORKER_RES) == 1 and ray.cluster_resources().get("CPU") == 2
        assert init_ray() is False  # already connected: nothing new
    finally:
        ray.shutdown()


# ---- node removal ------------------------------------------------------------------------------


@pytest.fixture
def restored(cluster):
    """The module's cluster, for a test that removes and adds nodes: afterwards it is put back as the
    module's other tests expect, head + one (new) node with ``lw_worker``."""
    try:
        yield cluster
    finally:
        _disconnect()
        for node in list(cluster.worker_nodes):
            cluster.remove_node(node)
        cluster.add_node(resources={WORKER_RES: 1}, **cluster.lw_node_args)
        cluster.wait_for_nodes(timeout=60)


def _actor(handle) -> dict:
    from ray._private import state

    return state.actors(actor_id=handle._actor_id.hex())


def _wait_for(what: str, check, timeout: float = 90.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (got := check()) is not None:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.mark.timeout(300)
def test_a_worker_node_removed_mid_file_reschedules_its_stream_with_identical_segments(
    restored, demo_long, redis_server, tmp_path
):
    """Three nodes (head + two worker nodes, one CPU each). The runtime starts while the head is the
    only node, so its controller and model pool are there (a 0-CPU actor may land on any node: this
    drill is about a stream worker's node, not theirs); a real actor holds the head's CPU, then the two
    worker nodes join and the stream's worker lands on one of them. That node is removed mid-file."""
    from ray._private import state

    from longwatch.actors.runtime import Runtime

    cluster, sid = restored, "street"
    head_id = cluster.head_node.node_id
    base = Settings()

    def settings(prefix: str) -> Settings:
        runtime = base.runtime.model_copy(
            update={
                "ray_address": cluster.address,
                "redis_url": redis_server.url,
                "data_dir": str(tmp_path / "data"),
                "redis_prefix": prefix,
                "worker_num_cpus": 1.0,
                "model_num_cpus": 0.0,
            }
        )
        # 2 s clips: 31 watermarks in the minute of footage, so the removal lands well inside it.
        sampler = base.sampler.model_copy(update={"clip_seconds": 2})
        return base.model_copy(update={"runtime": runtime, "sampler": sampler})

    def results(prefix: str) -> tuple[list, dict]:
        store = SegmentStore.from_url(redis_server.url, prefix=prefix)
        try:
            return store.query(stream=sid), store.watermark(sid) or {}
        finally:
            store.close()

    # The reference: the file once, undisturbed, on the cluster as the module has it.
    t0 = time.perf_counter()
    ref_prefix = f"r{uuid.uuid4().hex[:8]}"
    rt = Runtime(settings(ref_prefix)).start()
    try:
        rt.add(str(demo_long), stream_id=sid)
        ref_status = rt.wait(timeout=150)[sid]
    finally:
        rt.close()
    reference, ref_wm = results(ref_prefix)
    t1 = time.perf_counter()

    # The drill: head alone, the runtime starts there; its CPU held; two worker nodes join.
    for node in list(cluster.worker_nodes):
        cluster.remove_node(node)
    cluster.wait_for_nodes(timeout=60)
    prefix = f"d{uuid.uuid4().hex[:8]}"
    rt = Runtime(settings(prefix)).start()
    try:

        @ray.remote(num_cpus=1, resources={HEAD_RES: 1})
        class HoldHeadCpu:
            def ready(self) -> bool:
                return True

        hold = HoldHeadCpu.remote()
        ray.get(hold.ready.remote(), timeout=60)
        workers = [cluster.add_node(resources={SPARE_RES: 1}, **cluster.lw_node_args) for _ in range(2)]
        cluster.wait_for_nodes(timeout=60)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 3
        rt.add(str(demo_long), stream_id=sid)
        handle = rt.worker(sid)

        def placed(not_on: str | None = None) -> dict | None:  # the worker's GCS record once it is up
            info = _actor(handle)
            alive = info and info["State"] == "ALIVE" and info["Address"]["NodeID"] != not_on
            return info if alive else None

        info = _wait_for("the stream worker to start", placed)
        node_id = info["Address"]["NodeID"]
        node = next(n for n in workers if n.node_id == node_id)
        # Only the stream worker is ours on that node: the controller and the pool are on the head.
        neighbours = [
            a["ActorClassName"]
            for a in state.actors().values()
            if a["State"] == "ALIVE" and a["Address"]["NodeID"] == node_id and a["ActorID"] != info["ActorID"]
        ]
        assert neighbours == [], neighbours
        store = SegmentStore.from_url(redis_server.url, prefix=prefix)

        def committed(n: int = 4) -> int | None:
            index = (store.watermark(sid) or {}).get("clip_index", -1)
            return index if index >= n else None

        try:
            mark = _wait_for("the worker to commit 4 clips", committed, every=0.05)
        finally:
            store.close()
        t_remove = time.monotonic()
        cluster.remove_node(node)
        removed_s = time.monotonic() - t_remove
        moved = _wait_for("Ray to restart the worker on another node", lambda: placed(not_on=node_id))
        moved_s = time.monotonic() - t_remove
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        status = rt.wait(timeout=150)[sid]
    finally:
        rt.close()
    segs, wm = results(prefix)
    t2 = time.perf_counter()

    assert ref_status["state"] == "done" and ref_status["restarts"] == 0, ref_status
    # The worker's node went away mid-file; Ray put the worker on the other worker node (the head's CPU
    # is held), and the runtime resumed it there from the watermark.
    other = next(n.node_id for n in workers if n is not node)
    assert node_id not in alive and moved["Address"]["NodeID"] == other and other != head_id, (moved, alive)
    assert moved["NumRestarts"] == 1, moved  # one new worker process: the actor, restarted by Ray
    assert 4 <= mark < ref_wm["clip_index"] - 5, (mark, ref_wm)
    assert status["state"] == "done", status
    assert wm["clip_index"] == ref_wm["clip_index"] and wm["footage_s"] == ref_wm["footage_s"], (wm, ref_wm)
    # Exactly once: the same segments as the undisturbed run, ids and all; nothing lost or doubled.
    assert {s.event for s in reference} >= {"person_present", "car_present", "scene_cut"}, reference
    same = sorted((s.id, s.event, s.start, s.end, s.score, s.state) for s in reference)
    assert sorted((s.id, s.event, s.start, s.end, s.score, s.state) for s in segs) == same
    assert len({s.id for s in segs}) == len(segs)
    assert status["restarts"] == 1, status  # the runtime counted the worker's death (as for a crash)
    print(
        f"node removal: reference {t1 - t0:.1f} s, drill {t2 - t1:.1f} s; node removed at clip {mark} "
        f"in {removed_s:.1f} s, the worker up on the other node {moved_s:.1f} s after the removal began"
    )
