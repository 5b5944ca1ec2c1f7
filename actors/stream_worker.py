"""One Ray actor per stream: a thin shell over :class:`pipeline.worker.StreamProcessor`.

The actor restarts when its process dies (``max_restarts``); the controller then calls ``run``
again and the processor resumes from the stream's watermark in Redis.

It is a plain actor, one call at a time: ``run`` holds the process's main thread for the stream's
whole life. An actor that takes calls while one runs (``max_concurrency`` > 1) runs them on a thread
pool and leaves the main thread in Ray's event loop, which wakes every 10 ms to check for signals
(``CoreWorker.CheckSignal``, fixed in Ray's C++): ~10 ms of CPU a second on a 2-core machine of ours,
about a tenth of what a live camera's worker spends. So a call made while ``run`` runs waits for it,
and the controller reaches a running worker through Redis instead: it stops it with a request on
the worker's control list (:meth:`SegmentStore.request_stop`, read by the heartbeat thread with a
blocking pop) and reads its status from the stream's meta, where the worker writes it, as the API does.

Models: each clip goes to the pool (a Ray Serve app) of every backend its events use, except the
detector where ``runtime.model_host`` is ``worker`` (what ``auto`` becomes for a one-shot run of one
source): the worker then builds the detector itself, in a thread while its first clip decodes, and
scores its clips in its own process, one at a time; Ray Serve is imported only where a pool is called.

Model calls wait at most ``runtime.model_timeout_s`` for the pool; a call past it is cancelled and
raises :class:`TimeoutError`, which the processor treats like a busy or restarting replica: the
stream waits with backoff and retries the clip (see :mod:`pipeline.worker`, "Failure policy").
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

import ray

from longwatch.pipeline.config import Settings
from longwatch.pipeline.events import load_events
from longwatch.pipeline.store import SegmentStore

if TYPE_CHECKING:
    from longwatch.pipeline.worker import StreamProcessor


@ray.remote(max_restarts=-1, max_task_retries=0)
class StreamWorker:
    def __init__(
        self,
        stream_id: str,
        uri: str,
        settings_json: str,
        events_text: str,
        redis_url: str,
        start_at: str | None = None,
        control: str = "",
    ):
        """``control``: the token of this worker's control list (the controller's requests, see the
        module doc); empty: none (only a call to :meth:`stop` before :meth:`run` stops it)."""
        # One OpenCV thread: a camera's frames are small (thumbnails, clip frames) and come one at a time,
        # so OpenCV's pool only adds a second thread that spins between them: with it, the motion model
        # and the cut detector cost about twice the CPU for the same work (measured on a 720p30 file).
        import cv2  # here, not at the top: the controller imports this module only to start workers

        cv2.setNumThreads(1)
        self.stream_id = stream_id
        self.uri = uri
        self.settings = Settings.model_validate_json(settings_json)
        if self.settings.runtime.worker_nice:  # see ``runtime.worker_nice``; once per process (a restart is a new one)
            os.nice(self.settings.runtime.worker_nice)
        self.events = load_events(events_text)
        self.store = SegmentStore.from_url(
            redis_url,
            prefix=self.settings.runtime.redis_prefix,
            retry_deadline_s=self.settings.runtime.store_retry_deadline_s,
        )
        self.start_at = start_at
        self.control = control
        self._processor: StreamProcessor | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._close_open = False
        self._beating = threading.Event()
        # the backends this worker hosts itself (runtime.model_host: worker), loaded by run()'s thread
        from .model_settings import worker_hosted

        self._hosted = worker_hosted(self.settings, self.events.model_backends)
        self._backends: dict = {}
        self._hosted_error: Exception | None = None
        self._hosted_ready = threading.Event()
        self._hosted_lock = threading.Lock()
        self._loading = threading.Event()

    def _heartbeat(self) -> None:
        """While :meth:`run` runs: write ``heartbeat`` (Unix s), node and pid into the stream's status
        every ``heartbeat_s`` (the controller marks a worker whose heartbeat stopped as lost), and in
        between wait on the control list for the controller's requests (a stop)."""
        node = ray.get_runtime_context().get_node_id()
        pid = os.getpid()
        every = self.settings.runtime.heartbeat_s
        next_beat = 0.0
        while self._beating.is_set():
            if time.monotonic() >= next_beat:
                try:
                    self.store.set_status(self.stream_id, heartbeat=time.time(), node=node, pid=pid)
                except Exception:  # Redis away: the controller does not judge heartbeats then either
                    pass
                next_beat = time.monotonic() + every
            wait = min(1.0, max(0.05, next_beat - time.monotonic()))  # short: the thread ends soon after run
            if not self.control:
                time.sleep(wait)
                continue
            try:
                request = self.store.next_request(self.stream_id, self.control, timeout_s=wait)
            except Exception:  # Redis away: its requests wait there; read them once it is back
                time.sleep(wait)
                continue
            if request and request.get("op") == "stop":
                self.stop(close_open=bool(request.get("close_open")))

    def _load_hosted(self) -> None:
        """Build the backends this worker hosts itself (``runtime.model_host: worker``), in a thread that
        :meth:`run` starts, so the model loads while the first clip is decoded. A backend that cannot be
        built is a :class:`~longwatch.pipeline.errors.ModelError`, which fails the stream at its first
        clip (a permanent fault: retrying would only repeat it)."""
        from longwatch.model.backend import load_backend
        from longwatch.pipeline.errors import LongwatchError, ModelError

        from .model_settings import pool_settings

        for kind in sorted(self._hosted):
            try:
                backend = load_backend(kind, self.events, **pool_settings(kind, self.settings)["options"])
            except LongwatchError as exc:
                self._hosted_error = exc
                break
            except Exception as exc:
                self._hosted_error = ModelError(f"the {kind} model could not be loaded in the stream worker: {exc}")
                break
            self._backends[kind] = backend
        self._hosted_ready.set()

    def _score_fn(self):
        """Score each clip with every backend its events use: those this worker hosts
        (``runtime.model_host: worker``) here, the others by sending it to their pools (concurrently);
        merge the scores. The answer says what each call took and how many clips its batch held
        (:class:`Scores`; 1 here): the processor keeps them as the status' model latency and batch-size
        histograms. Ray Serve is imported only where a pool is called."""
        from longwatch.pipeline.worker import ModelCall, Scores

        prefix = self.settings.runtime.redis_prefix  # the pools of THIS runtime, never another's
        kinds = self.events.model_backends  # motion runs here, in the stream worker
        pooled = [kind for kind in kinds if kind not in self._hosted]
        pools = []
        if pooled:
            from longwatch.actors import model_pool

            pools = [(kind, model_pool.handle(kind, prefix)) for kind in pooled]
        timeout = self.settings.runtime.model_timeout_s

        def take(merged: dict, boxes: dict, found: dict, scores) -> None:
            merged.update(scores)
            boxes.update(getattr(scores, "boxes", None) or {})
            for name in ("frames_seen", "explained"):
                if getattr(scores, name, None) is not None:
                    found[name] = getattr(scores, name)

        def score(clip):
            sent = time.perf_counter()
            pending = [(kind, pool.score_and_batch.remote(clip)) for kind, pool in pools]
            deadline = time.monotonic() + timeout
            merged: dict = {}
            boxes: dict = {}  # the detector's box per frame, per event (thumbnails)
            # frames_seen: the frames the detector looked at; explained: per frame, looked at and what
            # moved was what it saw
            found: dict = {}
            calls: list[ModelCall] = []
            try:
                if self._hosted:
                    if not self._hosted_ready.wait(max(0.0, deadline - time.monotonic())):
                        raise TimeoutError(f"the hosted model was not loaded within {timeout:g} s")
                    if self._hosted_error is not None:
                        raise self._hosted_error
                    with self._hosted_lock:  # a retried clip never runs beside a call that timed out
                        for kind, backend in self._backends.items():
                            started = time.perf_counter()
                            take(merged, boxes, found, backend.score([clip])[0])
                            calls.append(ModelCall(kind, time.perf_counter() - started, 1))
                for kind, response in pending:
                    scores, batch = response.result(timeout_s=max(0.0, deadline - time.monotonic()))
                    # answers are collected in turn: a second pool's time includes any wait for the first
                    calls.append(ModelCall(kind, time.perf_counter() - sent, int(batch)))
                    take(merged, boxes, found, scores)
            except BaseException as exc:
                for _kind, response in pending:  # a hung replica must not keep working on a clip we retry
                    response.cancel()
                if isinstance(exc, TimeoutError):
                    raise TimeoutError(f"model pool gave no answer within {timeout:g} s") from exc
                raise
            return Scores(merged, calls, boxes, frames_seen=found.get("frames_seen"), explained=found.get("explained"))

        return score

    def run(self) -> dict:
        from longwatch.pipeline.worker import StreamProcessor

        if self._hosted and not self._loading.is_set():
            self._loading.set()
            threading.Thread(target=self._load_hosted, name="load-model", daemon=True).start()
        with self._lock:
            self._processor = StreamProcessor(
                self.stream_id,
                self.uri,
                settings=self.settings,
                events=self.events,
                store=self.store,
                score_fn=self._score_fn(),
                start_at=self.start_at,
                max_pending_clips=self.settings.runtime.max_pending_clips,
            )
            if self._stopped:
                self._processor.stop(close_open=self._close_open)
        self._beating.set()
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        try:
            report = self._processor.run()
        finally:
            self._beating.clear()
        return report.as_status()

    def stop(self, close_open: bool = False) -> None:
        """Stop after the clip in hand (``close_open``: a removed camera closes its open segments)."""
        with self._lock:
            self._stopped = True
            self._close_open = close_open
            if self._processor is not None:
                self._processor.stop(close_open=close_open)

    def status(self) -> dict:
        """The report as it is (a call made while :meth:`run` runs waits for it: the stream's meta in
        Redis has it then, written by the worker)."""
        return self._processor.report.as_status() if self._processor else {"state": "starting"}

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()
