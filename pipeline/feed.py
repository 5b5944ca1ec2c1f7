"""The live feed: one Redis Stream per stream (``<prefix>:{<stream>}:feed``) of open / update / close
records, which :meth:`SegmentStore.commit` appends inside its transaction and
:meth:`SegmentStore.feed` reads back with :func:`read_feed`."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from .keys import segment_from_fields, text, text_dict
from .types import Segment

if TYPE_CHECKING:
    from redis.cluster import RedisCluster

__all__ = ["FeedRecord", "feed_entry", "read_feed"]


@dataclass(frozen=True)
class FeedRecord:
    """One live-feed record: ``kind`` is ``open`` (a new open segment), ``update`` (an open segment
    grew, or a stored segment changed) or ``close`` (a segment reached its closed state)."""

    id: str
    kind: str
    segment: Segment

    @property
    def stream_id(self) -> str:
        return self.segment.stream_id


def feed_entry(kind: str, seg_id: str, fields: dict[str, str]) -> dict[str, str]:
    """The fields of the feed record (XADD) for a segment written with ``fields``."""
    return {"kind": kind, "id": seg_id, **fields}


def read_feed(
    client: redis.Redis | RedisCluster,
    feed_key: str,
    retrying: Callable[[Callable[[], Any]], Any],
    *,
    last_id: str = "0-0",
    count: int = 100,
    block_ms: int | None = None,
) -> list[FeedRecord]:
    """Records of ``feed_key`` after ``last_id`` (``"$"`` = only new ones), oldest first; each Redis
    call goes through ``retrying``. ``block_ms`` waits up to that long for a record when there is
    none, in XREAD slices shorter than the client's socket timeout."""
    if last_id == "$":
        # resolve "$" once, so that slicing a long block into several XREADs misses nothing
        info = retrying(lambda: client.xrevrange(feed_key, count=1))
        last_id = text(info[0][0]) if info else "0-0"
    if isinstance(client, redis.Redis):
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    else:
        # A RedisCluster has no connection_pool of its own; its nodes' connections are made from
        # nodes_manager.connection_kwargs. (Without this a cluster client always blocked in 5 s
        # slices, past a socket_timeout <= 5 s: every XREAD timed out and was retried until the
        # store gave up, so feed(block_ms=…) on a cluster hung for a minute and raised StoreError.)
        manager = getattr(client, "nodes_manager", None)
        timeout = getattr(manager, "connection_kwargs", {}).get("socket_timeout")
    slice_ms = int(max(100, (timeout - 1.0) * 1000)) if timeout else 5000
    deadline = time.monotonic() + (block_ms or 0) / 1000.0
    while True:
        remaining = int((deadline - time.monotonic()) * 1000)
        blk = None if block_ms is None else max(1, min(slice_ms, remaining))
        res = retrying(functools.partial(client.xread, {feed_key: last_id}, count=count, block=blk))
        if res or block_ms is None or time.monotonic() >= deadline:
            break
    out = []
    for _key, entries in res or []:
        for entry_id, fields in entries:
            f = text_dict(fields)
            out.append(FeedRecord(text(entry_id), f.pop("kind"), segment_from_fields(f)))
    return out
