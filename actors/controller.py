"""The controller: owns the stream registry, starts one worker per stream, restarts crashed ones.

A worker that dies (SIGKILL, OOM, a lost node) cannot write its own status, so the controller writes
it to Redis for it: ``restarting`` (with the reason and the restart count) while Ray restarts it and
the worker resumes from its watermark (then it writes ``running`` itself), ``failed`` once it died more
than ``runtime.max_worker_restarts`` times.
"""

from __future__ import annotations

import asyncio
import logging
import time

import ray
from ray.exceptions import RayActorError, RayTaskError

from longwatch.actors.stream_worker import StreamWorker
from longwatch.pipeline.config import Settings
from longwatch.pipeline.secrets import redact
from longwatch.pipeline.store import SegmentStore

log = logging.getLogger(__name__)

CONTROLLER_NAME = "longwatch-controller"  # + "-<prefix>": see controller_name


def controller_name(prefix: str) -> str:
    """The named Ray actor of the controller of the runtime with Redis prefix ``prefix``: one per prefix,
    so two services on one cluster (different prefixes) never find, adopt or kill each other's."""
    return f"{CONTROLLER_NAME}-{prefix}"


@ray.remote(num_cpus=0, max_restarts=-1)
class Controller:
    def __init__(self, settings_json: str, events_text: str, redis_url: str):
        self.settings_json = settings_json
        self.settings = Settings.model_validate_json(settings_json)
        self.events_text = events_text
        self.redis_url = redis_url
        self.streams: dict[str, dict] = {}
        self._store: SegmentStore | None = None

    async def _publish(self, stream_id: str, **fields) -> None:
        """Write status fields for a worker that cannot (it died). Best effort, off the event loop."""

        def write() -> None:
            if self._store is None:
                self._store = SegmentStore.from_url(
                    self.redis_url, prefix=self.settings.runtime.redis_prefix, retry_deadline_s=5.0
                )
            self._store.set_status(stream_id, **fields)

        try:
            await asyncio.to_thread(write)
        except Exception as exc:
            log.debug("stream %s: status update failed: %s", stream_id, exc)

    async def add(self, stream_id: str, uri: str, start_at: str | None = None) -> str:
        entry = self.streams.get(stream_id)
        if entry and entry["state"] in ("starting", "running", "restarting"):
            raise ValueError(f"stream {stream_id!r} is already running ({entry['uri']})")
        worker = StreamWorker.options(num_cpus=self.settings.runtime.worker_num_cpus).remote(
            stream_id, uri, self.settings_json, self.events_text, self.redis_url, start_at
        )
        self.streams[stream_id] = entry = {
            "uri": redact(uri),  # shown form; the worker alone gets the source as given
            "worker": worker,
            "state": "starting",
            "restarts": 0,
            "error": "",
            "result": None,
            "added": time.time(),
        }
        entry["task"] = asyncio.get_running_loop().create_task(self._supervise(stream_id))
        return stream_id

    async def _supervise(self, stream_id: str) -> None:
        entry = self.streams[stream_id]
        limit = self.settings.runtime.max_worker_restarts
        while True:
            entry["state"] = "running"
            try:
                result = await entry["worker"].run.remote()
            except RayTaskError as exc:  # the stream itself failed (bad source …): it fails alone
                entry["state"], entry["error"] = "failed", redact(str(exc.cause if exc.cause else exc).splitlines()[0])
                self._release(entry)
                return
            except RayActorError as exc:  # the worker process died: Ray restarts it, we resume it
                entry["restarts"] += 1
                log.warning("stream %s: worker died (%s); restart %d", stream_id, type(exc).__name__, entry["restarts"])
                if entry["restarts"] > limit:
                    entry["state"], entry["error"] = "failed", f"worker died {entry['restarts']} times"
                    await self._publish(stream_id, state="failed", reason="", error=entry["error"])
                    self._release(entry)
                    return
                entry["state"] = "restarting"
                reason = f"worker died ({type(exc).__name__}); restart {entry['restarts']}, resuming from the watermark"
                await self._publish(stream_id, state="restarting", reason=reason, restarts=entry["restarts"])
                # Call run() again only once Ray has brought the worker back: a call made while it is
                # still restarting fails too, and must not count as another death.
                if not await self._until_alive(entry["worker"]):
                    entry["state"], entry["error"] = "failed", "the worker did not come back after it died"
                    await self._publish(stream_id, state="failed", reason="", error=entry["error"])
                    self._release(entry)
                    return
                continue
            entry["state"], entry["result"] = result.get("state", "done"), result
            self._release(entry)
            return

    @staticmethod
    async def _until_alive(worker, timeout_s: float = 180.0) -> bool:
        """Wait until a restarted worker answers (True), or ``timeout_s`` passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            try:
                await asyncio.wait_for(worker.pid.remote(), timeout=10.0)
                return True
            except (RayActorError, TimeoutError):
                await asyncio.sleep(0.5)
        return False

    @staticmethod
    def _release(entry: dict) -> None:
        """A finished stream's worker exits, giving back the CPUs it reserved (else held until the run ends)."""
        ray.kill(entry["worker"], no_restart=True)

    async def wait(self, timeout: float | None = None, stream_ids: list[str] | None = None) -> dict:
        """Wait for the given (default: all) streams to finish; live streams finish only when stopped."""
        ids = stream_ids or list(self.streams)
        tasks = [self.streams[s]["task"] for s in ids if s in self.streams]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        return await self.status()

    async def status(self) -> dict:
        out = {}
        for sid, e in self.streams.items():
            live = {}
            if e["state"] == "running":
                try:
                    live = await asyncio.wait_for(e["worker"].status.remote(), timeout=2.0)
                except Exception:
                    live = {}
            state = e["state"]
            if state == "running" and live.get("state") == "waiting":  # the worker waits out a fault, says why
                state = "waiting"
            out[sid] = {
                **(e["result"] or {}),
                **live,
                "uri": e["uri"],
                "state": state,
                "restarts": e["restarts"],
                "error": e["error"],
            }
        return out

    async def worker(self, stream_id: str):
        return self.streams[stream_id]["worker"]

    async def stop(self, stream_id: str | None = None) -> None:
        ids = [stream_id] if stream_id else list(self.streams)
        for sid in ids:
            e = self.streams.get(sid)
            if e and e["state"] in ("starting", "running", "restarting"):
                try:
                    await e["worker"].stop.remote()
                except RayActorError:
                    pass
        tasks = [self.streams[s]["task"] for s in ids if s in self.streams]
        if tasks:
            await asyncio.wait(tasks, timeout=30)
