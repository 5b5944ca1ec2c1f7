"""The segment store: event segments, per-stream watermarks and a live feed in Redis.

The key layout and the overlap index are in :mod:`.keys`, the live feed's reader in :mod:`.feed`,
the embedded Redis server in :mod:`.redis_server`.

Commits: ``commit`` writes the changed segments, their index entries (removing the stale ones an
earlier version of the same segment left), feed records, the meta and the watermark in ONE
MULTI/EXEC, under WATCH of the segments' keys. Segment ids are deterministic, so a replay overwrites;
a segment whose stored fields are already identical is skipped, so a replay writes no duplicate feed
record either (also when a reply was lost and redis-py retried the transaction).

Pictures: ``commit(…, thumbs={segment id: Thumbnail | None})`` writes (or deletes) segments' pictures
(:mod:`.thumbs`, key ``<prefix>:{<stream>}:thumb:<id>``) in the same MULTI/EXEC as the segments and the
watermark, so no segment is ever stored without its picture; retention deletes a segment's picture in
the transaction that deletes the segment, ``drop_stream`` with every other key of the stream.
:meth:`SegmentStore.thumbnail` reads one back (its JPEGs are bytes: read without decoding).

Counts: ``<prefix>:{<stream>}:counts`` (event → stored segments) is kept exact in the same transactions:
``commit`` adds one for each segment it creates (a replay or an update of a stored segment adds nothing),
retention takes one off for each segment it deletes, ``bulk_load`` counts each segment it creates
(a script per segment, so a reload counts nothing twice), and ``drop_stream`` deletes it with the rest.

Outages: ``SegmentStore.from_url`` configures redis-py's retry (exponential backoff on connection
errors and timeouts, health checks, socket timeouts), and every public method also retries as a
whole (:func:`.retry.retry_call`) until ``retry_deadline_s`` passes; all writes are idempotent, so
retrying never duplicates.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.client import NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from .errors import StoreError, StoreKeyError, StreamFencedError
from .feed import FeedRecord, feed_entry, read_feed, state_entry
from .keys import (
    DEFAULT_INDEX_CHUNK,
    KeyLayout,
    check_name,
    index_entries,
    iso,
    member_id_end,
    num,
    parse_dt,
    segment_fields,
    segment_from_fields,
    segment_from_member,
    text,
    text_dict,
)
from .retry import Backoff, retry_call
from .secrets import redact
from .thumbs import PROVISIONAL_TTL_S, Thumbnail
from .timebase import UNIX_EPOCH, parse_epoch, to_stream_seconds
from .types import Segment

if TYPE_CHECKING:
    from redis.cluster import RedisCluster

__all__ = ["CommitResult", "SegmentStore", "StreamInfo"]

T = TypeVar("T")

_RETRYABLE = (RedisConnectionError, RedisTimeoutError)
_BACKOFF = Backoff(initial_s=0.05, cap_s=1.0)

# bulk_load's write of one segment: KEYS = the segment's hash, the stream's counts; ARGV = the event,
# then the hash's fields and values. A segment that was not stored yet is counted.
_HSET_COUNTED = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


def _fields(d: dict[str, Any]) -> dict[FieldT, EncodableT]:
    """``d`` as redis-py's type for hash and stream fields (HSET mapping, XADD): its key type is a
    union in an invariant position, so a ``dict[str, str]`` is not accepted as it is."""
    return cast("dict[FieldT, EncodableT]", d)


@dataclass(frozen=True)
class CommitResult:
    """What one ``commit`` did: segments written, segments already identical, segments expired."""

    written: int
    unchanged: int
    expired: int = 0


@dataclass(frozen=True)
class StreamInfo:
    """A registered stream: its meta (epoch, source, head, status fields …) and watermark."""

    stream_id: str
    meta: dict[str, Any] = field(default_factory=dict)
    watermark: dict[str, Any] | None = None
    counts: dict[str, int] | None = None  # event → stored segments, where asked for (``streams(counts=True)``)

    @property
    def epoch(self) -> datetime:
        value = self.meta.get("epoch")
        return parse_dt(value) if value else UNIX_EPOCH


# set_status with a state: write the meta; if the state differs from the stored one, append a state
# record to the feed. KEYS: meta, feed. ARGV: new state (JSON), feed maxlen, n feed fields, the feed
# fields' names and values, then the meta fields' names and values.
_SET_STATUS_LUA = """
local old = redis.call('HGET', KEYS[1], 'state')
local n = tonumber(ARGV[3])
local entry = {}
for i = 4, 3 + 2 * n do entry[#entry + 1] = ARGV[i] end
local meta = {}
for i = 4 + 2 * n, #ARGV do meta[#meta + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(meta))
if old ~= ARGV[1] then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(entry))
  return 1
end
return 0
"""


class SegmentStore:
    """Segments, watermarks and a live feed in Redis (standalone or Cluster)."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        prefix: str = "lw",
        feed_maxlen: int = 10_000,
        index_chunk: float = DEFAULT_INDEX_CHUNK,
        retry_deadline_s: float = 60.0,
    ):
        keys = KeyLayout(prefix)
        if not (index_chunk > 0 and math.isfinite(index_chunk)):
            raise ValueError(f"index_chunk must be a positive number of seconds, got {index_chunk!r}")
        self.r = client
        self.keys = keys
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
        client: redis.Redis | RedisCluster
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

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    def key(self, stream_id: str, *parts: str) -> str:
        """``<prefix>:{<stream>}:<parts…>``: every key of a stream carries the same hash tag."""
        return self.keys.key(stream_id, *parts)

    @property
    def registry_key(self) -> str:
        return self.keys.registry

    def seg_key(self, stream_id: str, seg_id: str) -> str:
        return self.keys.seg(stream_id, seg_id)

    def idx_key(self, stream_id: str, event: str) -> str:
        return self.keys.idx(stream_id, event)

    def stream_keys(self, stream_id: str) -> list[str]:
        """Every key the store holds for a stream (SCAN on its prefix; for tests and tools)."""
        pattern = self.keys.scan_pattern(stream_id)
        return sorted(text(k) for k in self._retrying(lambda: list(self.r.scan_iter(match=pattern, count=1000))))

    # ---- retry ----------------------------------------------------------------------------------

    def _retrying(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (idempotent) until it succeeds or ``retry_deadline_s`` has passed."""
        try:
            return retry_call(fn, retry_on=_RETRYABLE, backoff=_BACKOFF, deadline_s=self.retry_deadline_s)
        except _RETRYABLE as exc:
            raise StoreError(f"Redis unreachable for {self.retry_deadline_s:.0f} s: {exc}") from exc

    # ---- registry, meta, status -----------------------------------------------------------------

    def register(self, stream_id: str, *, epoch: datetime | None = None, source: str | None = None) -> None:
        """Add a stream to the registry (idempotent), optionally recording its epoch and source."""
        meta: dict[str, str] = {}
        if epoch is not None:
            meta["epoch"] = json.dumps(iso(epoch))
        if source is not None:  # never credentials: ``${VAR}`` references stay, literal passwords are ***
            meta["source"] = json.dumps(redact(str(source)))
        meta_key = self.keys.meta(stream_id)

        def run() -> None:
            self.r.sadd(self.keys.registry, stream_id)
            if meta:
                self.r.hset(meta_key, mapping=_fields(meta))

        self._retrying(run)

    # ---- worker control ---------------------------------------------------------------------------

    def request_stop(self, stream_id: str, token: str, *, close_open: bool = False, ttl_s: float = 3600.0) -> None:
        """Ask the stream worker holding ``token`` to stop after the clip in hand (``close_open``: and to
        close its open segments, as for a removed camera). The request waits in the worker's control
        list (:meth:`KeyLayout.control`) until it reads it (:meth:`next_request`); a worker that never
        does (it died) leaves it to expire after ``ttl_s``."""
        key = self.keys.control(stream_id, token)
        body = json.dumps({"op": "stop", "close_open": bool(close_open)})

        def run() -> None:
            self.r.rpush(key, body)
            self.r.expire(key, max(1, int(ttl_s)))

        self._retrying(run)

    def next_request(self, stream_id: str, token: str, *, timeout_s: float) -> dict | None:
        """The next request for the worker holding ``token``, waiting up to ``timeout_s`` (a blocking
        BLPOP: no polling); None when none came. Not retried: a worker's caller tries again later."""
        res = self.r.blpop([self.keys.control(stream_id, token)], timeout=max(0.01, float(timeout_s)))
        if not res:
            return None
        try:
            body = json.loads(text(res[1]))
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def set_status(self, stream_id: str, **fields: Any) -> None:
        """Publish runtime fields (``status="running"``, ``lag_s=0.4``, ``fps=1.0`` …) into the meta."""
        if not fields:
            return
        now = time.time()
        mapping = {k: json.dumps(redact(v) if isinstance(v, str) else v, default=str) for k, v in fields.items()}
        mapping["updated_at"] = json.dumps(now)
        meta_key = self.keys.meta(stream_id)
        state = fields.get("state")
        if state is None:

            def run() -> None:
                self.r.sadd(self.keys.registry, stream_id)
                self.r.hset(meta_key, mapping=_fields(mapping))

        else:
            # A state change also goes to the live feed, in the same atomic step as the meta (a Lua
            # script on the stream's hash-tagged keys), so followers see each change once, in order.
            entry = state_entry(stream_id, str(state), redact(str(fields.get("reason") or "")), now)
            argv = [mapping["state"], str(self.feed_maxlen), str(len(entry))]
            argv += [x for kv in entry.items() for x in kv] + [x for kv in mapping.items() for x in kv]

            def run() -> None:
                self.r.sadd(self.keys.registry, stream_id)
                self.r.eval(_SET_STATUS_LUA, 2, meta_key, self.keys.feed(stream_id), *argv)

        self._retrying(run)

    def set_retention(self, stream_id: str, seconds: float | None) -> None:
        """Keep only segments ending within ``seconds`` of the stream's head; applied on every commit.
        ``None`` keeps everything."""
        meta_key = self.keys.meta(stream_id)
        if seconds is None:
            self._retrying(lambda: self.r.hdel(meta_key, "retention_s"))
        else:
            if not (seconds > 0 and math.isfinite(seconds)):
                raise ValueError(f"retention must be a positive number of seconds, got {seconds!r}")
            self._retrying(lambda: self.r.hset(meta_key, "retention_s", json.dumps(float(seconds))))

    def meta(self, stream_id: str) -> dict[str, Any]:
        raw = text_dict(self._retrying(lambda: self.r.hgetall(self.keys.meta(stream_id))))
        return {k: json.loads(v) for k, v in raw.items()}

    def metas(self, stream_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The meta of each of ``stream_ids`` in one round trip, not retried: a caller that polls status
        (the controller) asks again at its next poll instead of waiting out Redis' absence per stream."""
        pipe = self.r.pipeline(transaction=False)
        for sid in stream_ids:
            pipe.hgetall(self.keys.meta(sid))
        raws = pipe.execute() if stream_ids else []
        return {sid: {k: json.loads(v) for k, v in text_dict(raw).items()} for sid, raw in zip(stream_ids, raws)}

    def epoch(self, stream_id: str) -> datetime | None:
        value = self.meta(stream_id).get("epoch")
        return parse_dt(value) if value else None

    def watermark(self, stream_id: str) -> dict[str, Any] | None:
        """The watermark last committed with the stream's segments, or None if none was."""
        raw = text_dict(self._retrying(lambda: self.r.hgetall(self.keys.wm(stream_id))))
        if not raw:
            return None
        return {k: json.loads(v) for k, v in raw.items()}

    def stream_ids(self) -> list[str]:
        return sorted(text(x) for x in self._retrying(lambda: self.r.smembers(self.keys.registry)))

    def streams(self, *, counts: bool = False, watermarks: bool = True) -> list[StreamInfo]:
        """Registered streams with their meta (epoch, source, status, lag …) and watermark (None with
        ``watermarks=False``), and with ``counts=True`` their segment counts per event
        (:meth:`segment_counts`). Two round trips."""
        ids = self.stream_ids()
        parts = ["meta", *(["wm"] if watermarks else []), *(["counts"] if counts else [])]

        def run() -> list:
            pipe = self.r.pipeline(transaction=False)
            for sid in ids:
                for part in parts:
                    pipe.hgetall(self.keys.key(sid, part))
            return pipe.execute()

        res = self._retrying(run) if ids else []
        out = []
        for i, sid in enumerate(ids):
            got = dict(zip(parts, (text_dict(x) for x in res[len(parts) * i : len(parts) * (i + 1)])))
            meta = {k: json.loads(v) for k, v in got["meta"].items()}
            wm = ({k: json.loads(v) for k, v in got["wm"].items()} or None) if watermarks else None
            n = {k: int(v) for k, v in got["counts"].items()} if counts else None
            out.append(StreamInfo(sid, meta, wm, n))
        return out

    def segment_counts(self, stream_id: str) -> dict[str, int]:
        """The number of segments the stream holds, per event (an event whose segments all expired: 0)."""
        raw = text_dict(self._retrying(lambda: self.r.hgetall(self.keys.counts(stream_id))))
        return {k: int(v) for k, v in raw.items()}

    def claim(self, stream_id: str, token: str) -> None:
        """Make ``token`` the stream's one writer: from now on only commits with ``owner=token`` land
        (see :meth:`commit`). A worker claims its stream before it reads the watermark."""
        self._retrying(lambda: self.r.set(self.keys.key(stream_id, "owner"), token))

    def drop_stream(self, stream_id: str) -> int:
        """Delete every key of a stream (segments, index, counts, watermark, meta, feed) in ONE MULTI/EXEC,
        then unregister it. Returns the number of keys deleted.

        The keys are listed (SCAN) under WATCH of the stream's meta and watermark, which every commit
        writes: a commit that lands between the listing and EXEC aborts it and the whole drop runs
        again, so no segment of the old stream survives a drop. All keys share the stream's hash tag,
        so the transaction stays in one slot on Redis Cluster; the registry (another slot) is
        updated after EXEC."""
        check_name("stream id", stream_id)
        watched = [self.keys.meta(stream_id), self.keys.wm(stream_id)]

        def txn(pipe: redis.client.Pipeline) -> None:
            keys = self.stream_keys(stream_id)
            pipe.multi()
            for i in range(0, len(keys), 500):
                pipe.delete(*keys[i : i + 500])

        res = self._retrying(lambda: self.r.transaction(txn, *watched))
        self._retrying(lambda: self.r.srem(self.keys.registry, stream_id))
        return sum(int(x) for x in res or [])

    # ---- commit ---------------------------------------------------------------------------------

    def commit(
        self,
        stream_id: str,
        segments: Iterable[Segment],
        *,
        watermark: dict[str, Any] | None,
        epoch: datetime | None = None,
        source: str | None = None,
        owner: str | None = None,
        thumbs: Mapping[str, Thumbnail | None] | None = None,
    ) -> CommitResult:
        """Write (or overwrite) ``segments`` and the stream's ``watermark`` in one MULTI/EXEC.

        ``thumbs``: segment id → its pictures (:class:`~.thumbs.Thumbnail`; a ``provisional`` one, of a
        segment not announced yet, expires after :data:`~.thumbs.PROVISIONAL_TTL_S`), or None to delete
        them; written in the same transaction, whole (no field of an earlier picture stays). The picture of
        a segment in ``segments`` is written only with it: where the segment is already stored identically
        (a replay), its stored picture stays as it is.

        ``owner``: the token of the worker that claimed the stream (:meth:`claim`). A commit of a worker whose
        claim another worker took over since (an old worker still running while its replacement starts)
        is refused with :class:`StreamFencedError`, so two workers never interleave one stream's commits.

        Open segments are stored like closed ones (visible to queries) and are later overwritten by
        their closed version (same id). Idempotent. ``watermark=None`` leaves the watermark as is; a
        dict replaces it (values must be JSON-serialisable). Applies the stream's retention after.
        """
        check_name("stream id", stream_id)
        by_id: dict[str, Segment] = {}
        for seg in segments:
            if not isinstance(seg, Segment):
                raise TypeError(f"commit takes Segment objects, got {type(seg).__name__}")
            if seg.stream_id != stream_id:
                raise StoreKeyError(f"segment of stream {seg.stream_id!r} committed to stream {stream_id!r}")
            check_name("event name", seg.event)
            by_id[seg.id] = seg  # the last version of a segment in one batch wins
        chunk = self.index_chunk
        new_fields = {sid: segment_fields(seg, chunk) for sid, seg in by_id.items()}
        wm_mapping = None
        if watermark is not None:
            if not isinstance(watermark, dict) or not all(isinstance(k, str) for k in watermark):
                raise TypeError("the watermark must be a dict with string keys")
            wm_mapping = {k: json.dumps(v) for k, v in watermark.items()}  # fails before anything is sent
        if epoch is None and by_id:
            epoch = next(iter(by_id.values())).epoch
        thumb_writes: list[tuple[str, str, dict[str, Any] | None, bool]] = []
        for sid, th in (thumbs or {}).items():
            check_name("segment id", sid)
            if th is not None and not isinstance(th, Thumbnail):
                raise TypeError(f"thumbs maps segment ids to Thumbnail or None, got {type(th).__name__}")
            fields = None if th is None else th.fields()
            thumb_writes.append((sid, self.keys.thumb(stream_id, sid), fields, th is not None and th.provisional))

        ids = list(by_id)
        seg_keys = [self.keys.seg(stream_id, sid) for sid in ids]
        meta_key = self.keys.meta(stream_id)
        wm_key = self.keys.wm(stream_id)
        feed_key = self.keys.feed(stream_id)
        events_key = self.keys.events(stream_id)
        counts_key = self.keys.counts(stream_id)
        owner_key = self.keys.key(stream_id, "owner")
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
            rd.sadd(self.keys.registry, stream_id)
            if owner is not None:
                rd.get(owner_key)  # WATCHed already: a claim after this read aborts EXEC
            got = rd.execute(raise_on_error=False)
            if owner is not None:
                holder = text(got.pop())
                if holder != owner:
                    raise StreamFencedError(
                        f"stream {stream_id!r} was taken over by another worker; this one stops", stream_id=stream_id
                    )
            for x in got[:-1]:
                if isinstance(x, Exception):
                    raise x
            result["register_error"] = got[-1] if isinstance(got[-1], Exception) else None
            olds = [text_dict(x) for x in got[:-2]]
            head_raw, retention_raw = (text(x) for x in got[-2])
            head = json.loads(head_raw) if head_raw else None

            pipe.multi()
            written = unchanged = 0
            same: set[str] = set()
            for sid, key, old in zip(ids, seg_keys, olds):
                new = new_fields[sid]
                if old == new:
                    unchanged += 1
                    same.add(sid)
                    continue
                written += 1
                seg = by_id[sid]
                new_entries = index_entries(sid, new)
                if old:
                    old_entries = index_entries(sid, old)
                    stale = [m for m in old_entries if m not in new_entries]
                    if stale:
                        pipe.zrem(self.keys.idx(stream_id, old.get("event", seg.event)), *stale)
                pipe.hset(key, mapping=_fields(new))
                pipe.zadd(self.keys.idx(stream_id, seg.event), new_entries)
                pipe.sadd(events_key, seg.event)
                if not old:  # a new segment (ids are deterministic: a replay finds it stored)
                    pipe.hincrby(counts_key, seg.event, 1)
                if seg.state == "closed" and old.get("state") != "closed":
                    kind = "close"
                elif not old:
                    kind = "open"
                else:
                    kind = "update"
                pipe.xadd(feed_key, _fields(feed_entry(kind, sid, new)), maxlen=self.feed_maxlen, approximate=True)
                head = seg.end if head is None else max(head, seg.end)
            meta: dict[str, str] = {"committed_at": json.dumps(time.time())}
            if epoch is not None:
                meta["epoch"] = json.dumps(iso(epoch))
            if source is not None:
                meta["source"] = json.dumps(redact(str(source)))
            if head is not None:
                meta["head"] = json.dumps(head)
            pipe.hset(meta_key, mapping=_fields(meta))
            for sid, tkey, tfields, provisional in thumb_writes:
                if sid in same:  # a picture goes with its segment's write: a replay keeps the stored one
                    continue
                pipe.delete(tkey)  # whole: no field (or TTL) of an earlier picture stays
                if tfields is not None:
                    pipe.hset(tkey, mapping=_fields(tfields))
                    if provisional:
                        pipe.expire(tkey, PROVISIONAL_TTL_S)
            if wm_mapping is not None:
                pipe.delete(wm_key)
                if wm_mapping:
                    pipe.hset(wm_key, mapping=_fields(wm_mapping))
            result.update(
                written=written,
                unchanged=unchanged,
                head=head,
                retention=json.loads(retention_raw) if retention_raw else None,
            )

        watched = [*seg_keys, owner_key] if owner is not None else seg_keys
        self._retrying(lambda: self.r.transaction(txn, *watched))
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
        no transaction, no feed records, no stale-entry cleanup. Each segment's hash is written by a
        script that also counts it if it is new (:meth:`segment_counts` stays exact on a reload).
        Returns the number written."""
        check_name("stream id", stream_id)
        chunk = self.index_chunk
        events_key = self.keys.events(stream_id)
        counts_key = self.keys.counts(stream_id)
        n = 0
        buf: list[Segment] = []
        head = None

        def flush(items: list[Segment]) -> None:
            def run() -> None:
                pipe = self.r.pipeline(transaction=False)
                by_event: dict[str, dict[str, float]] = {}
                for seg in items:
                    sid = seg.id
                    fields = segment_fields(seg, chunk)
                    flat = [x for kv in fields.items() for x in kv]
                    # (EVAL through execute_command: a cluster pipeline has no eval method of its own)
                    pipe.execute_command(
                        "EVAL", _HSET_COUNTED, 2, self.keys.seg(stream_id, sid), counts_key, seg.event, *flat
                    )
                    by_event.setdefault(seg.event, {}).update(index_entries(sid, fields))
                for ev, entries in by_event.items():
                    pipe.zadd(self.keys.idx(stream_id, ev), entries)
                pipe.sadd(events_key, *by_event)
                pipe.execute()

            self._retrying(run)

        for seg in segments:
            if seg.stream_id != stream_id:
                raise StoreKeyError(f"segment of stream {seg.stream_id!r} loaded into stream {stream_id!r}")
            check_name("event name", seg.event)
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
            meta["epoch"] = json.dumps(iso(epoch))
        if head is not None:
            old = self.meta(stream_id).get("head")
            meta["head"] = json.dumps(head if old is None else max(old, head))
        if meta:
            self._retrying(lambda: self.r.hset(self.keys.meta(stream_id), mapping=_fields(meta)))
        self._retrying(lambda: self.r.sadd(self.keys.registry, stream_id))
        return n

    # ---- queries --------------------------------------------------------------------------------

    def index_entries(self, segment: Segment) -> dict[str, float]:
        """The overlap-index entries (member → score) this store writes for a segment."""
        return index_entries(segment.id, segment_fields(segment, self.index_chunk))

    def events(self, stream_id: str) -> list[str]:
        return sorted(text(x) for x in self._retrying(lambda: self.r.smembers(self.keys.events(stream_id))))

    def thumbnail(self, stream_id: str, seg_id: str) -> Thumbnail | None:
        """The pictures of a segment (:mod:`.thumbs`), or None where it has none."""
        key = self.keys.thumb(stream_id, check_name("segment id", seg_id))
        # JPEG bytes: this one reply is read undecoded, whatever the client's decode_responses
        raw = self._retrying(lambda: self.r.execute_command("HGETALL", key, **{NEVER_DECODE: []}))
        return Thumbnail.from_fields(raw) if raw else None

    def get(self, stream_id: str, seg_id: str) -> Segment | None:
        raw = text_dict(self._retrying(lambda: self.r.hgetall(self.keys.seg(stream_id, seg_id))))
        return segment_from_fields(raw) if raw else None

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
                pipe.hget(self.keys.meta(sid), "epoch")
            epochs = pipe.execute() if sids else []
            windows: dict[str | None, tuple[float, float]] = {}
            for sid, raw in zip(sids, epochs):
                ep = parse_dt(json.loads(text(raw))) if raw else UNIX_EPOCH
                lo = -math.inf if a is None else to_stream_seconds(ep, a)
                hi = math.inf if b is None else to_stream_seconds(ep, b)
                windows[sid] = (lo, hi)
            return self._query(None, event, windows, limit) if windows else []

        return self._retrying(run)

    def _query(
        self, stream: str | None, event: str | None, wanted: dict[str | None, tuple[float, float]], limit: int | None
    ) -> list[Segment]:
        """``wanted`` maps stream → (lo, hi); the key None means "the given stream, or all"."""
        windows: dict[str, tuple[float, float]]
        if None in wanted:
            lo_hi = wanted[None]
            sids = [stream] if stream is not None else self.stream_ids()
            windows = {sid: lo_hi for sid in sids}
        else:
            windows = {sid: w for sid, w in wanted.items() if sid is not None}
        if not windows:
            return []
        pairs: list[tuple[str, str]] = []
        if event is not None:
            check_name("event name", event)
            pairs = [(sid, event) for sid in windows]
        else:
            pipe = self.r.pipeline(transaction=False)
            for sid in windows:
                pipe.smembers(self.keys.events(sid))
            for sid, evs in zip(windows, pipe.execute()):
                pairs.extend((sid, text(ev)) for ev in sorted(evs))
        if not pairs:
            return []
        L = self.index_chunk
        pipe = self.r.pipeline(transaction=False)
        for sid, ev in pairs:
            lo, hi = windows[sid]
            mn = "-inf" if lo == -math.inf else num(lo - L - 1e-6 * L)
            mx = "+inf" if hi == math.inf else num(hi)
            pipe.zrangebyscore(self.keys.idx(sid, ev), mn, mx)
        out: list[Segment] = []
        seen: set[tuple[str, str]] = set()
        for (sid, ev), members in zip(pairs, pipe.execute()):
            lo, hi = windows[sid]
            for m in members:
                m = text(m)
                seg_id, end = member_id_end(m)
                if end < lo or (sid, seg_id) in seen:
                    continue
                seen.add((sid, seg_id))
                seg = segment_from_member(sid, ev, m)
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
        return read_feed(
            self.r,
            self.keys.feed(stream_id),
            self._retrying,
            last_id=last_id,
            count=count,
            block_ms=block_ms,
        )

    # ---- retention ------------------------------------------------------------------------------

    def expire_before(self, stream_id: str, t: float, *, batch: int = 500) -> int:
        """Delete the segments of a stream that end before ``t`` (stream seconds), with their index
        entries. Returns how many were deleted."""
        t = float(t)
        L = self.index_chunk
        deleted = 0
        for ev in self.events(stream_id):
            idx = self.keys.idx(stream_id, ev)
            # every entry of a segment that ends before t scores below t: scan the index up to t
            doomed: dict[str, None] = {}
            offset = 0
            page = 5000
            while True:
                members = self._retrying(
                    functools.partial(self.r.zrangebyscore, idx, "-inf", f"({num(t)}", start=offset, num=page)
                )
                for m in members:
                    seg_id, end = member_id_end(text(m))
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
        keys = [self.keys.seg(stream_id, sid) for sid in ids]
        counts_key = self.keys.counts(stream_id)
        count = [0]

        def txn(pipe: redis.client.Pipeline) -> None:
            rd = self.r.pipeline(transaction=False)
            for k in keys:
                rd.hgetall(k)
            rows = [text_dict(x) for x in rd.execute()]
            pipe.multi()
            n = 0
            for sid, key, old in zip(ids, keys, rows):
                if not old or float(old["end"]) >= t:
                    continue  # gone, or grew since the scan
                pipe.zrem(self.keys.idx(stream_id, old["event"]), *index_entries(sid, old))
                pipe.delete(key, self.keys.thumb(stream_id, sid))
                pipe.hincrby(counts_key, old["event"], -1)
                n += 1
            count[0] = n

        self._retrying(lambda: self.r.transaction(txn, *keys))
        return count[0]
