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

__all__ = ["SEGMENT_KINDS", "STATE", "FeedRecord", "feed_entry", "read_feed", "records_from", "state_entry"]


SEGMENT_KINDS = ("open", "update", "close")
STATE = "state"


@dataclass(frozen=True)
class FeedRecord:
    """One live-feed record: ``kind`` is ``open`` (a new open segment), ``update`` (an open segment
    grew, or a stored segment changed), ``close`` (a segment reached its closed state), each with its
    ``segment``; or ``state`` (the stream's state changed), with ``status`` (``stream``, ``state``,
    ``reason``, ``at``) and no segment."""

    id: str
    kind: str
    segment: Segment | None = None
    status: dict[str, Any] | None = None

    @property
    def stream_id(self) -> str:
        if self.segment is not None:
            return self.segment.stream_id
        return str((self.status or {}).get("stream", ""))


def feed_entry(kind: str, seg_id: str, fields: dict[str, str]) -> dict[str, str]:
    """The fields of the feed record (XADD) for a segment written with ``fields``."""
    return {"kind": kind, "id": seg_id, **fields}


def state_entry(stream_id: str, state: str, reason: str, at: float) -> dict[str, str]:
    """The fields of the feed record (XADD) for a stream whose state became ``state``."""
    return {"kind": STATE, "stream": stream_id, "state": state, "reason": reason, "at": repr(float(at))}


def records_from(entries: list) -> list[FeedRecord]:
    """Feed records from XREAD / XRANGE entries (``(id, fields)`` pairs)."""
    out = []
    for entry_id, fields in entries:
        f = text_dict(fields)
        kind = f.pop("kind", "")
        if kind == STATE:
            status: dict[str, Any] = {"stream": f.get("stream", ""), "state": f.get("state", "")}
            status.update(reason=f.get("reason", ""), at=float(f.get("at", "0") or 0))
            out.append(FeedRecord(text(entry_id), kind, None, status))
        elif kind in SEGMENT_KINDS:
            out.append(FeedRecord(text(entry_id), kind, segment_from_fields(f)))
    return out


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
    return [rec for _key, entries in res or [] for rec in records_from(entries)]
