"""Model backends (one :class:`Backend` protocol: the detector and the VLM) and Qwen2.5-VL position IDs."""

from .backend import Backend, load_backend
from .position_ids import VideoSpan, model_time_to_clip_seconds, position_ids, temporal_ids, uniform_temporal_ids

__all__ = [
    "Backend",
    "VideoSpan",
    "load_backend",
    "model_time_to_clip_seconds",
    "position_ids",
    "temporal_ids",
    "uniform_temporal_ids",
]
