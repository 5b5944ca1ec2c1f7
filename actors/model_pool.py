"""The model pools: Ray Serve deployments that batch clips across streams.

Why Serve: ``@serve.batch`` gives cross-stream batching by size and max wait, replicas restart on
failure, ``num_replicas``/autoscaling and ``num_gpus`` fractions come with it, and handles apply
backpressure (``max_ongoing_requests``). Each replica is a thin shell over ``model/``.

Two applications: ``longwatch-models`` (the CPU detector, for ``backend: detector`` events) and
``longwatch-vlm`` (Qwen2.5-VL, for ``backend: qwen2_5_vl`` events), each deployed only if an event
needs it.
"""

from __future__ import annotations

import logging

from ray import serve

APP_NAME = "longwatch-models"
VLM_APP_NAME = "longwatch-vlm"


@serve.deployment(name="detector", max_ongoing_requests=16)
class DetectorPool:
    """CPU COCO detector over the clips of many streams, batched."""

    def __init__(self, events_text: str, data_dir: str, max_batch_clips: int = 4, batch_wait_s: float = 0.05):
        from longwatch.model.detector import DetectorBackend
        from longwatch.model.weights import DetectorWeights
        from longwatch.pipeline.events import load_events

        spec = load_events(events_text)
        self.backend = DetectorBackend(spec, DetectorWeights.locate(data_dir))
        self.score.set_max_batch_size(max_batch_clips)
        self.score.set_batch_wait_timeout_s(batch_wait_s)
        self.batches = 0
        self.clips = 0

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def score(self, clips: list) -> list[dict]:
        self.batches += 1
        self.clips += len(clips)
        return self.backend.score_many(clips)

    async def stats(self) -> dict:
        return {"batches": self.batches, "clips": self.clips}


@serve.deployment(name="qwen2_5_vl", max_ongoing_requests=16)
class VLMPool:
    """Qwen2.5-VL over the clips of many streams: one vision encoding per clip shared by every event."""

    def __init__(self, events_text: str, vlm: dict):
        from longwatch.model.qwen_vl import QwenVLBackend
        from longwatch.pipeline.events import load_events

        spec = load_events(events_text)
        self.backend = QwenVLBackend.load(
            vlm["model"],
            events=spec,
            dtype=vlm["dtype"],
            attn=vlm["attn"],
            device=vlm["device"],
            local_files_only=vlm["local_files_only"],
            strategy=vlm["strategy"],
            ground=vlm["ground"],
            max_batch_tokens=vlm["max_batch_tokens"],
            max_batch_clips=vlm["max_batch_clips"],
        )
        self.score.set_max_batch_size(vlm["max_batch_clips"])
        self.score.set_batch_wait_timeout_s(vlm["batch_wait_s"])
        self.batches = 0
        self.clips = 0

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.1)
    async def score(self, clips: list) -> list[dict]:
        self.batches += 1
        self.clips += len(clips)
        return self.backend.score_many(clips)

    async def stats(self) -> dict:
        return {"batches": self.batches, "clips": self.clips, **{k: int(v) for k, v in self.backend.stats.items()}}


def _start_serve() -> None:
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(proxy_location="Disabled")


def deploy(
    *,
    events_text: str,
    data_dir: str,
    replicas: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    max_batch_clips: int = 4,
    batch_wait_s: float = 0.05,
):
    """Start (or update) the detector pool in the connected Ray cluster; return its handle."""
    _start_serve()
    options = {"num_cpus": num_cpus}
    if num_gpus:
        options["num_gpus"] = num_gpus
    app = DetectorPool.options(num_replicas=replicas, ray_actor_options=options).bind(
        events_text, data_dir, max_batch_clips, batch_wait_s
    )
    return serve.run(app, name=APP_NAME, route_prefix=None)


def deploy_vlm(*, events_text: str, vlm) -> object:
    """Start (or update) the Qwen2.5-VL pool; ``vlm`` is a :class:`pipeline.config.VLMConfig`."""
    _start_serve()
    options = {"num_cpus": vlm.num_cpus}
    if vlm.num_gpus:
        options["num_gpus"] = vlm.num_gpus
    app = VLMPool.options(num_replicas=vlm.replicas, ray_actor_options=options).bind(events_text, vlm.model_dump())
    return serve.run(app, name=VLM_APP_NAME, route_prefix=None)


def handle():
    """The detector pool's handle from any process of the cluster (stream workers call this)."""
    return serve.get_app_handle(APP_NAME)


def vlm_handle():
    return serve.get_app_handle(VLM_APP_NAME)
