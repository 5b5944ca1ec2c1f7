"""longwatch's stream-processing core. Plain Python: no Ray here.

The names below are imported on first use (PEP 562): a process that needs one module of the package
(the model replica needs ``errors`` and ``events``) does not import PyAV, OpenCV and pydantic-settings
with it. Every Ray process that imports the package starts that much sooner.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "QwenCompatConfig": "config",
    "SamplerConfig": "config",
    "Settings": "config",
    "SourceConfig": "config",
    "ClipError": "errors",
    "ConfigError": "errors",
    "EmptySourceError": "errors",
    "InvalidVideoError": "errors",
    "LongwatchError": "errors",
    "NoVideoStreamError": "errors",
    "ResolutionError": "errors",
    "SourceError": "errors",
    "SourceNotFoundError": "errors",
    "SourceTimeoutError": "errors",
    "SourceUnreachableError": "errors",
    "UnsupportedSourceError": "errors",
    "VideoPatches": "patches",
    "patchify": "patches",
    "DynamicSampler": "sampler",
    "sample_clips": "sampler",
    "sample_qwen": "sampler",
    "smart_nframes": "sizing",
    "smart_resize": "sizing",
    "DecodedFrame": "source",
    "Source": "source",
    "StreamClock": "timebase",
    "to_stream_seconds": "timebase",
    "to_utc": "timebase",
    "Clip": "types",
    "Frame": "types",
    "Segment": "types",
}

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

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
