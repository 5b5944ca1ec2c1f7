"""The HTTP API of ``longwatch serve`` (FastAPI), under ``/api/v1``; OpenAPI at ``/docs``.

It talks to the registry (writes specs), the controller (asks for a reconcile pass so a change takes
effect at once) and Redis (reads status and segments), never to a worker's memory: what it shows is
true even after a worker died. Errors are JSON ``{"code": …, "message": …}`` with a stable code.

- ``GET /healthz`` (the process answers), ``GET /readyz`` (Redis and the controller answer)
- ``GET /api/v1/streams``, ``GET /api/v1/streams/{id}``
- ``POST /api/v1/streams`` (source, id, events YAML, sampler overrides, start_at; the source is probed
  first unless ``validate`` is false)
- ``PATCH /api/v1/streams/{id}`` (``state``: running | paused; events; sampler)
- ``DELETE /api/v1/streams/{id}?purge=`` (stops it, closes a camera's open segments; ``purge`` also
  deletes its segments)
- ``GET /api/v1/events?stream=&event=&after=&before=&limit=``: segments overlapping the window
- ``GET /api/v1/events/live?stream=``: Server-Sent Events of segment open/update/close, each with an
  ``id`` to resume from (``Last-Event-ID``)
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sse_starlette.sse import EventSourceResponse

from longwatch.pipeline.errors import LongwatchError, SourceError, StoreError, StreamIdentityError
from longwatch.pipeline.registry import Registry, SpecExistsError, SpecNotFoundError, StreamSpec
from longwatch.pipeline.secrets import redact
from longwatch.pipeline.store import SegmentStore

from .views import segment_json, stream_json

API = "/api/v1"
MAX_LIMIT = 10_000


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class StreamIn(BaseModel):
    source: str = Field(..., min_length=1, max_length=4096, description="file path, rtsp://, http(s)://")
    id: str | None = Field(None, description="stream id (letters, digits, _ . -; at most 64); default: from the source")
    events: str | None = Field(
        None, max_length=200_000, description="events YAML for this stream (default: the service's)"
    )
    sampler: dict[str, Any] = Field(default_factory=dict, description='sampler overrides, e.g. {"max_fps": 1}')
    start_at: str | None = Field(None, description="a file's epoch: ISO 8601 UTC or Unix seconds")
    validate_source: bool = Field(True, alias="validate", description="probe the source before accepting it")
    reprocess: bool = Field(False, description="drop the stream's segments and watermark and start it over")

    model_config = {"populate_by_name": True}


class StreamPatch(BaseModel):
    state: str | None = Field(None, pattern="^(running|paused)$")
    events: str | None = Field(None, max_length=200_000)
    sampler: dict[str, Any] | None = None


def create_app(
    *,
    store: SegmentStore,
    events_text: str,
    settings: Any,
    nudge: Callable[[], None] | None = None,
    ready: Callable[[], bool] | None = None,
    live_status: Callable[[], dict] | None = None,
) -> FastAPI:
    """The app. ``nudge`` asks the controller for a reconcile pass now (else it comes within a second);
    ``ready`` says whether the controller answers; ``live_status`` is the controller's own view of its
    workers, shown while Redis is away (the workers wait then, and say why)."""
    registry = Registry.of(store)
    app = FastAPI(title="longwatch", version="1", description=__doc__)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(
            {"code": "invalid", "message": f"{where}: {first.get('msg', 'invalid')}", "errors": exc.errors()},
            status_code=422,
        )

    async def run(fn: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(fn)

    async def apply() -> None:
        if nudge is not None:
            await run(nudge)

    async def one(stream_id: str) -> dict:
        spec = await run(lambda: registry.find(stream_id))
        meta = await run(lambda: store.meta(stream_id))
        if spec is None and not meta:
            raise ApiError(404, "not_found", f"no stream {stream_id!r}")
        return stream_json(spec, meta, stream_id=stream_id)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        checks: dict[str, bool] = {}
        try:
            checks["redis"] = bool(await asyncio.wait_for(run(store.r.ping), 5))
        except Exception:
            checks["redis"] = False
        try:
            checks["controller"] = bool(await asyncio.wait_for(run(ready), 10)) if ready else True
        except Exception:
            checks["controller"] = False
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get(f"{API}/streams", tags=["streams"])
    async def list_streams() -> list[dict]:
        def read() -> list[dict]:
            specs = {s.id: s for s in registry.list() if s.state != "removed"}
            infos = {i.stream_id: i.meta for i in store.streams()}
            ids = sorted(set(specs) | set(infos))
            return [stream_json(specs.get(sid), infos.get(sid), stream_id=sid) for sid in ids]

        try:
            return await run(read)
        except (RedisError, StoreError) as exc:
            if live_status is None:
                raise ApiError(503, "redis_unreachable", f"Redis is unreachable: {redact(str(exc))}") from None
            # Redis is away: the controller's own view (its workers wait, and say why).
            live = await run(live_status)
            return [
                {
                    **stream_json(None, st, stream_id=sid),
                    "source": redact(str(st.get("uri", ""))),
                    "redis": "unreachable",
                }
                for sid, st in sorted(live.items())
            ]

    @app.get(f"{API}/streams/{{stream_id}}", tags=["streams"])
    async def get_stream(stream_id: str) -> dict:
        _check_id(stream_id)
        return await one(stream_id)

    @app.post(f"{API}/streams", status_code=201, tags=["streams"])
    async def add_stream(body: StreamIn) -> dict:
        spec, source = await run(lambda: _new_spec(body, store, registry, events_text, settings))
        try:
            await run(lambda: registry.put(spec, source=source, replace_existing=body.reprocess))
        except SpecExistsError as exc:
            raise ApiError(409, "exists", str(exc)) from None
        await apply()
        return await one(spec.id)

    @app.patch(f"{API}/streams/{{stream_id}}", tags=["streams"])
    async def patch_stream(stream_id: str, body: StreamPatch) -> dict:
        _check_id(stream_id)
        changes = {k: v for k, v in body.model_dump().items() if v is not None}
        if "events" in changes:
            _check_events(changes["events"])
        try:
            await run(lambda: registry.update(stream_id, **changes))
        except SpecNotFoundError as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        except (LongwatchError, ValueError) as exc:
            raise ApiError(422, "invalid", redact(str(exc))) from None
        await apply()
        return await one(stream_id)

    @app.delete(f"{API}/streams/{{stream_id}}", status_code=202, tags=["streams"])
    async def delete_stream(stream_id: str, purge: bool = False) -> dict:
        _check_id(stream_id)
        try:
            await run(lambda: registry.update(stream_id, state="removed", purge=purge))
        except SpecNotFoundError as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        await apply()
        return {"id": stream_id, "desired": "removed", "purge": purge}

    @app.get(f"{API}/events", tags=["events"])
    async def events(
        stream: str | None = None,
        event: str | None = None,
        after: str | None = Query(None, description="window start: stream seconds or ISO 8601 UTC"),
        before: str | None = Query(None, description="window end: stream seconds or ISO 8601 UTC"),
        limit: int = Query(1000, ge=1, le=MAX_LIMIT),
    ) -> list[dict]:
        if stream is not None:
            _check_id(stream)
        (t0, u0), (t1, u1) = _when(after, "after"), _when(before, "before")
        if (t0 is not None or t1 is not None) and (u0 is not None or u1 is not None):
            raise ApiError(422, "invalid", "give after/before both as stream seconds or both as ISO times")
        if u0 is not None or u1 is not None:
            segs = await run(lambda: store.query_utc(stream, event, u0, u1, limit=limit))
        else:
            segs = await run(lambda: store.query(stream=stream, event=event, t0=t0, t1=t1, limit=limit))
        return [segment_json(s) for s in segs]

    @app.get(f"{API}/events/live", tags=["events"])
    async def live(request: Request, stream: str | None = None, since: str | None = None):
        if stream is not None:
            _check_id(stream)
        cursor = _decode_cursor(request.headers.get("last-event-id") or since)
        return EventSourceResponse(_feed(store, cursor, stream, request), ping=15)

    return app


def _check_id(stream_id: str) -> None:
    from longwatch.pipeline.identity import check_stream_id

    try:
        check_stream_id(stream_id)
    except LongwatchError as exc:
        raise ApiError(422, "invalid_id", str(exc)) from None


def _check_events(text: str) -> None:
    from longwatch.pipeline.events import load_events

    try:
        load_events(text)
    except LongwatchError as exc:
        raise ApiError(422, "invalid_events", str(exc)) from None


def _check_served(wanted, served) -> None:
    """A stream's own events must be among the service's (the model pools score those): the same
    name with the same definition. Anything else would never be scored, so it is refused now."""

    def definition(ev) -> dict:
        return {k: v for k, v in ev.model_dump(mode="json").items() if k != "description"}

    known = {ev.event: definition(ev) for ev in served.events}
    for ev in wanted.events:
        if ev.event not in known:
            raise ApiError(
                422,
                "unknown_event",
                f"event {ev.event!r} is not one the service scores ({', '.join(sorted(known))}); "
                "start `longwatch serve --events FILE` with it",
            )
        if definition(ev) != known[ev.event]:
            raise ApiError(
                422,
                "unknown_event",
                f"event {ev.event!r} differs from the service's definition of it; use the service's, or "
                "start `longwatch serve --events FILE` with yours",
            )


def _when(value: str | None, name: str) -> tuple[float | None, Any]:
    if value is None:
        return None, None
    try:
        return float(value), None
    except ValueError:
        pass
    from longwatch.pipeline.timebase import parse_epoch

    try:
        return None, parse_epoch(value)
    except ValueError:
        raise ApiError(422, "invalid_time", f"{name}={value!r}: give stream seconds or an ISO 8601 time") from None


def _new_spec(body: StreamIn, store: SegmentStore, registry: Registry, events_text: str, settings: Any):
    """Validate a new stream (id, events, sampler, the source itself, its identity) → (spec, source)."""
    from longwatch.pipeline.config import SamplerConfig
    from longwatch.pipeline.events import load_events
    from longwatch.pipeline.identity import check_identity, check_stream_id, default_stream_id, fingerprints
    from longwatch.pipeline.source import Source, classify

    try:
        sid = check_stream_id(body.id) if body.id is not None else default_stream_id(body.source)
        kind, _target = classify(body.source)
        events = load_events(body.events if body.events is not None else events_text)
        if body.events is not None:
            _check_served(events, load_events(events_text))
        spec = StreamSpec(  # checks the sampler's keys (and values) with a message naming them
            id=sid, source=redact(body.source), events=body.events, sampler=body.sampler, start_at=body.start_at
        )
        sampler = SamplerConfig(**{**settings.sampler.model_dump(), **body.sampler})
    except LongwatchError as exc:
        raise ApiError(422, "invalid", redact(str(exc))) from None

    if body.validate_source:
        try:
            with Source.open(body.source, config=settings.source.model_copy(update={"connect_attempts": 1})):
                pass
        except SourceError as exc:
            if kind == "file":
                raise ApiError(422, "bad_source", str(exc)) from None
            raise ApiError(422, "unreachable", f"{exc} (add it with validate=false to wait for it)") from None
    if body.reprocess:
        store.drop_stream(sid)
    else:
        wm = store.watermark(sid)
        if wm:
            try:
                check_identity(sid, wm, fingerprints(body.source, events, sampler))
            except StreamIdentityError as exc:
                raise ApiError(409, "identity", redact(str(exc))) from None
            except OSError as exc:
                raise ApiError(422, "bad_source", redact(str(exc))) from None
    return spec, body.source


# ---- the live feed ---------------------------------------------------------------------------------


def _encode_cursor(positions: dict[str, str]) -> str:
    raw = json.dumps(positions, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        positions = json.loads(raw)
        if not isinstance(positions, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in positions.items()
        ):
            raise ValueError
        return positions
    except ValueError:
        raise ApiError(422, "invalid_cursor", "Last-Event-ID / since is not a cursor this feed gave out") from None


async def _feed(store: SegmentStore, cursor: dict[str, str] | None, only: str | None, request: Request):
    """Feed records of every stream (or one), oldest first per stream; each SSE ``id`` is a cursor of
    every stream's position, so a client that reconnects with it misses nothing and gets nothing twice.
    Without a cursor the feed starts now; a stream that appears later is followed from its start."""
    positions: dict[str, str] = dict(cursor or {})
    fresh = cursor is None
    known: list[str] = []
    refreshed = 0.0
    loop = asyncio.get_running_loop()
    while not await request.is_disconnected():
        if loop.time() - refreshed > 2.0:
            ids = [only] if only else await asyncio.to_thread(store.stream_ids)
            for sid in ids:
                if sid not in positions:
                    positions[sid] = "$" if fresh else "0-0"
            known, refreshed = ids, loop.time()
            fresh = False
        sent = False
        for sid in known:
            last = positions[sid]
            records = await asyncio.to_thread(store.feed, sid, last_id=last, count=200)
            if last == "$" and not records:  # pin "now" to an id, so that nothing after it is missed
                head = await asyncio.to_thread(lambda s=sid: store.r.xrevrange(store.keys.feed(s), count=1))
                positions[sid] = head[0][0] if head else "0-0"
                continue
            for rec in records:
                positions[sid] = rec.id
                sent = True
                yield {
                    "event": f"segment.{rec.kind}",
                    "id": _encode_cursor({k: v for k, v in positions.items() if v != "$"}),
                    "data": json.dumps(segment_json(rec.segment)),
                }
        if not sent:
            await asyncio.sleep(0.5)
