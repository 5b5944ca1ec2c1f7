"""Pictures and footage of segments over HTTP (registered by :func:`add_media_routes`).

One question first, then the media: ``GET /api/v1/events/{id}/media`` says what a segment has::

    {"id": …, "stream": …, "event": …, "state": "closed",
     "recording": "file" | "none",              # a local file to cut clips from, or nothing (a camera, a URL)
     "thumbnail": "/api/v1/events/{id}/thumbnail.jpg?stream=S" | null,
     "clip":      "/api/v1/events/{id}/clip.mp4?stream=S"      | null,   # file streams whose video MP4 carries
     "strip":     "/api/v1/events/{id}/strip.jpg?stream=S"     | null,
     "clip_unavailable": null | "why clip is null for a file stream",
     "frame_s": 12.48, "score": 0.93, "box": [x0, y0, x1, y1] | null}      # the thumbnail's frame

URLs are relative and carry ``?stream=`` (a direct lookup); these routes take the read token as a header,
``?token=`` or the cookie, as ``<img src>`` and ``<video src>`` send no header.

``GET …/thumbnail.jpg``
    The segment's best frame (highest score inside it), at most 320 px wide, its detection box drawn
    (detector events), written by the worker in the same transaction as the segment
    (:mod:`longwatch.pipeline.thumbs`; 4-12 KB, 8.4 KB on average on street footage). Headers ``X-Longwatch-Frame-S`` (stream seconds of
    the frame) and ``X-Longwatch-Score``. 404 ``no_thumbnail`` for a segment stored without one (before
    thumbnails existed).

``GET …/clip.mp4?pad=1.0&download=false``
    File streams: the segment with ``pad`` seconds (0-30, default 1) either side, remuxed without
    re-encoding from the keyframe before it, streamed as fragmented MP4 (video only;
    :mod:`longwatch.pipeline.clips`). ``Content-Disposition: inline`` (``attachment`` with
    ``download=true``) with a file name ``<stream>_<event>_<start>-<end>.mp4``. Time mapping, in headers:
    ``X-Longwatch-Clip-Offset-S``: stream seconds = a frame's presentation time in the clip (``pts ×
    time_base``, PyAV's ``frame.time``, a ``<video>``'s ``currentTime``) + this; ``X-Longwatch-Clip-Start-S``:
    stream seconds of the clip's first frame; ``X-Longwatch-Segment-Start-S`` / ``-End-S``: the segment.
    Errors: 409 ``no_recording`` for a camera or URL stream (nothing recorded; the body's ``strip`` points
    to its strip), 409 ``clip_unavailable`` for a file whose video MP4 cannot carry without re-encoding
    (e.g. MS-MPEG4 in AVI; ``strip`` again), 410 ``recording_gone`` when the file is gone or no longer the
    one processed (size and the hash of its first and last MiB are checked against the watermark).

``GET …/strip.jpg``
    Three frames side by side: the segment's first sampled frame, its best (the thumbnail's), its last;
    boxes drawn. For a camera they are the frames the worker kept (it stores the first and last frames'
    JPEGs with the thumbnail, so a camera segment costs about 3× a file's); for a file they are decoded
    from the file at the times stored with the thumbnail. 410 ``recording_gone`` as above.

Every route: 404 ``not_found`` (no such segment), 422 ``invalid_id``, 503 ``redis_unreachable``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from longwatch.pipeline.errors import LongwatchError
from longwatch.pipeline.types import Segment

API = "/api/v1"
MAX_PAD_S = 30.0
_JPEG = {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}
StreamQ = Annotated[str | None, Query(max_length=64, description="the segment's stream (a direct lookup)")]
PadQ = Annotated[float, Query(ge=0, le=MAX_PAD_S, description="seconds added before and after")]
DownloadQ = Annotated[bool, Query(description="Content-Disposition: attachment (else inline)")]
_MP4 = {"content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}}


class MediaOut(BaseModel):
    id: str
    stream: str
    event: str
    state: str = Field(..., description="open | closed (an open segment's pictures may still change)")
    recording: str = Field(..., description="file: a local file clips are cut from; none: a camera or URL")
    thumbnail: str | None = Field(None, description="URL of thumbnail.jpg; null: stored without one")
    clip: str | None = Field(None, description="URL of clip.mp4; null: nothing recorded, or not remuxable")
    strip: str | None = Field(None, description="URL of strip.jpg (first, best, last frame)")
    clip_unavailable: str | None = Field(None, description="why clip is null for a file stream")
    frame_s: float | None = Field(None, description="stream seconds of the thumbnail's frame")
    score: float | None = Field(None, description="the thumbnail frame's score")
    box: list[float] | None = Field(None, description="its detection box, x0 y0 x1 y1 as fractions of the frame")


def _is_segment_id(value: str) -> bool:
    return len(value) == 20 and all(c in "0123456789abcdef" for c in value)


def add_media_routes(app: FastAPI, *, store: Any, settings: Any, read: Any, run: Any) -> None:
    """Register the media routes on ``app``. ``read``: the auth dependency of read-only routes (it also
    takes ``?token=`` and the cookie, as ``<img src>`` sends no headers); ``run``: awaits a blocking
    Redis read in a thread (Redis away → 503)."""
    from longwatch.pipeline.clips import (
        ClipUnavailableError,
        RecordingGoneError,
        check_recording,
        clip_problem,
        frames_at,
        open_clip,
        recording_path,
    )
    from longwatch.pipeline.identity import check_stream_id
    from longwatch.pipeline.query import find_segment
    from longwatch.pipeline.registry import Registry
    from longwatch.pipeline.thumbs import Thumbnail, compose_strip, decode_jpeg, picture

    from .api import ApiError, ErrorOut

    registry = Registry.of(store)
    errors: dict[int | str, dict[str, Any]] = {410: {"model": ErrorOut, "description": "the recording is gone"}}

    def url(seg: Segment, name: str) -> str:
        return f"{API}/events/{seg.id}/{name}?stream={seg.stream_id}"

    def link_error(status: int, code: str, message: str, **links: str | None) -> JSONResponse:
        return JSONResponse({"code": code, "message": message, **links}, status_code=status)

    async def segment(event_id: str, stream: str | None) -> Segment:
        if not _is_segment_id(event_id):
            raise ApiError(422, "invalid_id", f"{event_id!r} is not a segment id (20 hex digits)")
        if stream:
            try:
                check_stream_id(stream)
            except LongwatchError as exc:
                raise ApiError(422, "invalid_id", str(exc)) from None
        ids = [stream] if stream else await run(store.stream_ids)
        seg = await run(lambda: find_segment(store, ids, event_id))
        if seg is None:
            raise ApiError(404, "not_found", f"no segment {event_id!r}")
        return seg

    def source_of(stream_id: str) -> tuple[str | None, dict | None]:
        """The stream's local file (None: not a file) and the fingerprint its watermark holds."""
        spec = registry.find(stream_id)
        source = spec.source if spec is not None else store.meta(stream_id).get("source")
        path = recording_path(source)
        fp = (store.watermark(stream_id) or {}).get("source_fp") if path else None
        return path, fp

    async def thumbnail_of(seg: Segment) -> Thumbnail:
        thumb = await run(lambda: store.thumbnail(seg.stream_id, seg.id))
        if thumb is None:
            raise ApiError(404, "no_thumbnail", f"segment {seg.id!r} has no thumbnail (stored before thumbnails)")
        return thumb

    def cache(seg: Segment) -> str:
        return "private, max-age=86400" if seg.state == "closed" else "private, no-cache"

    @app.get(f"{API}/events/{{event_id}}/media", tags=["media"], dependencies=[read], response_model=MediaOut)
    async def media(event_id: str, stream: StreamQ = None) -> dict:
        """What pictures and footage a segment has, as URLs (see the ``media`` routes)."""
        seg = await segment(event_id, stream)
        thumb = await run(lambda: store.thumbnail(seg.stream_id, seg.id))
        path, fp = await run(lambda: source_of(seg.stream_id))
        problem = None
        if path is not None:
            try:
                await run_in_threadpool(check_recording, path, fp)
                problem = await run_in_threadpool(clip_problem, path)
            except RecordingGoneError as exc:
                problem = str(exc)
        strip_ok = thumb is not None and (thumb.has_strip_frames or (path is not None and problem is None))
        return {
            "id": seg.id,
            "stream": seg.stream_id,
            "event": seg.event,
            "state": seg.state,
            "recording": "file" if path is not None else "none",
            "thumbnail": url(seg, "thumbnail.jpg") if thumb is not None else None,
            "clip": url(seg, "clip.mp4") if path is not None and problem is None else None,
            "strip": url(seg, "strip.jpg") if strip_ok else None,
            "clip_unavailable": problem,
            "frame_s": thumb.t if thumb is not None else None,
            "score": thumb.score if thumb is not None else None,
            "box": list(thumb.box) if thumb is not None and thumb.box is not None else None,
        }

    @app.get(
        f"{API}/events/{{event_id}}/thumbnail.jpg",
        tags=["media"],
        dependencies=[read],
        response_class=Response,
        responses={200: {"description": "the best frame, at most 320 px wide, its box drawn", **_JPEG}},
    )
    async def thumbnail(event_id: str, stream: StreamQ = None) -> Response:
        """The segment's best frame as a small JPEG (its detection box drawn)."""
        seg = await segment(event_id, stream)
        thumb = await thumbnail_of(seg)
        headers = {
            "Cache-Control": cache(seg),
            "X-Longwatch-Frame-S": repr(thumb.t),
            "X-Longwatch-Score": repr(thumb.score),
        }
        return Response(thumb.jpeg, media_type="image/jpeg", headers=headers)

    @app.get(
        f"{API}/events/{{event_id}}/clip.mp4",
        tags=["media"],
        dependencies=[read],
        response_class=Response,
        responses={200: {"description": "fragmented MP4, streamed", **_MP4}, **errors},
    )
    async def clip(
        event_id: str,
        stream: StreamQ = None,
        pad: PadQ = 1.0,
        download: DownloadQ = False,
    ) -> Response:
        """The segment's footage (file streams): remuxed without re-encoding, streamed as MP4. Headers map
        its times to stream seconds (``X-Longwatch-Clip-Offset-S``; see the media module's doc)."""
        seg = await segment(event_id, stream)
        path, fp = await run(lambda: source_of(seg.stream_id))
        if path is None:
            return link_error(
                409,
                "no_recording",
                f"stream {seg.stream_id!r} is not a file: nothing is recorded; its frames are at the strip",
                strip=url(seg, "strip.jpg"),
            )
        try:
            await run_in_threadpool(check_recording, path, fp)
            prepared = await run_in_threadpool(lambda: open_clip(path, seg.start, seg.end, pad_s=pad))
        except RecordingGoneError as exc:
            raise ApiError(410, "recording_gone", str(exc)) from None
        except ClipUnavailableError as exc:
            return link_error(409, "clip_unavailable", str(exc), strip=url(seg, "strip.jpg"))
        name = f"{seg.stream_id}_{seg.event}_{seg.start:.2f}-{seg.end:.2f}.mp4"
        headers = {
            "Content-Disposition": f'{"attachment" if download else "inline"}; filename="{name}"',
            "Cache-Control": cache(seg),
            "X-Longwatch-Clip-Offset-S": repr(prepared.offset_s),
            "X-Longwatch-Clip-Start-S": repr(prepared.first_s),
            "X-Longwatch-Segment-Start-S": repr(seg.start),
            "X-Longwatch-Segment-End-S": repr(seg.end),
            "Accept-Ranges": "none",  # streamed as it is muxed: no byte ranges (Chrome and Firefox play it so)
        }
        # a sync iterator: Starlette runs each step (PyAV's demux and mux) in its thread pool
        return StreamingResponse(iter(prepared), media_type="video/mp4", headers=headers)

    @app.get(
        f"{API}/events/{{event_id}}/strip.jpg",
        tags=["media"],
        dependencies=[read],
        response_class=Response,
        responses={200: {"description": "first, best and last frame side by side", **_JPEG}, **errors},
    )
    async def strip(event_id: str, stream: StreamQ = None) -> Response:
        """The segment's first, best and last frames side by side (a camera's as the worker kept them, a
        file's decoded from it)."""
        seg = await segment(event_id, stream)
        thumb = await thumbnail_of(seg)
        path, fp = (None, None) if thumb.has_strip_frames else await run(lambda: source_of(seg.stream_id))

        def build() -> bytes:
            assert thumb is not None
            if thumb.has_strip_frames:
                assert thumb.first is not None and thumb.last is not None
                return compose_strip([decode_jpeg(thumb.first), decode_jpeg(thumb.jpeg), decode_jpeg(thumb.last)])
            if path is None:  # a camera segment stored without its strip's frames: the best one alone
                return compose_strip([decode_jpeg(thumb.jpeg)])
            check_recording(path, fp)
            first_t = thumb.first_t if thumb.first_t is not None else thumb.t
            last_t = thumb.last_t if thumb.last_t is not None else thumb.t
            frames = frames_at(path, [first_t, thumb.t, last_t])
            boxes = [thumb.first_box, thumb.box, thumb.last_box]
            size = {"width": thumb.width, "height": thumb.height}  # the sampled frames' aspect, as the thumbnail
            return compose_strip([picture(f, b, **size) for f, b in zip(frames, boxes)])

        try:
            body = await run_in_threadpool(build)
        except (RecordingGoneError, ClipUnavailableError) as exc:
            raise ApiError(410, "recording_gone", str(exc)) from None
        return Response(body, media_type="image/jpeg", headers={"Cache-Control": cache(seg)})
