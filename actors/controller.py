"""The controller: a named, detached actor that reconciles the running workers with the registry.

Declared state, reconcile loop (the way Kubernetes controllers work). Every ``reconcile_s`` (and at
once when a client calls :meth:`Controller.reconcile`) it reads every stream spec from the registry
(:mod:`longwatch.pipeline.registry`) and:

- starts a worker for each spec that says ``running`` and has none (it resumes from its watermark),
  except a stream that already finished (``done``) or failed for this generation of its spec;
- stops the worker of a spec that says ``paused`` (the watermark keeps its place);
- stops the worker of a spec that says ``removed``, closing a camera's open segments, deletes the
  stream's segments too when the spec asks to ``purge``, then deletes the spec;
- restarts a worker whose spec changed (events, sampler, source);
- restarts a worker that died (Ray restarts the actor; it resumes from the watermark) and marks a
  worker ``lost`` whose heartbeat stopped for ``runtime.heartbeat_timeout_s`` while Redis answered
  (a frozen process, a partitioned node), kills it and starts a new one.

The controller holds nothing that is not in Redis: after any restart (its own, the serve process's,
the machine's) the first pass resumes every stream whose spec says running. A worker that died cannot
write its own status, so the controller writes it: ``restarting`` (with the reason and the restart
count), ``lost``, or ``failed`` once it died more than ``runtime.max_worker_restarts`` times.

It runs its loop and one supervisor per worker in threads (``ray.get`` with timeouts), so that a
restarted controller resumes its loop from ``__init__``, with nobody to call it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from longwatch.actors.stream_worker import StreamWorker
from longwatch.pipeline.config import Settings
from longwatch.pipeline.registry import Registry, StreamSpec
from longwatch.pipeline.report import StreamReport
from longwatch.pipeline.secrets import redact
from longwatch.pipeline.store import SegmentStore

log = logging.getLogger(__name__)

CONTROLLER_NAME = "longwatch-controller"  # + "-<prefix>": see controller_name
ACTIVE = ("starting", "running", "waiting", "restarting")
ENDED = ("done", "failed", "stopped", "paused", "removed")
# what a running worker's status shows of the stream's meta: its report, and its heartbeat's fields
_REPORT_FIELDS = (*StreamReport(stream_id="-", uri="-").as_status(), "heartbeat", "node", "pid")


def controller_name(prefix: str) -> str:
    """The named Ray actor of the controller of the runtime with Redis prefix ``prefix``: one per prefix,
    so two services on one cluster (different prefixes) never find, adopt or kill each other's."""
    return f"{CONTROLLER_NAME}-{prefix}"


@dataclass
class _Entry:
    """What the controller knows of one stream's worker (rebuilt from Redis after a restart)."""

    spec: StreamSpec
    worker: Any = None
    state: str = "starting"
    restarts: int = 0
    error: str = ""
    result: dict | None = None
    started_at: float = field(default_factory=time.time)
    stopping: str = ""  # why the worker is being stopped: "paused", "removed", "changed", "lost", "close"
    control: str = ""  # the token of the worker's control list (see :mod:`.stream_worker`)
    finished: threading.Event = field(default_factory=threading.Event)


def _worker_relevant(spec: StreamSpec) -> tuple:
    return (spec.source, spec.events, sorted(spec.sampler.items()), spec.start_at)


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=64)
class Controller:
    def __init__(
        self,
        settings_json: str,
        events_text: str,
        redis_url: str,
        *,
        reconcile_s: float = 1.0,
        one_shot: bool = False,
    ):
        self.settings_json = settings_json
        self.settings = Settings.model_validate_json(settings_json)
        self.events_text = events_text
        self.redis_url = redis_url
        self.reconcile_s = reconcile_s
        rt = self.settings.runtime
        self.store = SegmentStore.from_url(redis_url, prefix=rt.redis_prefix, retry_deadline_s=5.0)
        self.registry = Registry.of(self.store)
        self.entries: dict[str, _Entry] = {}
        # One-shot (``longwatch run``): only the streams this run added (:meth:`manage`), never the
        # service's other specs. The service (None) reconciles every spec of its prefix.
        self._managed: set[str] | None = set() if one_shot else None
        self._sources: dict[str, str] = {}  # sources as given, one-shot mode (never written to Redis)
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._redis_ok_since: float | None = None
        self._loop = threading.Thread(target=self._run_loop, name="reconcile", daemon=True)
        self._loop.start()

    # ---- the loop -------------------------------------------------------------------------------

    def _run_loop(self) -> None:
        while not self._closing.is_set():
            try:
                self._reconcile_once()
            except Exception as exc:  # Redis away: keep the workers as they are, try again
                self._redis_ok_since = None
                log.warning("reconcile failed (%s: %s); retrying", type(exc).__name__, redact(str(exc)))
            self._wake.wait(self.reconcile_s)
            self._wake.clear()

    def reconcile(self) -> dict:
        """One pass now (clients call this after writing a spec); returns the status."""
        self._reconcile_once()
        return self.status()

    def manage(self, stream_id: str, source: str | None = None) -> None:
        """Take ``stream_id`` (whose spec the caller wrote) into this run (one-shot mode), and reconcile.
        ``source``: the source as given, held in memory only (a one-shot run persists no credential)."""
        if self._managed is not None:
            self._managed.add(stream_id)
        if source is not None:
            self._sources[stream_id] = source
        self._reconcile_once()

    def _reconcile_once(self) -> None:
        if self._closing.is_set():
            return
        with self._lock:
            specs = {s.id: s for s in self.registry.list() if self._managed is None or s.id in self._managed}
            if self._redis_ok_since is None:
                self._redis_ok_since = time.time()
            for spec in specs.values():
                self._reconcile_stream(spec)
            for sid, entry in list(self.entries.items()):  # a spec deleted behind our back
                if sid not in specs and entry.state in ACTIVE and not entry.stopping:
                    self._stop_worker(entry, "removed")
            self._check_heartbeats()

    def _reconcile_stream(self, spec: StreamSpec) -> None:
        entry = self.entries.get(spec.id)
        active = entry is not None and entry.state in ACTIVE
        if spec.state == "removed":
            if active and entry is not None:
                if not entry.stopping:
                    self._stop_worker(entry, "removed")
                return  # the supervisor finishes the removal once the worker has stopped
            self._finish_removal(spec)
            return
        if spec.state == "paused":
            if active and entry is not None:
                if not entry.stopping:
                    self._stop_worker(entry, "paused")
            elif entry is None or entry.state != "paused" or entry.spec.generation != spec.generation:
                self.entries[spec.id] = _Entry(spec=spec, state="paused", finished=_set_event())
                self.store.set_status(spec.id, state="paused", reason="", generation=spec.generation)
            return
        # running
        if active and entry is not None:
            if entry.stopping:
                return  # being stopped (paused, changed): started again once it has
            if _worker_relevant(entry.spec) != _worker_relevant(spec):
                self._stop_worker(entry, "changed")
            else:
                entry.spec = spec
            return
        if entry is not None and entry.spec.generation == spec.generation and entry.state in ("done", "failed"):
            return  # finished for this generation: a new one (resume, update) runs it again
        if entry is None:
            meta = self.store.meta(spec.id)
            if meta.get("generation") == spec.generation and meta.get("state") in ("done", "failed"):
                self.entries[spec.id] = _Entry(
                    spec=spec, state=meta["state"], error=str(meta.get("error") or ""), finished=_set_event()
                )
                return
        self._start_worker(spec, restarts=entry.restarts if entry is not None else 0)

    def _check_heartbeats(self) -> None:
        """A running worker whose heartbeat stopped while Redis answered is lost: kill it, start anew."""
        timeout = self.settings.runtime.heartbeat_timeout_s
        now = time.time()
        if self._redis_ok_since is None or now - self._redis_ok_since < timeout:
            return  # Redis was away: old heartbeats say nothing
        for sid, entry in self.entries.items():
            if entry.state not in ("running", "waiting") or entry.stopping or now - entry.started_at < timeout:
                continue
            beat = self.store.meta(sid).get("heartbeat")
            if isinstance(beat, (int, float)) and now - beat > timeout:
                log.warning("stream %s: no heartbeat for %.0f s; restarting its worker", sid, now - beat)
                self._stop_worker(entry, "lost")

    # ---- workers --------------------------------------------------------------------------------

    def _worker_settings(self, spec: StreamSpec) -> str:
        if not spec.sampler:
            return self.settings_json
        sampler = self.settings.sampler.model_copy(update=spec.sampler)
        return self.settings.model_copy(update={"sampler": sampler}).model_dump_json()

    def _start_worker(self, spec: StreamSpec, *, restarts: int = 0) -> _Entry:
        source = self._sources.get(spec.id) or self.registry.source(spec.id)
        control = uuid.uuid4().hex
        worker = StreamWorker.options(num_cpus=self.settings.runtime.worker_num_cpus).remote(
            spec.id,
            source,
            self._worker_settings(spec),
            spec.events or self.events_text,
            self.redis_url,
            spec.start_at,
            control,
        )
        entry = _Entry(spec=spec, worker=worker, state="starting", restarts=restarts, control=control)
        self.entries[spec.id] = entry
        self.store.set_status(
            spec.id, state="starting", reason="", error="", generation=spec.generation, source=spec.source
        )
        threading.Thread(target=self._supervise, args=(entry,), name=f"supervise-{spec.id}", daemon=True).start()
        return entry

    def _stop_worker(self, entry: _Entry, why: str) -> None:
        entry.stopping = why
        worker = entry.worker
        if worker is None:
            return
        if why == "lost":
            ray.kill(worker, no_restart=True)  # a frozen process cannot stop itself
            return
        # A running worker reads its control list (a call would wait for its run() to end); one not
        # running yet takes the call first.
        try:
            self.store.request_stop(entry.spec.id, entry.control, close_open=why == "removed")
        except Exception as exc:  # Redis away: the call below still stops a worker that has not begun
            log.warning("stream %s: could not ask its worker to stop through Redis: %s", entry.spec.id, exc)
        try:
            worker.stop.remote(close_open=why == "removed")
        except Exception:  # the worker is gone: its supervisor sees that
            pass

    def _supervise(self, entry: _Entry) -> None:
        sid = entry.spec.id
        limit = self.settings.runtime.max_worker_restarts
        pid = self._pid(entry)
        while True:
            entry.state = "running"
            try:
                result = ray.get(entry.worker.run.remote())
            except RayTaskError as exc:  # the stream itself failed (bad source …): it fails alone
                self._ended(entry, "failed", error=redact(str(exc.cause if exc.cause else exc).splitlines()[0]))
                return
            except RayActorError as exc:  # the worker process died (or was unreachable a while), or we killed it
                if entry.stopping == "lost":
                    self._replace_lost(entry)
                    return
                if entry.stopping:
                    self._ended(entry, "stopped")
                    return
                # Call run() again only once Ray has brought the worker back: a call made while it is
                # still restarting fails too, and must not count as another death.
                back = self._until_alive(entry)
                new_pid = self._pid(entry) if back else None
                if back and isinstance(exc, ActorUnavailableError) and new_pid == pid:
                    continue  # the same process, unreachable for a moment: not a death
                pid = new_pid
                entry.restarts += 1
                log.warning("stream %s: worker died (%s); restart %d", sid, type(exc).__name__, entry.restarts)
                if entry.restarts > limit:
                    self._ended(entry, "failed", error=f"worker died {entry.restarts} times")
                    return
                if not back:
                    self._ended(entry, "failed", error="the worker did not come back after it died")
                    return
                entry.state = "restarting"
                reason = f"worker died ({type(exc).__name__}); restart {entry.restarts}, resuming from the watermark"
                self._publish(sid, state="restarting", reason=reason, restarts=entry.restarts, last_restart=reason)
                continue
            except Exception as exc:  # never let a supervisor thread die silently
                self._ended(entry, "failed", error=f"{type(exc).__name__}: {redact(str(exc))}")
                return
            entry.result = result
            self._ended(entry, "stopped" if entry.stopping else result.get("state", "done"))
            return

    @staticmethod
    def _pid(entry: _Entry) -> int | None:
        try:
            return ray.get(entry.worker.pid.remote(), timeout=30.0)
        except Exception:
            return None

    def _until_alive(self, entry: _Entry, timeout_s: float = 180.0) -> bool:
        """Wait until a restarted worker answers (True), or ``timeout_s`` passes or it is stopped (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not entry.stopping:
            try:
                ray.get(entry.worker.pid.remote(), timeout=10.0)
                return True
            except (RayActorError, GetTimeoutError):
                time.sleep(0.5)
        return False

    def _replace_lost(self, entry: _Entry) -> None:
        entry.restarts += 1
        reason = f"worker lost (no heartbeat for {self.settings.runtime.heartbeat_timeout_s:g} s); restarted"
        self._publish(entry.spec.id, state="lost", reason=reason, restarts=entry.restarts, last_restart=reason)
        with self._lock:
            spec = self.registry.find(entry.spec.id)
            entry.finished.set()
            if spec is not None and spec.state == "running" and not self._closing.is_set():
                self._start_worker(spec, restarts=entry.restarts)
            else:
                entry.state = "stopped"

    def _ended(self, entry: _Entry, state: str, *, error: str = "") -> None:
        """A worker ended: record why, give its CPUs back, and act on what its stopping was for."""
        sid = entry.spec.id
        if state == "stopped" and entry.stopping in ("paused", "removed"):
            state = entry.stopping
        entry.state, entry.error = state, error
        if entry.worker is not None:
            try:
                ray.kill(entry.worker, no_restart=True)  # its reserved CPUs are freed now, not at shutdown
            except Exception:
                pass
        if state in ("failed", "paused"):
            self._publish(sid, state=state, reason="", error=error, generation=entry.spec.generation)
        elif state == "done":
            self._publish(sid, generation=entry.spec.generation)
        why = entry.stopping
        entry.finished.set()
        if why == "removed":
            try:
                self._finish_removal(entry.spec)
            except Exception as exc:
                log.warning("stream %s: removal not finished (%s); the next pass retries", sid, exc)
        elif why == "changed":
            self._wake.set()  # the next pass starts it with its new spec

    def _finish_removal(self, spec: StreamSpec) -> None:
        with self._lock:
            current = self.registry.find(spec.id)
            if current is None or current.state != "removed":
                return
            if current.purge:
                self.store.drop_stream(spec.id)
            else:
                self.store.set_status(spec.id, state="removed", reason="")
            self.registry.delete(spec.id)
            self.entries.pop(spec.id, None)

    def _publish(self, stream_id: str, **fields) -> None:
        """Write status fields for a worker that cannot (it died). Best effort."""
        try:
            self.store.set_status(stream_id, **fields)
        except Exception as exc:
            log.debug("stream %s: status update failed: %s", stream_id, exc)

    # ---- what clients ask -----------------------------------------------------------------------

    def wait(self, timeout: float | None = None, stream_ids: list[str] | None = None) -> dict:
        """Wait until the given (default: all) streams' workers have ended; cameras end only when stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ids = stream_ids or list(self.entries)
        for sid in ids:
            while True:
                entry = self.entries.get(sid)
                if entry is None:
                    break
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if entry.finished.wait(remaining if remaining is not None else 1.0):
                    if self.entries.get(sid) is entry:
                        break
                    continue  # replaced (a lost worker restarted): wait for the new one
                if deadline is not None and time.monotonic() >= deadline:
                    return self.status()
        return self.status()

    def status(self) -> dict:
        out = {}
        entries = list(self.entries.items())
        lives = self._live_statuses([sid for sid, e in entries if e.state == "running" and e.worker is not None])
        for sid, e in entries:
            live: dict = lives.get(sid, {})
            state = e.state
            if state == "running" and live.get("state") == "waiting":  # the worker waits out a fault, says why
                state = "waiting"
            out[sid] = {
                **(e.result or {}),
                **live,
                "uri": e.spec.source,
                "state": state,
                "restarts": e.restarts,
                "error": e.error or (e.result or {}).get("error", ""),
                "generation": e.spec.generation,
            }
        return out

    def _live_statuses(self, stream_ids: list[str]) -> dict[str, dict]:
        """Running workers' reports as they last wrote them into their streams' meta (a call to a worker
        would wait for its run() to end, see :mod:`.stream_worker`), in one round trip."""
        try:
            metas = self.store.metas(stream_ids)
        except Exception as exc:  # Redis away: no worker can commit a clip, so each waits for it (its failure policy)
            why = {"state": "waiting", "reason": f"Redis unreachable ({type(exc).__name__}): waiting to commit"}
            return {sid: dict(why) for sid in stream_ids}
        return {sid: {k: meta[k] for k in _REPORT_FIELDS if k in meta} for sid, meta in metas.items()}

    def worker(self, stream_id: str):
        return self.entries[stream_id].worker

    def stop(self, stream_id: str | None = None, timeout: float = 30.0) -> None:
        """Stop every worker without touching the specs (the runtime is shutting down; the next
        controller resumes them from their watermarks), or one stream, whose spec is paused."""
        with self._lock:
            if stream_id is None:
                self._closing.set()
            elif self.registry.find(stream_id) is not None:
                # One stream: its spec says paused now, or the next pass would start it again.
                self.registry.set_state(stream_id, "paused")
            ids = [stream_id] if stream_id else list(self.entries)
            stopping = [self.entries[s] for s in ids if s in self.entries and self.entries[s].state in ACTIVE]
            for entry in stopping:
                if not entry.stopping:
                    self._stop_worker(entry, "paused" if stream_id else "close")
        deadline = time.monotonic() + timeout
        for entry in stopping:
            entry.finished.wait(max(0.0, deadline - time.monotonic()))

    def ping(self) -> str:
        """The Redis this controller reconciles from (a runtime adopts only a controller on its own)."""
        return self.redis_url


def _set_event() -> threading.Event:
    ev = threading.Event()
    ev.set()
    return ev
