"""A stream's status as its worker reports it (:class:`StreamReport`, written into the stream's meta in
Redis, read by ``longwatch streams``, the API, the controller and ``/metrics``), and one model call as
the worker saw it (:class:`ModelCall`, for the report's histograms). A module of its own, light to
import: the controller reads these fields without the pipeline's decoding code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .histograms import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S, Histogram


@dataclass(frozen=True)
class ModelCall:
    """One call of a model pool for a clip, as the caller saw it: the pool's backend kind, the call's
    wall time (from sending the clip to having its scores), and how many clips the pool's batch held."""

    backend: str
    latency_s: float
    batch_size: int | None = None


@dataclass
class StreamReport:
    stream_id: str
    uri: str
    state: str = "starting"
    clips: int = 0
    footage_s: float = 0.0
    wall_s: float = 0.0
    dropped_clips: int = 0
    segments_committed: int = 0
    resumed_from: float | None = None
    error: str | None = None
    lag_s: float | None = None
    fps: float = 0.0
    reason: str = ""  # why the stream is ``waiting`` (model unavailable, Redis unreachable)
    decode_fps: float = 0.0  # frames decoded per wall second (last RATE_WINDOW_S)
    sampled_fps: float = 0.0  # frames kept in clips per wall second (last RATE_WINDOW_S)
    queue_depth: int = 0  # clips waiting in the bounded queue for the model
    reconnects: int = 0  # reconnections of a live source, this run
    model_latency: dict[str, Histogram] = field(default_factory=dict)  # backend kind → seconds per call
    model_batch_size: dict[str, Histogram] = field(default_factory=dict)  # backend kind → clips per batch
    sampled_frames: int = 0  # frames in the clips processed, this run
    detected_frames: int = 0  # of those, the frames the motion gate sent to the detector

    def observe_model_call(self, call: ModelCall) -> None:
        """Add one model call to the backend's latency and batch-size histograms."""
        lat = self.model_latency.get(call.backend) or Histogram(LATENCY_BUCKETS_S)
        lat.observe(call.latency_s)
        self.model_latency[call.backend] = lat
        if call.batch_size is not None:
            bat = self.model_batch_size.get(call.backend) or Histogram(BATCH_SIZE_BUCKETS)
            bat.observe(call.batch_size)
            self.model_batch_size[call.backend] = bat

    def as_status(self) -> dict:
        return {
            "state": self.state,
            "reason": self.reason,
            "clips": self.clips,
            "footage_s": round(self.footage_s, 3),
            "wall_s": round(self.wall_s, 3),
            "dropped_clips": self.dropped_clips,
            "segments_committed": self.segments_committed,
            "error": self.error or "",
            "lag_s": "" if self.lag_s is None else round(self.lag_s, 3),
            "fps": round(self.fps, 3),
            "speed": round(self.footage_s / self.wall_s, 2) if self.wall_s > 0 else 0.0,
            "decode_fps": round(self.decode_fps, 3),
            "sampled_fps": round(self.sampled_fps, 3),
            "queue_depth": self.queue_depth,
            "reconnects": self.reconnects,
            "sampled_frames": self.sampled_frames,
            "detected_frames": self.detected_frames,
            # list(): a snapshot (the actor's status() reads the report from another thread)
            "model_latency_s": {k: h.as_json() for k, h in list(self.model_latency.items())},
            "model_batch_size": {k: h.as_json() for k, h in list(self.model_batch_size.items())},
        }
