"""One declarative configuration, with environment overrides (``LONGWATCH_SAMPLER__MAX_FPS=4`` …)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Qwen2.5-VL vision constants (preprocessor_config.json of the released checkpoints).
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # 28
TOKENS_PER_SECOND = 2  # vision_config.tokens_per_second
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Model):
    """How sources are opened and kept alive."""

    rtsp_transport: str = Field("tcp", pattern="^(tcp|udp|udp_multicast|http|https)$")
    rtsp_analyze_s: float = Field(
        0.5,
        gt=0,
        description="how long FFmpeg may read a camera's stream to learn its format when connecting (its "
        "analyzeduration; FFmpeg's own default is 5 s): every (re)connect waits for it",
    )
    open_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(5.0, gt=0)
    connect_attempts: int = Field(3, ge=1, description="attempts before a source that cannot be opened fails")
    reconnect_forever: bool = Field(
        True, description="a live source that drops keeps reconnecting; False = give up after connect_attempts"
    )
    max_reconnects: int | None = Field(
        None, ge=0, description="failed reconnect attempts in a row before giving up; None = no limit"
    )
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(10.0, gt=0)
    decoder_threads: int = Field(
        0,
        ge=0,
        description="0 = auto: one thread for a live source (it decodes at the camera's pace, and FFmpeg's "
        "frame threads cost a quarter more CPU for no gain there, which many cameras on a few cores cannot "
        "spare), and for a file decoded without its non-reference frames beside a decode-ahead thread; FFmpeg's "
        "choice for other file decodes",
    )
    decode_ahead: int = Field(8, ge=0, description="files: frames decoded ahead in a thread (0 = same thread)")
    decode_gops: int = Field(
        2,
        ge=1,
        description="files (H.264, HEVC) decoded beside a decode-ahead: closed GOPs decoded side by side, each "
        "on its own thread with a one-thread decoder, the pictures handed on in order (1 = in order on "
        "FFmpeg's frame threads, which share one chain of references and wait on it)",
    )
    live_burst_s: float = Field(
        0.5,
        ge=0,
        le=2.0,
        description="live sources: once the reader has caught up with the camera (a read waited for it), it "
        "lets this much of the stream gather in the socket and decodes it in one go, instead of waking for "
        "every frame: about a fifth less CPU to read a camera, for at most this much added latency (0 = off)",
    )
    loop_filter: str = Field(
        "auto",
        pattern="^(auto|on|off)$",
        description="the decoder's in-loop deblocking filter (H.264/HEVC): auto = skipped where only the "
        "detector and motion see the pixels (a fifth less decode CPU), kept where the VLM does (its patches "
        "must equal transformers')",
    )
    max_width: int = Field(8192, gt=0)
    max_height: int = Field(8192, gt=0)
    max_pixels: int = Field(8192 * 4320, gt=0)
    max_consecutive_corrupt: int = Field(50, ge=0)


class SamplerConfig(_Model):
    """Dynamic-FPS sampling and clip cutting."""

    min_fps: float = Field(0.5, gt=0)
    max_fps: float = Field(2.0, gt=0)
    clip_seconds: float = Field(8.0, gt=0)
    overlap_seconds: float = Field(0.0, ge=0)
    min_pixels: int = Field(128 * FACTOR * FACTOR, gt=0)
    max_pixels: int = Field(768 * FACTOR * FACTOR, gt=0)
    tokens_per_second_budget: float | None = Field(
        None, gt=0, description="vision tokens per second of footage a stream may cost; None = no cap"
    )
    activity_low: float = Field(
        0.004, ge=0, description="mean abs frame difference (0..1) at or below which min_fps is used"
    )
    activity_high: float = Field(0.04, gt=0, description="... at or above which max_fps is used")
    thumb_width: int = Field(64, ge=8)
    scene_cuts: bool = Field(True, description="detect hard cuts on the decoded stream (event 'scene_cut')")
    cut_fps: float = Field(8.0, ge=5.0, description="rate of the frames the cut detector sees (>= 5 fps)")
    skip: str = Field("auto", pattern="^(auto|DEFAULT|NONREF|NONKEY)$")
    pairs: bool = Field(
        True,
        description="clips hold an even number of frames (Qwen's temporal patches pair them); False: any "
        "number from one, for a live stream only the detector and motion see (its short decision windows)",
    )

    @model_validator(mode="after")
    def _check(self) -> SamplerConfig:
        if self.min_fps > self.max_fps:
            raise ValueError(f"min_fps ({self.min_fps}) > max_fps ({self.max_fps})")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) > max_pixels ({self.max_pixels})")
        if self.activity_low >= self.activity_high:
            raise ValueError("activity_low must be below activity_high")
        if self.overlap_seconds >= self.clip_seconds:
            raise ValueError("overlap_seconds must be shorter than clip_seconds")
        if self.clip_seconds * self.max_fps < (2 if self.pairs else 1):
            raise ValueError(
                f"clip_seconds × max_fps must give at least {'2 frames' if self.pairs else 'one frame'} per clip"
            )
        return self


class DetectionConfig(_Model):
    """Motion, and when the detector runs (``pipeline/motion_gate.py``)."""

    motion_fps: float = Field(8.0, ge=2.0, le=30.0, description="rate of the grey thumbnails the motion model sees")
    gate: bool = Field(
        True,
        description="run the detector only on frames with motion or with an object event open, plus a "
        "periodic full check; False = every sampled frame",
    )
    full_check_s: float = Field(
        10.0, gt=0, description="with gate: the detector sees at least one frame per this many stream seconds"
    )
    regions: bool = Field(
        True, description="also detect on crops around motion at the frame's own resolution (small, distant objects)"
    )
    region_max: float = Field(
        0.3,
        gt=0,
        le=1,
        description="moving boxes wider or taller than this fraction of the frame get no crop: the whole-frame "
        "pass sees them well",
    )
    hold_s: float = Field(
        4.0,
        ge=0,
        description="with gate: a frame whose moving things are those of a frame the detector saw at most this "
        "long before in the clip, all on its confident boxes (or where nothing moves at either), reuses that "
        "frame's detections; 0 = the detector looks at every frame the gate lets through",
    )
    live_window_s: float | None = Field(
        1.0,
        gt=0,
        description="live streams whose events need no VLM (detector and motion only) cut their clips, the "
        "decisions' windows, this long instead of sampler.clip_seconds, so a segment is in Redis seconds "
        "after its event starts; None = sampler.clip_seconds",
    )
    engine: Literal["onnxruntime", "opencv"] = Field(
        "onnxruntime",
        description="what runs the CPU detector's network: onnxruntime (about 2.3x faster here) or OpenCV DNN; "
        "the same weights, the same boxes and scores (to about 1e-5)",
    )
    region_min_area: float = Field(
        0.0005, ge=0, le=1, description="motion blobs smaller than this (fraction of the frame) neither gate nor crop"
    )


class QwenCompatConfig(_Model):
    """qwen-vl-utils 0.0.14 ``fetch_video`` semantics for bounded files."""

    fps: float = Field(2.0, gt=0)
    nframes: int | None = Field(None, ge=2)
    min_frames: int = Field(4, ge=1)
    max_frames: int = Field(768, ge=2)
    min_pixels: int = Field(128 * FACTOR * FACTOR, gt=0)
    max_pixels: int | None = Field(None, gt=0)
    total_pixels: int | None = Field(None, gt=0)
    model_seq_len: int = Field(128000, gt=0)


def default_data_dir() -> str:
    """The per-user data directory (XDG rules on Linux: ``$XDG_DATA_HOME/longwatch``, else
    ``~/.local/share/longwatch``), so nothing lands in whatever directory a command was started in."""
    from platformdirs import user_data_dir

    return user_data_dir("longwatch", appauthor=False)


class RuntimeConfig(_Model):
    """How the runtime runs: Ray, Redis, the model pool, batching, backpressure."""

    redis_url: str | None = Field(None, description="None = start a private embedded Redis in data_dir")
    redis_prefix: str = Field("lw", pattern=r"^[A-Za-z0-9_.-]+$")
    data_dir: str = Field(
        default_factory=lambda: default_data_dir(),
        description="embedded Redis data, cached model files (default: the per-user data directory)",
    )
    ray_address: str | None = Field(None, description="None = local ray.init(); or RAY_ADDRESS")
    ray_lean: bool = Field(
        True,
        description="a local Ray starts without its autoscaler monitor, dashboard API server, log monitor and "
        "dashboard agent modules (ray.init ~2 s sooner, ~3 CPU-s less); false: Ray's full set. A cluster "
        "(ray_address) is never changed",
    )
    model_host: Literal["auto", "pool", "worker"] = Field(
        "auto",
        description="where the CPU detector runs: 'pool', a Ray Serve pool that batches clips across streams "
        "(model_replicas, model_num_cpus); 'worker', inside each stream's worker (no model server to start, "
        "one detector per stream); 'auto': 'worker' for a one-shot run of one source on a local Ray "
        "(longwatch run FILE: nothing to batch across, and the pool's start costs seconds), unless the "
        "detector pool is configured (model_replicas > 1, model_num_gpus); else 'pool'. Qwen2.5-VL always "
        "runs in its pool",
    )
    model_replicas: int = Field(1, ge=1)
    model_num_cpus: float = Field(1.0, ge=0)
    model_num_gpus: float = Field(0.0, ge=0)
    worker_num_cpus: float = Field(0.0, ge=0)
    worker_nice: int = Field(
        5,
        ge=0,
        le=19,
        description="how much stream workers yield the CPU to the model replicas they share (their nice "
        "increment): when the cores are busy, one camera's reading falls a little behind instead of every "
        "camera's clips queueing at the detector",
    )
    max_batch_clips: int = Field(4, ge=1, description="clips per model batch, across streams")
    batch_wait_s: float = Field(0.05, ge=0, description="longest a clip waits for a batch to fill")
    max_pending_clips: int = Field(4, ge=1, description="clips a stream may have decoded but not scored")
    live_queue_s: float = Field(
        10.0,
        gt=0,
        description="a live stream may have this many seconds of clips decoded but not scored (at least "
        "max_pending_clips; 1-s decision windows: 10): a stall that short delays decisions instead of shedding them",
    )
    max_worker_restarts: int = Field(10, ge=0, description="crashes of one stream worker survived by resuming")
    heartbeat_s: float = Field(5.0, gt=0, description="how often a stream worker writes its heartbeat")
    heartbeat_timeout_s: float = Field(
        30.0, gt=0, description="a worker whose heartbeat is older than this (while Redis answers) is lost: restarted"
    )
    model_timeout_s: float = Field(
        60.0, gt=0, description="longest one model call may take; past it the call is retried (a hung replica)"
    )
    model_backoff_initial_s: float = Field(
        0.5, gt=0, description="first wait before retrying a model call or reaching Redis again; doubles each time"
    )
    model_backoff_max_s: float = Field(10.0, gt=0, description="longest wait between those retries")
    store_retry_deadline_s: float = Field(
        60.0, gt=0, description="how long one store operation retries before the stream shows Redis as unreachable"
    )
    retention_s: float | None = Field(
        None, gt=0, description="keep segments this long (stream seconds); None = forever"
    )


class VLMConfig(_Model):
    """The Qwen2.5-VL model pool, used by events with ``backend: qwen2_5_vl``."""

    model: str | None = Field(None, description="checkpoint directory or hub id (e.g. Qwen/Qwen2.5-VL-7B-Instruct)")
    dtype: str = Field("bf16", pattern="^(bf16|fp16|fp32)$")
    attn: str = Field("sdpa", pattern="^(sdpa|flash_attention_2|eager)$")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    local_files_only: bool = Field(True, description="never download at run time")
    replicas: int = Field(1, ge=1)
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica; fractions let replicas share a GPU")
    num_cpus: float = Field(1.0, ge=0)
    max_batch_clips: int = Field(4, ge=1)
    batch_wait_s: float = Field(0.1, ge=0)
    max_batch_tokens: int = Field(32768, ge=256, description="vision + text tokens per forward pass")
    strategy: str = Field("prefix", pattern="^(prefix|batched|reencode)$")
    ground: str = Field("positive", pattern="^(positive|always|never)$")


class Settings(BaseSettings):
    """Everything configurable, one place. Environment: ``LONGWATCH_<SECTION>__<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LONGWATCH_", env_nested_delimiter="__", extra="forbid")

    source: SourceConfig = SourceConfig()
    sampler: SamplerConfig = SamplerConfig()
    detection: DetectionConfig = DetectionConfig()
    qwen_compat: QwenCompatConfig = QwenCompatConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    vlm: VLMConfig = VLMConfig()
    tokens_per_second: float = Field(TOKENS_PER_SECOND, gt=0)
    # The HTTP API of ``longwatch serve`` (longwatch/auth.py reads these; plain strings, not JSON).
    api_tokens: str = Field(
        "",
        repr=False,
        exclude=True,  # never serialized: model_dump_json() goes to the Ray controller and workers
        description="API tokens, comma-separated 'scope:token' entries, scope read or admin (LONGWATCH_API_TOKENS)",
    )
    tokens_file: str | None = Field(
        None, description="the hashed tokens file (LONGWATCH_TOKENS_FILE); None = <runtime.data_dir>/tokens"
    )
    media_roots: str = Field(
        "",
        description="directories HTTP clients may add files from, separated by os.pathsep "
        "(LONGWATCH_MEDIA_ROOTS); empty = none",
    )
