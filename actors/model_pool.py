"""The model pool: a Ray Serve deployment that batches clips across streams.

Why Serve: ``@serve.batch`` gives cross-stream batching by size and max wait, replicas restart on
failure, ``num_replicas``/autoscaling and ``num_gpus`` fractions come with it, and handles apply
backpressure (``max_ongoing_requests``). The replica is a thin shell over ``model/``.
"""

from __future__ import annotations

from ray import serve

APP_NAME = "longwatch-models"


@serve.deployment(name="detector", max_ongoing_requests=16)
class DetectorPool:
    """CPU COCO detector over the clips of many streams, batched."""

    def __init__(self, events_text: str, data_dir: str, max_batch_clips: int = 4, batch_wait_s: float = 0.05):
        from model.detector import DetectorBackend, DetectorWeights
        from pipeline.events import load_events

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


def deploy(*, events_text: str, data_dir: str, replicas: int = 1, num_cpus: float = 1.0, num_gpus: float = 0.0,
           max_batch_clips: int = 4, batch_wait_s: float = 0.05):
    """Start (or update) the model pool in the connected Ray cluster; return its handle."""
    import logging

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(proxy_location="Disabled")
    options = {"num_cpus": num_cpus}
    if num_gpus:
        options["num_gpus"] = num_gpus
    app = DetectorPool.options(num_replicas=replicas, ray_actor_options=options).bind(
        events_text, data_dir, max_batch_clips, batch_wait_s
    )
    return serve.run(app, name=APP_NAME, route_prefix=None)


def handle():
    """The pool's handle from any process of the cluster (stream workers call this)."""
    return serve.get_app_handle(APP_NAME)
