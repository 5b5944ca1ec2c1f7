"""Stream identity: ids, and the fingerprints that bind a stream id to one source and one pipeline.

Ids. A stream id is given (``--id``; letters, digits, ``_ . -``, 1–64 characters, checked by
:func:`check_stream_id`) or derived from the WHOLE source by :func:`default_stream_id`:

- a file: ``<stem>-<8 hex of sha1(absolute resolved path)>``, so ``a/cam.mp4`` and ``b/cam.mp4`` get
  different ids, and the same file always gets the same id (a second run resumes it);
- a URL: host-port-path (query too) without scheme or credentials (secret-looking query values
  masked), e.g. ``10.0.0.5-554-stream``;
  a URL too long for 64 characters keeps its head and ends in 8 hex of its hash.

Fingerprints, stored with the watermark (:data:`SOURCE_FP_KEY`, :data:`PIPELINE_FP_KEY`):

- source (:func:`source_fingerprint`): for a file its size, its mtime (ns) and a sha256 of its first
  and last MiB. The path is not part of it (the id already is). A byte-identical copy with a NEW
  mtime (``cp`` without ``-p``) therefore counts as a different source: we cannot tell a copy from an
  edit without reading the whole file, and erring that way re-decodes rather than skipping footage.
  For a live source: the URL without credentials (``user:pass@`` is dropped; never stored).
- pipeline (:func:`pipeline_fingerprint`): a sha256 of the events (every field that changes segments;
  descriptions excluded) and of the sampler settings.

:func:`check_identity` compares a stored watermark with the fingerprints of a new start and raises
:class:`~.errors.StreamIdentityError` naming what differs and how to go on (another ``--id``, or
``--reprocess``). A watermark written before fingerprints existed has none and is accepted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import InvalidStreamIdError, StreamIdentityError
from .secrets import redact

__all__ = [
    "PIPELINE_FP_KEY",
    "SOURCE_FP_KEY",
    "STREAM_ID_MAX",
    "check_identity",
    "check_stream_id",
    "default_stream_id",
    "fingerprints",
    "pipeline_fingerprint",
    "source_fingerprint",
    "strip_credentials",
]

STREAM_ID_MAX = 64
SOURCE_FP_KEY = "source_fp"
PIPELINE_FP_KEY = "pipeline_fp"
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MIB = 1 << 20


def check_stream_id(stream_id: Any) -> str:
    """``stream_id`` if it is a valid id (letters, digits, ``_ . -``, 1–64 characters), else
    :class:`InvalidStreamIdError` naming it."""
    if not isinstance(stream_id, str) or not _ID_RE.match(stream_id):
        why = (
            "it is empty"
            if stream_id == ""
            else f"it has {len(stream_id)} characters"
            if isinstance(stream_id, str) and len(stream_id) > STREAM_ID_MAX
            else "it holds other characters"
        )
        raise InvalidStreamIdError(
            f"invalid stream id {stream_id!r}: {why}; use 1-{STREAM_ID_MAX} letters, digits, '_', '.' or '-'",
            stream_id=str(stream_id),
        )
    return stream_id


def strip_credentials(url: str) -> str:
    """``url`` without ``user:pass@`` in its authority, and with secret-looking query values
    (``token=`` …) masked by :func:`~.secrets.redact`: the form ids and fingerprints are made of."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return redact(url)


def _sha1_8(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")


def _file_path(uri: str | os.PathLike) -> str | None:
    from .source import classify

    kind, target = classify(uri)
    return target if kind == "file" else None


def default_stream_id(uri: str | os.PathLike, taken: set[str] | None = None) -> str:
    """The id of a source given without ``--id`` (see the module doc). ``taken`` ids are avoided
    with a ``-2``, ``-3`` … suffix (the same source named twice in one run)."""
    text = os.fspath(uri)
    path = _file_path(text)
    if path is not None:
        resolved = str(Path(path).expanduser().resolve())
        suffix = "-" + _sha1_8(resolved)
        sid = (_clean(Path(path).stem)[: STREAM_ID_MAX - len(suffix)].rstrip("-.") or "file") + suffix
    else:
        bare = strip_credentials(text)
        base = _clean(re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", bare)) or "stream"
        if len(base) > STREAM_ID_MAX:
            suffix = "-" + _sha1_8(bare)
            base = base[: STREAM_ID_MAX - len(suffix)].rstrip("-.") + suffix
        sid = base
    taken = taken or set()
    out, n = sid, 2
    while out in taken:
        tail = f"-{n}"
        out, n = sid[: STREAM_ID_MAX - len(tail)] + tail, n + 1
    return out


def source_fingerprint(uri: str | os.PathLike) -> dict[str, Any]:
    """What identifies the source's content (see the module doc): for a file
    ``{"kind": "file", "size", "mtime_ns", "head_tail_sha256"}``, for a live source
    ``{"kind": "url", "url": <url without credentials>}``. A missing file raises OSError."""
    text = os.fspath(uri)
    path = _file_path(text)
    if path is None:
        return {"kind": "url", "url": strip_credentials(text)}
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_MIB))
        if st.st_size > _MIB:
            f.seek(max(_MIB, st.st_size - _MIB))
            h.update(f.read(_MIB))
    return {"kind": "file", "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_tail_sha256": h.hexdigest()}


def pipeline_fingerprint(events: Any, sampler: Any) -> str:
    """sha256 (hex) over the events (an :class:`~.events.EventsSpec`; descriptions left out) and the
    sampler settings (a :class:`~.config.SamplerConfig`): what changes the segments a source gives."""
    evs = events.model_dump(mode="json")["events"]
    for ev in evs:
        ev.pop("description", None)
    doc = {"events": evs, "sampler": sampler.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fingerprints(uri: str | os.PathLike, events: Any, sampler: Any) -> dict[str, Any]:
    """The two fingerprints as watermark fields."""
    return {SOURCE_FP_KEY: source_fingerprint(uri), PIPELINE_FP_KEY: pipeline_fingerprint(events, sampler)}


def _describe(old: dict, new: dict) -> str:
    if old.get("kind") != new.get("kind"):
        return f"it was a {old.get('kind')} source, now a {new.get('kind')} source"
    if new.get("kind") == "url":
        return f"it was {old.get('url')}, now {new.get('url')}"
    what = [k for k in ("size", "mtime_ns", "head_tail_sha256") if old.get(k) != new.get(k)]
    names = {"size": "size", "mtime_ns": "modification time", "head_tail_sha256": "content"}
    detail = ", ".join(names[k] for k in what)
    if "size" in what:
        detail += f" ({old.get('size')} -> {new.get('size')} bytes)"
    return f"a file with another {detail}"


def check_identity(stream_id: str, watermark: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """Raise :class:`StreamIdentityError` if ``watermark`` (stored for ``stream_id``) was written
    for another source or another pipeline than ``current`` (from :func:`fingerprints`)."""
    if not watermark:
        return
    old_src, new_src = watermark.get(SOURCE_FP_KEY), current.get(SOURCE_FP_KEY)
    old_pipe, new_pipe = watermark.get(PIPELINE_FP_KEY), current.get(PIPELINE_FP_KEY)
    fix = (
        f"give this source another id (--id), or start stream {stream_id!r} over with --reprocess "
        "(which deletes its segments)"
    )
    if old_src is not None and new_src is not None and old_src != new_src:
        raise StreamIdentityError(
            f"stream {stream_id!r} already holds segments of another source ({_describe(old_src, new_src)}); {fix}",
            stream_id=stream_id,
            differs="source",
        )
    if old_pipe is not None and new_pipe is not None and old_pipe != new_pipe:
        raise StreamIdentityError(
            f"stream {stream_id!r} was processed with other events or sampler settings; {fix}",
            stream_id=stream_id,
            differs="pipeline",
        )
