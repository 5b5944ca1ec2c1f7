"""The segment store's key layout and overlap index: key names, name checks, and how a segment is
encoded as a Redis hash and as index members.

Key layout (``lw`` is the configurable prefix; ``{cam3}`` is the stream's Redis Cluster hash tag, so
every key of one stream lives in one slot and a stream's transaction never crosses slots)::

    lw:streams                  set     registry of stream ids (the only key outside a stream's slot)
    lw:{cam3}:meta              hash    epoch, source, head, retention_s, status fields (JSON values)
    lw:{cam3}:wm                hash    the watermark: an arbitrary small dict (JSON values)
    lw:{cam3}:events            set     event names that have an index
    lw:{cam3}:counts            hash    event → number of stored segments (kept in the commit's MULTI)
    lw:{cam3}:seg:<id>          hash    one segment: stream, event, start, end, epoch, score, state, UTC
    lw:{cam3}:idx:<event>       zset    overlap index (below)
    lw:{cam3}:thumb:<id>        hash    the segment's pictures (:mod:`.thumbs`): best frame JPEG (+ box), strip
                                        frames; written in the commit of its segment, deleted with it
    lw:{cam3}:feed              stream  open / update / close records (XADD, approximate MAXLEN)

Overlap index: a segment [a, b] gets one entry per ``index_chunk`` (L) seconds of its length, score
``a + k·L`` for k = 0 … floor((b − a) / L). Every entry then stands for a piece no longer than L, so the
segments overlapping [t0, t1] are exactly those with an entry scored in [t0 − L, t1] and an end ≥ t0:
``ZRANGEBYSCORE idx (t0 − L) t1`` is O(log n + k). The member carries the segment's fields
(``<id>|<k>|<end>|<start>|<score>|<state>|<epoch>``), so the end filter, the dedupe by id and the
answer itself need no second round trip; the hash stays the canonical record (``get``, stale-entry
removal, retention). L must be the same for every writer and reader of a prefix.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.crc import key_slot as _redis_key_slot

from .errors import StoreKeyError
from .timebase import parse_epoch
from .types import Segment

__all__ = [
    "DEFAULT_INDEX_CHUNK",
    "KeyLayout",
    "check_name",
    "index_entries",
    "iso",
    "key_slot",
    "member_id_end",
    "num",
    "parse_dt",
    "segment_fields",
    "segment_from_fields",
    "segment_from_member",
    "text",
    "text_dict",
]

DEFAULT_INDEX_CHUNK = 300.0


# --------------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------------


def text(value: Any) -> Any:
    """bytes → str (for clients made without ``decode_responses``)."""
    return value.decode() if isinstance(value, (bytes, bytearray)) else value


def text_dict(mapping: dict | None) -> dict[str, str]:
    return {text(k): text(v) for k, v in (mapping or {}).items()}


@functools.lru_cache(maxsize=256)
def parse_dt(value: str) -> datetime:
    dt = parse_epoch(value)
    assert dt is not None
    return dt


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def num(x: float) -> str:
    """A float as the shortest string that reads back to the same float."""
    return repr(float(x))


# --------------------------------------------------------------------------------------------------
# key names
# --------------------------------------------------------------------------------------------------


def key_slot(key: str | bytes) -> int:
    """The Redis Cluster hash slot of a key (CRC16/XMODEM of its hash tag, mod 16384)."""
    return _redis_key_slot(key.encode() if isinstance(key, str) else bytes(key))


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not name:
        raise StoreKeyError(f"a {kind} must be a non-empty string, got {name!r}")
    if "{" in name or "}" in name:
        raise StoreKeyError(f"a {kind} cannot contain '{{' or '}}' (they delimit the hash tag): {name!r}")
    return name


@dataclass(frozen=True)
class KeyLayout:
    """The names of a prefix's keys (see the module docstring)."""

    prefix: str = "lw"

    def __post_init__(self) -> None:
        if not self.prefix or "{" in self.prefix or "}" in self.prefix:
            raise StoreKeyError(f"the key prefix must be non-empty and hold no braces, got {self.prefix!r}")

    def key(self, stream_id: str, *parts: str) -> str:
        """``<prefix>:{<stream>}:<parts…>``: every key of a stream carries the same hash tag."""
        check_name("stream id", stream_id)
        return ":".join((self.prefix, "{" + stream_id + "}", *parts))

    @property
    def registry(self) -> str:
        return f"{self.prefix}:streams"

    def meta(self, stream_id: str) -> str:
        return self.key(stream_id, "meta")

    def wm(self, stream_id: str) -> str:
        return self.key(stream_id, "wm")

    def events(self, stream_id: str) -> str:
        return self.key(stream_id, "events")

    def feed(self, stream_id: str) -> str:
        return self.key(stream_id, "feed")

    def counts(self, stream_id: str) -> str:
        return self.key(stream_id, "counts")

    def control(self, stream_id: str, token: str) -> str:
        """A stream worker's control list (requests from its controller, see
        :meth:`.SegmentStore.request_stop`); ``token``: the worker's own, so no other worker of the
        stream ever reads a request meant for this one."""
        return self.key(stream_id, "ctl", check_name("control token", token))

    def seg(self, stream_id: str, seg_id: str) -> str:
        return self.key(stream_id, "seg", seg_id)

    def thumb(self, stream_id: str, seg_id: str) -> str:
        """The segment's pictures (:mod:`.thumbs`): a hash beside the segment's, never in its fields, so
        ``segment_from_fields`` and the overlap index are untouched."""
        return self.key(stream_id, "thumb", seg_id)

    def idx(self, stream_id: str, event: str) -> str:
        return self.key(stream_id, "idx", check_name("event name", event))

    def scan_pattern(self, stream_id: str) -> str:
        """A SCAN ``MATCH`` pattern for every key of a stream (glob characters escaped)."""
        base = self.key(stream_id)
        return base.replace("[", "\\[").replace("]", "\\]").replace("*", "\\*").replace("?", "\\?") + ":*"


# --------------------------------------------------------------------------------------------------
# segments as hash fields and index members
# --------------------------------------------------------------------------------------------------


def segment_fields(seg: Segment, chunk: float) -> dict[str, str]:
    return {
        "stream": seg.stream_id,
        "event": seg.event,
        "start": num(seg.start),
        "end": num(seg.end),
        "epoch": iso(seg.epoch),
        "score": num(seg.score),
        "state": seg.state,
        "start_utc": iso(seg.start_utc),
        "end_utc": iso(seg.end_utc),
        "ix": num(chunk),
    }


def segment_from_fields(f: dict[str, str]) -> Segment:
    return Segment(
        stream_id=f["stream"],
        event=f["event"],
        start=float(f["start"]),
        end=float(f["end"]),
        epoch=parse_dt(f["epoch"]),
        score=float(f.get("score", 0.0)),
        state=f.get("state", "closed"),
    )


def index_entries(seg_id: str, f: dict[str, str]) -> dict[str, float]:
    """member → score for one segment's overlap-index entries, from its stored fields.

    The member carries the segment's own fields (``id|k|end|start|score|state|epoch``), so a query
    builds its answer from the index alone, in one round trip; it is rebuilt from the stored hash
    to find and remove the entries of an earlier version.
    """
    start, end, chunk = float(f["start"]), float(f["end"]), float(f["ix"])
    n = int(math.floor((end - start) / chunk)) + 1 if end > start else 1
    tail = "|".join((f["end"], f["start"], f["score"], f["state"], f["epoch"]))
    return {f"{seg_id}|{k}|{tail}": start + k * chunk for k in range(n)}


def member_id_end(member: str) -> tuple[str, float]:
    seg_id, _k, end, _ = member.split("|", 3)
    return seg_id, float(end)


def segment_from_member(stream_id: str, event: str, member: str) -> Segment:
    _id, _k, end, start, score, state, epoch = member.split("|", 6)
    return Segment(stream_id, event, float(start), float(end), parse_dt(epoch), float(score), state)
