"""The JSON shapes people and programs see: one segment, one stream (spec + status). Used by the
CLI's ``--json`` output and the HTTP API alike, so both say the same thing the same way."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from longwatch.pipeline.secrets import redact
from longwatch.pipeline.timebase import UNIX_EPOCH

STATUS_FIELDS = (
    "reason",
    "footage_s",
    "lag_s",
    "fps",
    "decode_fps",
    "sampled_fps",
    "speed",
    "clips",
    "queue_depth",
    "dropped_clips",
    "reconnects",
    "segments_committed",
    "restarts",
    "last_restart",
    "error",
    "node",
    "heartbeat",
    "updated_at",
)


def utc_or_none(epoch, dt):
    """``dt``, or None where the stream has no known epoch (a file without a creation time and no
    --start-at): its times exist only as stream seconds and are never shown as 1970."""
    return None if epoch == UNIX_EPOCH else dt


def segment_json(s) -> dict[str, Any]:
    return {
        "id": s.id,
        "stream": s.stream_id,
        "event": s.event,
        "start_s": round(s.start, 3),
        "end_s": round(s.end, 3),
        "start_utc": start.isoformat() if (start := utc_or_none(s.epoch, s.start_utc)) else None,
        "end_utc": end.isoformat() if (end := utc_or_none(s.epoch, s.end_utc)) else None,
        "score": round(s.score, 4),
        "state": s.state,
    }


def stream_json(spec, meta: dict[str, Any] | None, *, stream_id: str | None = None) -> dict[str, Any]:
    """A stream as clients see it: its spec (desired state) and its status (actual state) from Redis.
    ``spec`` may be None (a stream with data but no spec: processed by a one-shot ``run``)."""
    meta = meta or {}
    state = meta.get("state") or ("starting" if spec is not None and spec.state == "running" else "")
    if spec is not None and spec.state == "paused" and state in ("", "stopped"):
        state = "paused"
    beat = meta.get("heartbeat")
    out: dict[str, Any] = {
        "id": spec.id if spec is not None else stream_id,
        "source": redact(str(spec.source if spec is not None else meta.get("source", ""))),
        "desired": spec.state if spec is not None else None,
        "state": state,
        **{k: meta.get(k) for k in STATUS_FIELDS if k not in ("error",)},
        "error": redact(str(meta.get("error") or "")),
        "heartbeat_age_s": round(time.time() - beat, 1) if isinstance(beat, (int, float)) else None,
        "last_frame_utc": _last_frame_utc(meta),
    }
    if spec is not None:
        out.update(
            events=spec.events,
            sampler=spec.sampler,
            start_at=spec.start_at,
            created=spec.created,
            updated=spec.updated,
            generation=spec.generation,
        )
    return out


def _last_frame_utc(meta: dict[str, Any]) -> str | None:
    """The wall time of the last frame processed (epoch + footage seconds); None without a known epoch."""
    from longwatch.pipeline.keys import parse_dt

    footage, epoch = meta.get("footage_s"), meta.get("epoch")
    if not isinstance(footage, (int, float)) or not isinstance(epoch, str):
        return None
    try:
        when = parse_dt(epoch)
    except ValueError:
        return None
    return None if when == UNIX_EPOCH else (when + timedelta(seconds=float(footage))).isoformat()
