"""The model pool: one Ray Serve deployment, :class:`BackendPool`, that batches clips across streams into a
model backend (any :class:`~longwatch.model.backend.Backend`, built by
:func:`~longwatch.model.backend.load_backend` from its kind and constructor options).

Why Serve: ``@serve.batch`` gives cross-stream batching by size and max wait, replicas restart on
failure, ``num_replicas``/autoscaling and ``num_gpus`` fractions come with it, and handles apply
backpressure (``max_ongoing_requests``). Each replica is a thin shell over ``model/``.

One Serve application per backend kind and runtime prefix (:func:`app_name`), each deployed only if an
event needs it, so the kinds run side by side, each with its own replicas, CPUs/GPUs and batch size/wait:
``longwatch-<prefix>-detector`` (the CPU detector, for ``backend: detector`` events, settings
``runtime.model_*``, ``runtime.max_batch_clips``, ``runtime.batch_wait_s``) and ``longwatch-<prefix>-vlm``
(Qwen2.5-VL, for ``backend: qwen2_5_vl`` events, settings ``vlm.*``). The prefix is the runtime's
``runtime.redis_prefix``: Serve applications are global to a Ray cluster, so two services with different
prefixes on one cluster never deploy over, or delete, each other's pools. :func:`deploy` starts one,
:func:`handle` finds it from any process of the cluster.
"""

from __future__ import annotations

import logging

from ray import serve

from longwatch.model.backend import DETECTOR, KINDS, QWEN2_5_VL
from longwatch.pipeline.errors import ConfigError

from .logs import route_ray_logs
from .model_settings import pool_settings

__all__ = ["BackendPool", "app_name", "app_names", "app_states", "deploy", "handle", "pool_settings"]

# The last part of each pool's Serve application name: ``longwatch-<prefix>-<part>`` (see :func:`app_name`).
APP_KINDS = {DETECTOR: "detector", QWEN2_5_VL: "vlm"}
DEFAULT_PREFIX = "lw"  # ``runtime.redis_prefix``'s default


@serve.deployment(max_ongoing_requests=16)
class BackendPool:
    """One backend of ``kind`` (``detector``, ``qwen2_5_vl``) over the clips of many streams, batched.

    ``options`` go to the backend's constructor (see :func:`~longwatch.model.backend.load_backend`);
    ``max_batch_clips`` and ``batch_wait_s`` set this deployment's ``@serve.batch``.
    """

    def __init__(
        self, kind: str, events_text: str, options: dict, max_batch_clips: int = 4, batch_wait_s: float = 0.05
    ):
        from longwatch.model.backend import load_backend
        from longwatch.pipeline.events import load_events

        self.kind = kind
        self.backend = load_backend(kind, load_events(events_text), **options)
        self._score_batch.set_max_batch_size(max_batch_clips)
        self._score_batch.set_batch_wait_timeout_s(batch_wait_s)
        self.batches = 0
        self.clips = 0

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def _score_batch(self, clips: list) -> list[tuple[dict, int]]:
        """One batch of clips (from :meth:`score` and :meth:`score_and_batch` alike) through the backend:
        each clip's scores, with the size of the batch."""
        self.batches += 1
        self.clips += len(clips)
        n = len(clips)
        return [(scores, n) for scores in self.backend.score(clips)]

    async def score(self, clip) -> dict:
        """A clip's scores, in the backend's format (``{event: per-frame scores}``)."""
        scores, _n = await self._score_batch(clip)
        return scores

    async def score_and_batch(self, clip) -> tuple[dict, int]:
        """A clip's scores (as :meth:`score`) and the number of clips in the batch that scored it."""
        return await self._score_batch(clip)

    async def stats(self) -> dict:
        """Batches and clips this replica scored, and the backend's own counters where it keeps some."""
        own = getattr(self.backend, "stats", None) or {}
        return {"batches": self.batches, "clips": self.clips, **{k: int(v) for k, v in own.items()}}


def app_name(kind: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The Serve application of the pool of ``kind`` for the runtime with Redis prefix ``prefix``."""
    try:
        return f"longwatch-{prefix}-{APP_KINDS[kind]}"
    except KeyError:
        raise ConfigError(f"no model pool for backend {kind!r}; known: {', '.join(KINDS)}") from None


def app_names(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Every pool application a runtime with ``prefix`` may deploy (one per backend kind)."""
    return [app_name(kind, prefix) for kind in APP_KINDS]


def _start_serve() -> None:
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(proxy_location="Disabled")
    route_ray_logs()  # serve.start re-attaches its console handler


def deploy(
    kind: str,
    *,
    events_text: str,
    prefix: str = DEFAULT_PREFIX,
    options: dict | None = None,
    replicas: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    max_batch_clips: int = 4,
    batch_wait_s: float = 0.05,
    wait: bool = True,
):
    """Start (or update) the pool of one backend kind for the runtime with ``prefix``, as its own Serve
    application (:func:`app_name`), in the connected Ray cluster; return its handle. ``options`` go to the backend's constructor (:func:`pool_settings` builds
    them all from :class:`~longwatch.pipeline.config.Settings`).

    ``wait=False``: return once Serve has the application (so :func:`handle` finds it and calls queue
    for the replica), without waiting for its replicas to start; :func:`app_states` tells when it runs,
    or that it failed to deploy. With ``wait`` (the default) a failed deployment raises here."""
    name = app_name(kind, prefix)
    _start_serve()
    actor_options: dict[str, float] = {"num_cpus": num_cpus}
    if num_gpus:
        actor_options["num_gpus"] = num_gpus
    app = BackendPool.options(name=kind, num_replicas=replicas, ray_actor_options=actor_options).bind(
        kind, events_text, dict(options or {}), max_batch_clips, batch_wait_s
    )
    if wait:
        return serve.run(app, name=name, route_prefix=None)
    from ray.serve.api import RunTarget

    return serve.run_many([RunTarget(target=app, name=name, route_prefix=None)], wait_for_applications_running=False)[0]


def app_states(names: list[str]) -> list[tuple[str, str, str]]:
    """``(name, state, message)`` of the Serve applications ``names``: state is Serve's application
    status (``DEPLOYING``, ``RUNNING``, ``DEPLOY_FAILED``, ``UNHEALTHY``, ``DELETING``…), or ``MISSING``."""
    apps = serve.status().applications
    out = []
    for name in names:
        app = apps.get(name)
        if app is None:
            out.append((name, "MISSING", "the Serve application does not exist"))
        else:
            why = [app.message or ""]
            for dep in app.deployments.values():  # where a replica's constructor raised: the error itself
                lines = [ln.strip() for ln in (dep.message or "").splitlines() if ln.strip()]
                if lines:
                    why.append(lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}")
            out.append((name, str(getattr(app.status, "value", app.status)), " ".join(w for w in why if w)))
    return out


def handle(kind: str = DETECTOR, prefix: str = DEFAULT_PREFIX):
    """The handle of the pool of ``kind`` of the runtime with ``prefix``, from any process of the cluster
    (stream workers call this with their own runtime's prefix)."""
    return serve.get_app_handle(app_name(kind, prefix))
