"""Model backends and Qwen2.5-VL position IDs."""

from .position_ids import VideoSpan, model_time_to_clip_seconds, position_ids, temporal_ids, uniform_temporal_ids

__all__ = ["VideoSpan", "model_time_to_clip_seconds", "position_ids", "temporal_ids", "uniform_temporal_ids"]
