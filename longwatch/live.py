"""The live feed as Server-Sent Events (``GET /api/v1/events/live``).

Every stream's feed is a Redis Stream of ``open`` / ``update`` / ``close`` segment records and ``state``
records (see :mod:`longwatch.pipeline.feed`). Each SSE connection keeps its own position in each
stream's feed and sends what lies after it, oldest first per stream; each SSE ``id`` is a cursor of all
those positions, so a client that reconnects with ``Last-Event-ID`` (or ``?since=``) gets exactly what
it missed, nothing twice.

One :class:`FeedHub` per API process waits on all the feeds at once (a blocking ``XREAD`` over every
stream's feed on a standalone Redis; short polls on a Redis Cluster, whose ``XREAD`` cannot span slots)
and wakes every connection when anything arrives, so any number of clients cost one waiting reader,
and a commit reaches them without a polling delay.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from longwatch.pipeline.feed import FeedRecord, records_from
from longwatch.pipeline.keys import text
from longwatch.pipeline.query import Filters
from longwatch.pipeline.store import SegmentStore

from .views import segment_json

log = logging.getLogger(__name__)

REFRESH_S = 2.0  # how often the list of streams is re-read (a new stream is followed from its start)
BATCH = 200


class CursorError(ValueError):
    """A ``Last-Event-ID`` / ``since`` that is not a cursor this feed gave out."""


def encode_cursor(positions: dict[str, str]) -> str:
    raw = json.dumps(positions, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        positions = json.loads(raw)
    except ValueError:
        raise CursorError("Last-Event-ID / since is not a cursor this feed gave out") from None
    if not isinstance(positions, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _is_entry_id(v) for k, v in positions.items()
    ):
        raise CursorError("Last-Event-ID / since is not a cursor this feed gave out")
    return positions


def _is_entry_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and seq.isdigit() and len(value) < 48


class FeedHub:
    """Wakes the SSE connections of one process when any stream's feed grows (see the module doc)."""

    def __init__(self, store: SegmentStore, *, block_ms: int = 1000):
        self.store = store
        self.block_ms = block_ms
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._thread = threading.Thread(target=self._watch, name="feed-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    async def wait(self, timeout: float) -> None:
        """Until something new may be in a feed, or ``timeout`` seconds."""
        if self._event is None:  # not started (an app used without its lifespan): poll
            await asyncio.sleep(min(timeout, 0.5))
            return
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass

    def _wake(self) -> None:
        assert self._event is not None
        self._event.set()
        self._event = asyncio.Event()  # the next wait() waits for the next news

    def _news(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def _watch(self) -> None:
        r, keys = self.store.r, self.store.keys
        standalone = hasattr(r, "connection_pool")
        positions: dict[str, str] = {}
        refreshed = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - refreshed > REFRESH_S:
                    refreshed = time.monotonic()
                    new = [sid for sid in self.store.stream_ids() if keys.feed(sid) not in positions]
                    for sid in new:
                        head = r.xrevrange(keys.feed(sid), count=1)
                        positions[keys.feed(sid)] = text(head[0][0]) if head else "0-0"
                    if new:
                        self._news()  # a new stream: its followers start reading it
                if not positions:
                    self._stop.wait(0.5)
                    continue
                if standalone:
                    got = r.xread(dict(positions), count=BATCH, block=self.block_ms) or []
                else:
                    pipe = r.pipeline(transaction=False)
                    for key, pos in positions.items():
                        pipe.xread({key: pos}, count=BATCH)
                    got = [res for chunk in pipe.execute() for res in (chunk or [])]
                    if not got:
                        self._stop.wait(0.2)
                for key, entries in got:
                    if entries:
                        positions[text(key)] = text(entries[-1][0])
                if got:
                    self._news()
            except Exception as exc:  # Redis away: the connections wait too; try again shortly
                log.debug("feed hub: %s", exc)
                self._stop.wait(1.0)


def state_json(rec: FeedRecord) -> dict[str, Any]:
    return {"stream": rec.stream_id, **(rec.status or {})}


async def follow(
    store: SegmentStore,
    hub: FeedHub,
    *,
    cursor: dict[str, str] | None,
    streams: list[str] | None,
    filters: Filters,
    disconnected: Callable[[], Any],
) -> AsyncIterator[dict]:
    """SSE events (``event``, ``id``, ``data``) for one connection, until it goes away.

    Without a cursor the feed starts now; with one, right after it. A stream that appears later is
    followed from its start. ``filters`` apply to segment records; ``stream.state`` records pass
    whenever their stream does."""
    positions: dict[str, str] = dict(cursor or {})
    fresh = cursor is None
    known: list[str] = []
    refreshed = -1e9
    loop = asyncio.get_running_loop()

    def read(where: dict[str, str]) -> list[tuple[str, list]]:
        pipe = store.r.pipeline(transaction=False)
        for sid, pos in where.items():
            pipe.xread({store.keys.feed(sid): pos}, count=BATCH)
        return [(sid, res[0][1] if res else []) for sid, res in zip(where, pipe.execute())]

    def heads(ids: list[str]) -> dict[str, str]:
        pipe = store.r.pipeline(transaction=False)
        for sid in ids:
            pipe.xrevrange(store.keys.feed(sid), count=1)
        return {sid: text(h[0][0]) if h else "0-0" for sid, h in zip(ids, pipe.execute())}

    while not await disconnected():
        if loop.time() - refreshed > REFRESH_S:
            ids = streams if streams else await asyncio.to_thread(store.stream_ids)
            new = [sid for sid in ids if sid not in positions]
            if new:
                positions.update(await asyncio.to_thread(heads, new) if fresh else dict.fromkeys(new, "0-0"))
            known, refreshed, fresh = list(ids), loop.time(), False
        sent = False
        try:
            batches = await asyncio.to_thread(read, {sid: positions[sid] for sid in known})
        except Exception as exc:  # Redis away: wait for it, the position is kept
            log.debug("live feed read: %s", exc)
            await asyncio.sleep(1.0)
            continue
        for sid, entries in batches:
            for rec in records_from(entries):
                positions[sid] = rec.id
                if rec.segment is not None:
                    if filters.event is not None and rec.segment.event != filters.event:
                        continue
                    if not filters.keep(rec.segment):
                        continue
                    event, data = f"segment.{rec.kind}", segment_json(rec.segment)
                else:
                    event, data = "stream.state", state_json(rec)
                sent = True
                yield {"event": event, "id": encode_cursor(positions), "data": json.dumps(data)}
        if not sent and not any(len(e) >= BATCH for _sid, e in batches):
            await hub.wait(REFRESH_S)
