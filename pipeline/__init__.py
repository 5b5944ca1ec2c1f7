"""longwatch's stream-processing core. Plain Python: no Ray here."""

from .config import QwenCompatConfig, SamplerConfig, Settings, SourceConfig
from .errors import (
    ClipError,
    ConfigError,
    EmptySourceError,
    InvalidVideoError,
    LongwatchError,
    NoVideoStreamError,
    ResolutionError,
    SourceError,
    SourceNotFoundError,
    SourceTimeoutError,
    SourceUnreachableError,
    UnsupportedSourceError,
)
from .patches import VideoPatches, patchify
from .sampler import DynamicSampler, sample_clips, sample_qwen
from .sizing import smart_nframes, smart_resize
from .source import DecodedFrame, Source
from .timebase import StreamClock, to_stream_seconds, to_utc
from .types import Clip, Frame, Segment

__all__ = [
    "Clip",
    "ClipError",
    "ConfigError",
    "DecodedFrame",
    "DynamicSampler",
    "EmptySourceError",
    "Frame",
    "InvalidVideoError",
    "LongwatchError",
    "NoVideoStreamError",
    "QwenCompatConfig",
    "ResolutionError",
    "SamplerConfig",
    "Segment",
    "Settings",
    "Source",
    "SourceConfig",
    "SourceError",
    "SourceNotFoundError",
    "SourceTimeoutError",
    "SourceUnreachableError",
    "StreamClock",
    "UnsupportedSourceError",
    "VideoPatches",
    "patchify",
    "sample_clips",
    "sample_qwen",
    "smart_nframes",
    "smart_resize",
    "to_stream_seconds",
    "to_utc",
]
