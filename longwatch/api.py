"""The HTTP API of ``longwatch serve`` (FastAPI), under ``/api/v1``; OpenAPI at ``/openapi.json``, docs at
``/docs``.

It talks to the registry (writes specs), the controller (asks for a reconcile pass so a change takes
effect at once) and Redis (reads status and segments), never to a worker's memory: what it shows is
true even after a worker died. Errors are JSON ``{"code": …, "message": …}`` with a stable code;
validation errors are 422 and name the field.

Auth: once any token is configured (``LONGWATCH_API_TOKENS``, the tokens file), every route but
``/healthz`` needs ``Authorization: Bearer <token>``; ``read`` tokens read, ``admin`` tokens also add,
change and remove streams. Read-only GET routes (the live feed above all: browsers' EventSource sends no
headers) also take the token as ``?token=`` or the ``longwatch_token`` cookie.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyCookie, APIKeyQuery, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from longwatch.pipeline.errors import LongwatchError, SourceError, StoreError, StreamIdentityError
from longwatch.pipeline.query import Filters, Position, QueryError, find_segment, page, timeline
from longwatch.pipeline.registry import Registry, SpecExistsError, SpecNotFoundError, StreamSpec
from longwatch.pipeline.secrets import redact
from longwatch.pipeline.store import SegmentStore
from longwatch.pipeline.timebase import UNIX_EPOCH, parse_epoch

from .auth import COOKIE, QUERY, MediaRootError, TokenSet, check_source, presented_token
from .live import CursorError, FeedHub, decode_cursor, follow
from .views import segment_json, stream_json

API = "/api/v1"
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100
MAX_BUCKETS = 5_000
STATIC = (
    Path(__file__).parent / "web-assets"
)  # served at /static (a folder name Python cannot import: data, not a package)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, *, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.field = status, code, message, headers, field


class ErrorOut(BaseModel):
    code: str = Field(..., description="stable machine-readable code, e.g. not_found, invalid, unauthorized")
    message: str
    field: str | None = Field(None, description="the field a validation error is about")


ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 422, 503)}


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


class SegmentOut(BaseModel):
    id: str
    stream: str
    event: str
    start_s: float = Field(..., description="stream seconds")
    end_s: float
    start_utc: str | None = Field(None, description="ISO 8601 UTC; null where the stream has no known epoch")
    end_utc: str | None
    score: float
    state: str = Field(..., description="open | closed")


class EventsPage(BaseModel):
    items: list[SegmentOut]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null: no more")


class LaneOut(BaseModel):
    stream: str
    event: str
    counts: list[int] = Field(..., description="segments overlapping each bucket")
    covered_s: list[float] = Field(..., description="seconds of each bucket covered by the segments")


class TimelineOut(BaseModel):
    axis: str = Field(..., description="utc (after/before were ISO times) or stream_s (stream seconds)")
    after: str | float
    before: str | float
    bucket_s: float
    buckets: int
    edges: list[str | float] = Field(..., description="each bucket's start, in the axis' units")
    lanes: list[LaneOut]


def create_app(
    *,
    store: SegmentStore,
    events_text: str,
    settings: Any,
    nudge: Callable[[], None] | None = None,
    ready: Callable[[], bool] | None = None,
    live_status: Callable[[], dict] | None = None,
    tokens: TokenSet | None = None,
    media_roots: list[Path] | None = None,
) -> FastAPI:
    """The app. ``nudge`` asks the controller for a reconcile pass now (else it comes within a second);
    ``ready`` says whether the controller answers; ``live_status`` is the controller's own view of its
    workers, shown while Redis is away (the workers wait then, and say why). ``tokens``: the API tokens
    (none: open, for a loopback-only service); ``media_roots``: where files added over HTTP may lie
    (none: HTTP cannot add files)."""
    registry = Registry.of(store)
    tokens = tokens or TokenSet.from_entries([])
    roots = list(media_roots or [])
    hub = FeedHub(store)
    app = FastAPI(
        title="longwatch",
        version="1",
        description=__doc__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        responses=ERRORS,
    )
    executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="api")

    # ---- errors -----------------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        body = {"code": exc.code, "message": exc.message, **({"field": exc.field} if exc.field else {})}
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header"))
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in errors]
        return JSONResponse(
            {"code": "invalid", "message": f"{where}: {first.get('msg', 'invalid')}", "field": where, "errors": detail},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        return JSONResponse(
            {"code": codes.get(exc.status_code, "error"), "message": str(exc.detail)}, status_code=exc.status_code
        )

    # ---- auth -------------------------------------------------------------------------------------

    bearer = HTTPBearer(auto_error=False, description="an API token: read, or admin to change streams")
    query_key = APIKeyQuery(name=QUERY, auto_error=False, description="the token (read-only GET routes)")
    cookie_key = APIKeyCookie(name=COOKIE, auto_error=False, description="the token (read-only GET routes)")

    def authorizer(scope: str, *, browser: bool):
        async def check(request: Request) -> str:
            if not tokens.enabled:
                return "admin"
            given = presented_token(
                request.headers.get("authorization"),
                request.query_params.get(QUERY) if browser else None,
                request.cookies.get(COOKIE) if browser else None,
            )
            if not given:
                raise ApiError(401, "unauthorized", "a token is needed: Authorization: Bearer <token>",
                               {"WWW-Authenticate": "Bearer"})  # fmt: skip
            have = tokens.check(given)
            if have is None:
                raise ApiError(401, "unauthorized", "the token is not valid", {"WWW-Authenticate": "Bearer"})
            if not tokens.allows(have, scope):
                raise ApiError(403, "forbidden", f"this needs a token with the {scope!r} scope")
            return have

        if browser:  # declared in the OpenAPI document: header, query parameter or cookie

            async def check_browser(
                request: Request,
                _h: Any = Security(bearer),
                _q: Any = Security(query_key),
                _c: Any = Security(cookie_key),
            ) -> str:
                return await check(request)

            return check_browser

        async def check_header(request: Request, _h: Any = Security(bearer)) -> str:
            return await check(request)

        return check_header

    read = Depends(authorizer("read", browser=False))
    read_browser = Depends(authorizer("read", browser=True))
    admin = Depends(authorizer("admin", browser=False))

    async def run(fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    async def stored(fn: Callable[[], Any]) -> Any:
        """Run a Redis read; Redis away → 503 redis_unreachable (never a 500)."""
        try:
            return await run(fn)
        except (RedisError, StoreError) as exc:
            if isinstance(exc, QueryError):
                raise ApiError(422, "invalid", str(exc)) from None
            raise ApiError(503, "redis_unreachable", f"Redis is unreachable: {redact(str(exc))}") from None

    async def apply() -> None:
        if nudge is not None:
            await run(nudge)

    async def one(stream_id: str) -> dict:
        spec = await stored(lambda: registry.find(stream_id))
        meta = await stored(lambda: store.meta(stream_id))
        if spec is None and not meta:
            raise ApiError(404, "not_found", f"no stream {stream_id!r}")
        return stream_json(spec, meta, stream_id=stream_id)

    # ---- health, docs, metrics -------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """The process answers (no token needed)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], dependencies=[read])
    async def readyz() -> JSONResponse:
        """Redis and the controller really answer."""
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

    @app.get("/metrics", tags=["health"], dependencies=[read], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (text format): per stream fps, lag, queue depth, dropped clips, reconnects,
        segments by event; model latency and batch size histograms."""
        from .metrics import render

        body, content_type = await run(lambda: render(store))
        return Response(body, media_type=content_type)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[read_browser])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[read_browser])
    async def docs(request: Request) -> HTMLResponse:
        page_html = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="longwatch API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )
        given = request.query_params.get(QUERY)
        if given and tokens.enabled:  # opened as /docs?token=…: the page's own fetches carry it as a cookie
            page_html.set_cookie(COOKIE, given, httponly=True, samesite="strict")
        return page_html

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def ui() -> Response:
        """The timeline page (static; it holds no data: what it shows it fetches with the user's token)."""
        page_file = STATIC / "ui" / "index.html"
        if not page_file.is_file():
            raise ApiError(404, "not_found", "the web UI is not installed")
        return HTMLResponse(page_file.read_text())

    @app.get(f"{API}/info", tags=["health"])
    async def info(scope: str = read) -> dict:
        """What this service is and what the caller may do: version, whether tokens are required, the
        caller's scope (read | admin), and the events the service scores (a stream's events pick
        among these)."""
        from longwatch import __version__
        from longwatch.pipeline.events import parse_events

        served = parse_events(events_text)
        return {
            "version": __version__,
            "auth": tokens.enabled,
            "scope": scope,
            "events": [{"event": ev.event, "backend": ev.backend} for ev in served.events],
            "media_roots": bool(roots),
        }

    # ---- streams ----------------------------------------------------------------------------------

    @app.get(f"{API}/streams", tags=["streams"], dependencies=[read])
    async def list_streams() -> list[dict]:
        """Every stream: its spec (desired state) and its status from Redis (state, reason, footage and
        last frame time, decode and sampled fps, lag, queue depth, dropped clips, restarts, last error)."""

        def load() -> list[dict]:
            specs = {s.id: s for s in registry.list() if s.state != "removed"}
            infos = {i.stream_id: i.meta for i in store.streams()}
            ids = sorted(set(specs) | set(infos))
            return [stream_json(specs.get(sid), infos.get(sid), stream_id=sid) for sid in ids]

        try:
            return await run(load)
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

    @app.get(f"{API}/streams/{{stream_id}}", tags=["streams"], dependencies=[read])
    async def get_stream(stream_id: str) -> dict:
        _check_id(stream_id)
        return await one(stream_id)

    @app.post(f"{API}/streams", status_code=201, tags=["streams"], dependencies=[admin])
    async def add_stream(body: StreamIn) -> dict:
        """Add a stream. Its source is probed first unless ``validate`` is false; files must lie under the
        service's media roots."""
        try:
            source = check_source(body.source, roots)
        except MediaRootError as exc:
            raise ApiError(403, exc.code, str(exc)) from None
        except LongwatchError as exc:
            raise ApiError(422, "bad_source", redact(str(exc))) from None
        body = body.model_copy(update={"source": source})
        try:
            spec, source = await run(lambda: _new_spec(body, store, registry, events_text, settings))
            await run(lambda: registry.put(spec, source=source, replace_existing=body.reprocess))
        except SpecExistsError as exc:
            raise ApiError(409, "exists", str(exc)) from None
        except (RedisError, StoreError) as exc:
            raise ApiError(503, "redis_unreachable", f"Redis is unreachable: {redact(str(exc))}") from None
        await apply()
        return await one(spec.id)

    @app.patch(f"{API}/streams/{{stream_id}}", tags=["streams"], dependencies=[admin])
    async def patch_stream(stream_id: str, body: StreamPatch) -> dict:
        """Change a stream's events or sampler overrides (it restarts with them), or pause / resume it."""
        _check_id(stream_id)
        changes = {k: v for k, v in body.model_dump().items() if v is not None}
        if "events" in changes:
            _check_events(changes["events"], events_text)
        try:
            await stored(lambda: registry.update(stream_id, **changes))
        except SpecNotFoundError as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        except (LongwatchError, ValueError) as exc:
            raise ApiError(422, "invalid", redact(str(exc))) from None
        await apply()
        return await one(stream_id)

    @app.delete(f"{API}/streams/{{stream_id}}", status_code=202, tags=["streams"], dependencies=[admin])
    async def delete_stream(stream_id: str, purge: bool = False) -> dict:
        """Stop a stream cleanly (a camera's open segments are closed); ``purge`` also deletes its segments."""
        _check_id(stream_id)
        try:
            await stored(lambda: registry.update(stream_id, state="removed", purge=purge))
        except SpecNotFoundError as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        await apply()
        return {"id": stream_id, "desired": "removed", "purge": purge}

    # ---- events -----------------------------------------------------------------------------------

    async def windows_for(streams: list[str] | None, after: str | None, before: str | None):
        """Each stream's window in stream seconds, from after/before given as stream seconds or ISO UTC."""
        (t0, u0), (t1, u1) = _when(after, "after"), _when(before, "before")
        if (t0 is not None or t1 is not None) and (u0 is not None or u1 is not None):
            raise ApiError(422, "invalid_time", "give after/before both as stream seconds or both as ISO times")
        ids = streams if streams else await stored(store.stream_ids)
        if u0 is None and u1 is None:
            lo = -math.inf if t0 is None else t0
            hi = math.inf if t1 is None else t1
            return {sid: (lo, hi) for sid in ids}, None
        epochs = await stored(lambda: _epochs(store, ids))
        out = {}
        for sid in ids:
            ep = epochs[sid]
            lo = -math.inf if u0 is None else (u0 - ep).total_seconds()
            hi = math.inf if u1 is None else (u1 - ep).total_seconds()
            out[sid] = (lo, hi)
        return out, epochs

    @app.get(f"{API}/events", tags=["events"], dependencies=[read], response_model=EventsPage)
    async def events(
        stream: Annotated[str | None, Query(description="stream id, or several separated by commas")] = None,
        event: str | None = None,
        after: Annotated[str | None, Query(description="window start: stream seconds or ISO 8601 UTC")] = None,
        before: Annotated[str | None, Query(description="window end: stream seconds or ISO 8601 UTC")] = None,
        min_score: Annotated[float | None, Query(ge=0, le=1e9)] = None,
        state: Annotated[str | None, Query(pattern="^(open|closed)$")] = None,
        order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(max_length=4096, description="next_cursor of the previous page")] = None,
    ) -> dict:
        """Segments overlapping the window (any part of a segment in it counts), ordered by start (then
        stream, event, id), a page at a time: pass ``next_cursor`` back as ``cursor`` for the next."""
        streams = _stream_list(stream)
        filters = _filters(event, min_score, state)
        query = {"stream": stream, "event": event, "after": after, "before": before, "min_score": min_score,
                 "state": state, "order": order}  # fmt: skip
        position = _decode_page_cursor(cursor, query) if cursor else None
        windows, _ = await windows_for(streams, after, before)
        got = await stored(lambda: page(store, windows, filters=filters, limit=limit, order=order, after=position))
        return {
            "items": [segment_json(s) for s in got.items],
            "next_cursor": _encode_page_cursor(got.next, query) if got.next else None,
        }

    @app.get(
        f"{API}/events/live",
        tags=["events"],
        dependencies=[read_browser],
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "SSE"}},
    )
    async def live(
        request: Request,
        stream: Annotated[str | None, Query(description="stream id, or several separated by commas")] = None,
        event: str | None = None,
        min_score: Annotated[float | None, Query(ge=0, le=1e9)] = None,
        state: Annotated[str | None, Query(pattern="^(open|closed)$")] = None,
        since: Annotated[
            str | None,
            Query(max_length=8000, pattern="^[A-Za-z0-9_-]*$", description="a cursor (an SSE id) to replay from"),
        ] = None,
    ):
        """Server-Sent Events: ``segment.open`` / ``segment.update`` / ``segment.close`` (data: a segment)
        and ``stream.state`` (data: stream, state, reason, at); each ``id`` is a cursor: reconnect with it
        as ``Last-Event-ID`` (or ``?since=``) to get exactly what was missed. Pings every 15 s."""
        streams = _stream_list(stream)
        filters = _filters(event, min_score, state)
        try:
            cursor = decode_cursor(request.headers.get("last-event-id") or since)
        except CursorError as exc:
            raise ApiError(422, "invalid_cursor", str(exc)) from None
        if not hub.started:
            hub.start()
        feed = follow(store, hub, cursor=cursor, streams=streams, filters=filters, disconnected=request.is_disconnected)
        return EventSourceResponse(feed, ping=15)

    @app.get(f"{API}/events/{{event_id}}", tags=["events"], dependencies=[read], response_model=SegmentOut)
    async def get_event(event_id: str, stream: str | None = None) -> dict:
        """One segment by its id (``stream`` narrows the search)."""
        if not _is_segment_id(event_id):
            raise ApiError(422, "invalid_id", f"{event_id!r} is not a segment id (20 hex digits)")
        streams = _stream_list(stream) or await stored(store.stream_ids)
        seg = await stored(lambda: find_segment(store, streams, event_id))
        if seg is None:
            raise ApiError(404, "not_found", f"no segment {event_id!r}")
        return segment_json(seg)

    @app.get(f"{API}/timeline", tags=["events"], dependencies=[read], response_model=TimelineOut)
    async def get_timeline(
        after: Annotated[str, Query(description="window start: stream seconds or ISO 8601 UTC")],
        before: Annotated[str, Query(description="window end: stream seconds or ISO 8601 UTC")],
        streams: Annotated[str | None, Query(description="stream ids separated by commas (default: all)")] = None,
        event: str | None = None,
        min_score: Annotated[float | None, Query(ge=0, le=1e9)] = None,
        bucket: Annotated[float | None, Query(gt=0, le=1e9, description="bucket width in seconds")] = None,
    ) -> dict:
        """Per stream and event, for each bucket of the window: how many segments overlap it and how many
        seconds of it they cover, computed server-side (for views too wide to list segments)."""
        ids = _stream_list(streams)
        filters = _filters(event, None if min_score is None else min_score, None)
        (t0, u0), (t1, u1) = _when(after, "after"), _when(before, "before")
        utc = u0 is not None
        if utc != (u1 is not None):
            raise ApiError(422, "invalid_time", "give after/before both as stream seconds or both as ISO times")
        lo = u0.timestamp() if u0 is not None else t0
        hi = u1.timestamp() if u1 is not None else t1
        if lo is None or hi is None:
            raise ApiError(422, "invalid_window", "the timeline needs both after and before", field="after")
        if not hi > lo:
            raise ApiError(422, "invalid_window", "before must come after after")
        width = bucket or _nice_bucket((hi - lo) / 200)
        if (hi - lo) / width > MAX_BUCKETS:
            raise ApiError(422, "too_many_buckets", f"more than {MAX_BUCKETS} buckets of {width:g} s; widen bucket")
        n = max(1, math.ceil((hi - lo) / width - 1e-9))
        edges = [lo + i * width for i in range(n + 1)]
        windows, epochs = await windows_for(ids, after, before)
        if utc:
            assert epochs is not None
            shift = {sid: ep.timestamp() for sid, ep in epochs.items()}
            per_stream = {sid: [e - shift[sid] for e in edges] for sid in windows}
            lanes = await stored(lambda: timeline(store, windows, per_stream, filters=filters))
        else:
            lanes = await stored(lambda: timeline(store, windows, edges, filters=filters))
        shown = [datetime.fromtimestamp(e, UNIX_EPOCH.tzinfo).isoformat() for e in edges[:-1]] if utc else edges[:-1]
        return {
            "axis": "utc" if utc else "stream_s",
            "after": after if utc else lo,
            "before": before if utc else hi,
            "bucket_s": width,
            "buckets": n,
            "edges": shown,
            "lanes": [lane.__dict__ for lane in lanes],
        }

    from .media import add_media_routes

    add_media_routes(app, store=store, settings=settings, read=read_browser, run=stored)
    return app


def _stream_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    ids = [s.strip() for s in value.split(",") if s.strip()]
    for sid in ids:
        _check_id(sid)
    return ids or None


def _filters(event: str | None, min_score: float | None, state: str | None) -> Filters:
    try:
        return Filters(event=event, min_score=min_score, state=state)
    except LongwatchError as exc:
        field = (
            "event" if event is not None and "event" in str(exc) else "min_score" if "score" in str(exc) else "state"
        )
        raise ApiError(422, "invalid", f"{field}: {exc}", field=field) from None


def _is_segment_id(value: str) -> bool:
    return len(value) == 20 and all(c in "0123456789abcdef" for c in value)


def _epochs(store: SegmentStore, ids: list[str]) -> dict[str, datetime]:
    pipe = store.r.pipeline(transaction=False)
    for sid in ids:
        pipe.hget(store.keys.meta(sid), "epoch")
    out = {}
    for sid, raw in zip(ids, pipe.execute()):
        out[sid] = parse_epoch(json.loads(raw)) if raw else UNIX_EPOCH
    return out


def _nice_bucket(seconds: float) -> float:
    """The smallest of 1, 2, 5, 10, 15, 30 s, 1, 2, 5, 10, 15, 30 min, 1, 2, 3, 6, 12 h, 1, 2, 7 days… ≥ seconds."""
    steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200]
    steps += [86400 * k for k in (1, 2, 7, 14, 30, 60, 90, 180, 365)]
    for s in steps:
        if s >= seconds:
            return float(s)
    return float(math.ceil(seconds / 86400) * 86400)


def _query_tag(query: dict) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _encode_page_cursor(pos: Position, query: dict) -> str:
    raw = json.dumps({"k": [pos.start, pos.stream, pos.event, pos.id], "q": _query_tag(query)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_page_cursor(value: str, query: dict) -> Position:
    try:
        raw = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        start, stream, event, seg_id = raw["k"]
        if raw["q"] != _query_tag(query):
            raise ApiError(422, "invalid_cursor", "this cursor belongs to a query with other parameters")
        if not (isinstance(start, (int, float)) and math.isfinite(start)) or not all(
            isinstance(x, str) for x in (stream, event, seg_id)
        ):
            raise ValueError
        return Position(float(start), stream, event, seg_id)
    except ApiError:
        raise
    except (ValueError, KeyError, TypeError):
        raise ApiError(422, "invalid_cursor", "cursor is not one this API gave out (use next_cursor)") from None


def _check_id(stream_id: str) -> None:
    from longwatch.pipeline.identity import check_stream_id

    try:
        check_stream_id(stream_id)
    except LongwatchError as exc:
        raise ApiError(422, "invalid_id", str(exc)) from None


def _check_events(text: str, events_text: str) -> None:
    from longwatch.pipeline.events import parse_events

    try:
        wanted = parse_events(text)  # text only: never a path on the server
    except LongwatchError as exc:
        raise ApiError(422, "invalid_events", str(exc)) from None
    _check_served(wanted, parse_events(events_text))


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
        t = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(t) or abs(t) > 1e12:
            raise ApiError(422, "invalid_time", f"{name}={value!r}: not a usable number of stream seconds")
        return t, None
    try:
        return None, parse_epoch(value)
    except (ValueError, OverflowError):
        raise ApiError(422, "invalid_time", f"{name}={value!r}: give stream seconds or an ISO 8601 time") from None


def _new_spec(body: StreamIn, store: SegmentStore, registry: Registry, events_text: str, settings: Any):
    """Validate a new stream (id, events, sampler, the source itself, its identity) → (spec, source)."""
    from longwatch.pipeline.config import SamplerConfig
    from longwatch.pipeline.events import parse_events
    from longwatch.pipeline.identity import check_identity, check_stream_id, default_stream_id, fingerprints
    from longwatch.pipeline.source import Source, classify

    try:
        sid = check_stream_id(body.id) if body.id is not None else default_stream_id(body.source)
        kind, _target = classify(body.source)
        events = parse_events(body.events if body.events is not None else events_text)  # text, never a path
        if body.events is not None:
            _check_served(events, parse_events(events_text))
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


def openapi_document() -> dict:
    """The API's OpenAPI document, as committed in ``docs/openapi.json`` (``python -m longwatch.api``
    rewrites that file; a test fails when the two drift). Builds the app without connecting anywhere."""
    import redis

    from longwatch.pipeline.config import Settings
    from longwatch.pipeline.events import default_events_path

    unconnected = SegmentStore(redis.Redis(host="127.0.0.1", port=1))  # never called
    app = create_app(store=unconnected, events_text=Path(default_events_path()).read_text(), settings=Settings())
    return app.openapi()


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
    out.write_text(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
