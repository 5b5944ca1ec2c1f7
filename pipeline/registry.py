"""The registry: one stream spec per stream in Redis, the desired state of the service.

Clients (the CLI, the HTTP API) only ever write specs; the controller reads them and makes the
running workers match (see :mod:`longwatch.actors.controller`). A spec holds:

- ``id``, ``source`` (the shown form: credentials masked, ``${VAR}`` references kept), ``events``
  (the events YAML of this stream, or None for the service's own), ``sampler`` (overrides of the
  sampler settings), ``start_at`` (a file's epoch), ``state`` (desired: running / paused / removed),
  ``created`` / ``updated`` (Unix seconds) and ``generation`` (+1 on every change: the controller
  restarts a worker whose spec changed, and re-runs a finished or failed stream only for a newer
  generation), and ``fingerprints`` (source and pipeline, see :mod:`.identity`).

Keys (one hash each, so the registry works unchanged on Redis Cluster):

- ``<prefix>:specs``: id → spec JSON. This is what status and queries read.
- ``<prefix>:specs:sources``: id → the source exactly as given, only for a source whose URL holds a
  literal credential (``rtsp://user:pass@…``): the controller needs it to reconnect after a restart.
  Nothing that answers queries reads this hash. Name an environment variable instead
  (``rtsp://user:${CAM_PASSWORD}@…``) and no secret is stored at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis
from pydantic import ValidationError

from .errors import ConfigError, LongwatchError
from .identity import check_stream_id
from .keys import text, text_dict
from .secrets import redact

__all__ = ["DESIRED_STATES", "Registry", "SpecExistsError", "SpecNotFoundError", "StreamSpec"]

DESIRED_STATES = ("running", "paused", "removed")


class SpecNotFoundError(LongwatchError, KeyError):
    """No stream spec with this id."""

    def __init__(self, stream_id: str):
        super().__init__(f"no stream {stream_id!r} in the registry")
        self.stream_id = stream_id

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class SpecExistsError(LongwatchError, ValueError):
    """A spec with this id exists already, for another source or other events."""

    def __init__(self, message: str, *, stream_id: str):
        super().__init__(message)
        self.stream_id = stream_id


@dataclass(frozen=True)
class StreamSpec:
    """The desired state of one stream (validated on construction)."""

    id: str
    source: str
    state: str = "running"
    events: str | None = None
    sampler: dict[str, Any] = field(default_factory=dict)
    start_at: str | None = None
    created: float = 0.0
    updated: float = 0.0
    generation: int = 1
    fingerprints: dict[str, Any] = field(default_factory=dict)
    purge: bool = False  # with state "removed": delete the stream's segments too

    def __post_init__(self) -> None:
        check_stream_id(self.id)
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError(f"stream {self.id!r}: the source must be a non-empty string")
        if redact(self.source) != self.source:
            raise ConfigError(f"stream {self.id!r}: a spec holds the shown source (credentials masked)")
        if self.state not in DESIRED_STATES:
            raise ConfigError(
                f"stream {self.id!r}: state must be one of {', '.join(DESIRED_STATES)}, not {self.state!r}"
            )
        if not isinstance(self.sampler, dict):
            raise ConfigError(f"stream {self.id!r}: sampler overrides must be a mapping")
        if self.sampler:
            from .config import SamplerConfig

            unknown = sorted(set(self.sampler) - set(SamplerConfig.model_fields))
            if unknown:
                raise ConfigError(f"stream {self.id!r}: unknown sampler setting(s): {', '.join(unknown)}")
            try:
                SamplerConfig(**self.sampler)
            except ValidationError as exc:
                detail = "; ".join(f"sampler.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ConfigError(f"stream {self.id!r}: {detail}") from None
        if self.generation < 1:
            raise ConfigError(f"stream {self.id!r}: generation must be >= 1")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str) -> StreamSpec:
        raw = json.loads(data)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})

    def public(self) -> dict[str, Any]:
        """The spec as clients see it (the source is already the shown form)."""
        return asdict(self)


class Registry:
    """Stream specs in Redis under ``prefix``. Every write bumps ``updated`` and ``generation``."""

    def __init__(self, client: redis.Redis | Any, *, prefix: str = "lw"):
        self.r = client
        self.prefix = prefix
        self.specs_key = f"{prefix}:specs"
        self.sources_key = f"{prefix}:specs:sources"

    @classmethod
    def of(cls, store: Any) -> Registry:
        """The registry beside a :class:`~.store.SegmentStore` (same client, same prefix)."""
        return cls(store.r, prefix=store.prefix)

    # ---- reading ------------------------------------------------------------------------------

    def get(self, stream_id: str) -> StreamSpec:
        raw = self.r.hget(self.specs_key, stream_id)
        if raw is None:
            raise SpecNotFoundError(stream_id)
        return StreamSpec.from_json(text(raw))

    def find(self, stream_id: str) -> StreamSpec | None:
        try:
            return self.get(stream_id)
        except SpecNotFoundError:
            return None

    def list(self) -> list[StreamSpec]:
        raw = text_dict(self.r.hgetall(self.specs_key))
        return sorted((StreamSpec.from_json(v) for v in raw.values()), key=lambda s: s.id)

    def source(self, stream_id: str) -> str:
        """The source to open: as given (with a literal credential, kept apart) or the spec's own."""
        given = self.r.hget(self.sources_key, stream_id)
        return text(given) if given is not None else self.get(stream_id).source

    # ---- writing ------------------------------------------------------------------------------

    def put(self, spec: StreamSpec, *, source: str | None = None, replace_existing: bool = False) -> StreamSpec:
        """Create a spec (``source``: the source as given, if it differs from the shown form).

        An existing spec with the same source and events is updated in place (state back to what
        ``spec`` says, a new generation); one with another source or other events is
        :class:`SpecExistsError` unless ``replace_existing``."""
        now = time.time()
        old = self.find(spec.id)
        if old is not None and not replace_existing and old.state != "removed":
            if old.source != spec.source:
                raise SpecExistsError(
                    f"stream {spec.id!r} exists with another source ({old.source}); remove it first or give another id",
                    stream_id=spec.id,
                )
            if (old.events or None) != (spec.events or None) or old.sampler != spec.sampler:
                raise SpecExistsError(
                    f"stream {spec.id!r} exists with other events or sampler settings; remove it first, "
                    "or change them with an update",
                    stream_id=spec.id,
                )
        created = old.created if old is not None else now
        generation = old.generation + 1 if old is not None else 1
        new = replace(spec, created=created, updated=now, generation=generation)
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self.specs_key, spec.id, new.to_json())
        if source is not None and redact(source) != source:
            pipe.hset(self.sources_key, spec.id, source)
        else:
            pipe.hdel(self.sources_key, spec.id)
        pipe.execute()
        return new

    def update(self, stream_id: str, **changes: Any) -> StreamSpec:
        """Change fields of an existing spec (``state="paused"``, ``events=…``, ``sampler=…``)."""
        old = self.get(stream_id)
        if old.state == "removed" and changes.get("state") != "running":
            raise SpecNotFoundError(stream_id)
        new = replace(old, **changes, updated=time.time(), generation=old.generation + 1)
        self.r.hset(self.specs_key, stream_id, new.to_json())
        return new

    def set_state(self, stream_id: str, state: str) -> StreamSpec:
        return self.update(stream_id, state=state)

    def delete(self, stream_id: str) -> None:
        """Forget a spec (after the controller stopped its worker)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hdel(self.specs_key, stream_id)
        pipe.hdel(self.sources_key, stream_id)
        pipe.execute()
