"""Typed errors. Each subclasses a builtin so callers can catch either ours or the familiar one."""

from __future__ import annotations


class LongwatchError(Exception):
    """Base of every error longwatch raises on purpose."""


class ConfigError(LongwatchError, ValueError):
    """A configuration value is invalid."""


class SourceError(LongwatchError):
    """A source (file or URL) cannot be opened or read. ``uri`` names it, redacted: credentials in
    the URL, and in a message that echoes one (FFmpeg's text does), are ``***`` (:mod:`.secrets`)."""

    def __init__(self, message: str, *, uri: str | None = None):
        from .secrets import redact

        uri = redact(uri) if uri else uri
        message = redact(message)
        super().__init__(f"{uri}: {message}" if uri else message)
        self.uri = uri


class MissingSecretError(SourceError, ConfigError):
    """A source names an environment variable (``${CAM3_PASSWORD}``) that is not set where the stream
    is opened. ``variables`` lists the missing names; no value ever appears in the message."""

    def __init__(self, variables: list[str], *, uri: str | None = None):
        names = ", ".join(variables)
        verb = "are" if len(variables) > 1 else "is"
        super().__init__(
            f"environment variable {names} {verb} not set (set it where longwatch runs; it is read when the "
            "stream is opened)",
            uri=uri,
        )
        self.variables = list(variables)

    def __reduce__(self):  # pickled across processes (Ray) with its names, not the formatted message
        import functools

        return functools.partial(type(self), uri=self.uri), (self.variables,)


class UnsupportedSourceError(SourceError, ValueError):
    """The URI's scheme is not one longwatch reads (file, rtsp, rtsps, http, https)."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A local file does not exist."""


class EmptySourceError(SourceError, ValueError):
    """The file has zero bytes, or yielded no decodable video frame."""


class InvalidVideoError(SourceError, ValueError):
    """The data is not a readable video: random bytes, truncated headers, unknown codec."""


class NoVideoStreamError(InvalidVideoError):
    """The container opened but holds no video stream (audio-only, data-only)."""


class ResolutionError(InvalidVideoError):
    """The stream declares a resolution that is zero or beyond the configured limits."""


class SourceUnreachableError(SourceError, ConnectionError):
    """A network source could not be reached (refused, timed out, DNS) after the allowed attempts."""


class SourceTimeoutError(SourceUnreachableError, TimeoutError):
    """A network source stopped sending data for longer than the read timeout, attempts exhausted."""


class ClipError(LongwatchError, ValueError):
    """A clip or patch cannot be built from the given frames (sizes, counts, times)."""


class SegmenterError(LongwatchError, ValueError):
    """Scores or times fed to a segmenter are invalid: non-finite, outside [0, 1], not increasing,
    mismatched lengths, or pushed after the stream was flushed."""


class SegmenterStateError(SegmenterError):
    """A saved segmenter state cannot be restored: malformed, another version, inconsistent fields."""


class MotionError(LongwatchError, ValueError):
    """Frames, times or options fed to the motion model are invalid: not a 2-D uint8 image, time going
    backwards, options out of range, a zone that does not fit the frame."""


class MotionStateError(MotionError):
    """A saved motion-model state cannot be restored: malformed, another version, inconsistent fields."""


class StoreError(LongwatchError, ConnectionError):
    """The segment store (Redis) could not be reached, or its embedded server could not start,
    within the allowed retries."""


class StoreKeyError(LongwatchError, ValueError):
    """A stream id or event name cannot be used in a store key (empty, or holds ``{`` / ``}``)."""


class StreamFencedError(LongwatchError, RuntimeError):
    """A worker's claim on its stream was taken over by a newer worker: its commits are refused."""

    def __init__(self, message: str, *, stream_id: str = ""):
        super().__init__(message)
        self.stream_id = stream_id


class InvalidStreamIdError(ConfigError):
    """A given stream id is not 1-64 letters, digits, ``_``, ``.`` or ``-``. ``stream_id`` names it."""

    def __init__(self, message: str, *, stream_id: str):
        super().__init__(message)
        self.stream_id = stream_id


class StreamIdentityError(LongwatchError, ValueError):
    """A stream id already holds a watermark of another source or another pipeline (events, sampler).
    ``differs`` is ``"source"`` or ``"pipeline"``; the message says how to go on (another id, or reprocess)."""

    def __init__(self, message: str, *, stream_id: str, differs: str):
        super().__init__(message)
        self.stream_id = stream_id
        self.differs = differs


class EventsFileError(ConfigError):
    """The events file (YAML) is malformed or invalid. ``path``, ``line`` and ``problems`` say where and what."""

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, problems: list[str] | None = None
    ):
        super().__init__(message)
        self.path = path
        self.line = line
        self.problems = list(problems or [message])


class ModelError(LongwatchError, RuntimeError):
    """A model backend cannot be set up or run."""


class ModelWeightsError(ModelError):
    """Model files are missing or fail their integrity check; the message says how to fix it."""


class ModelNotFoundError(ModelWeightsError, FileNotFoundError):
    """The model path does not exist, or is not a model directory (no ``config.json``)."""


class ModelUnavailableError(ModelWeightsError, ConnectionError):
    """A hub id cannot be fetched: not in the local cache while downloads are off (offline / local_files_only)."""


class ModelArchitectureError(ModelError, ValueError):
    """The weights are not the architecture the backend needs (``model_type`` / ``architectures``), or the model's
    processor constants (patch, merge, temporal patch sizes) do not match the pipeline's patches."""
