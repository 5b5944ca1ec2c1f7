"""Wiring: Ray (local or a cluster), Redis (given or embedded), the model pool, the controller."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray

from longwatch.pipeline.config import Settings
from longwatch.pipeline.errors import ConfigError
from longwatch.pipeline.events import load_events
from longwatch.pipeline.identity import check_stream_id, default_stream_id

from . import model_pool
from .controller import Controller, controller_name
from .logs import route_ray_logs


class RuntimeAlreadyRunningError(ConfigError):
    """A live longwatch runtime with the same Redis prefix already runs on this Ray cluster."""


def init_ray(address: str | None = None, *, num_cpus: int | None = None, log_file: str | Path | None = None) -> bool:
    """Connect to Ray: ``address`` / ``RAY_ADDRESS`` joins a cluster, else a local instance.
    Ray's own log lines go to ``log_file`` (see :mod:`.logs`), not the console.
    Returns True when this call started Ray."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if ray.is_initialized():
        return False
    route_ray_logs(log_file)
    kwargs: dict[str, Any] = dict(
        namespace="longwatch",
        include_dashboard=False,
        ignore_reinit_error=True,
        log_to_driver=False,
    )
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    route_ray_logs()
    return True


def stream_id_for(uri: str, taken: set[str] | None = None) -> str:
    """The default id of a source: :func:`longwatch.pipeline.identity.default_stream_id` (a file's stem
    and a hash of its resolved path; host-port-path of a URL without credentials)."""
    return default_stream_id(uri, taken)


class Runtime:
    """The whole system in one object: ``start()``, ``add(uri)``, ``wait()``, ``close()``."""

    def __init__(self, settings: Settings | None = None, *, events_text: str | None = None):
        from longwatch.pipeline.events import default_events_path

        self.settings = settings or Settings()
        self.events_text = events_text if events_text is not None else Path(default_events_path()).read_text()
        self.events = load_events(self.events_text)  # validated before anything starts
        self.redis_url: str | None = None
        self._embedded = None
        self._started_ray = False
        self.controller = None
        self._apps: list[str] = []  # the Serve applications this runtime deployed (close deletes these only)
        self.stream_ids: list[str] = []

    def start(self) -> Runtime:
        rt = self.settings.runtime
        Path(rt.data_dir).mkdir(parents=True, exist_ok=True)
        self.redis_url = rt.redis_url or os.environ.get("REDIS_URL")
        if not self.redis_url:
            from longwatch.pipeline.redis_server import EmbeddedRedis

            self._embedded = EmbeddedRedis(Path(rt.data_dir) / "redis").start()
            self.redis_url = self._embedded.url
        # Check model files on the driver first: a missing or wrong model fails here, before any stream.
        backends = {e.backend for e in self.events.events}
        if "detector" in backends:
            from longwatch.model.weights import DetectorWeights

            DetectorWeights.locate(rt.data_dir)
        if "qwen2_5_vl" in backends:
            from longwatch.pipeline.errors import ConfigError

            if not self.settings.vlm.model:
                raise ConfigError(
                    "events with backend qwen2_5_vl need a model: set vlm.model (LONGWATCH_VLM__MODEL=DIR or hub id)"
                )
            from longwatch.model.checkpoint import check_checkpoint

            check_checkpoint(self.settings.vlm.model, local_files_only=self.settings.vlm.local_files_only)
        self._started_ray = init_ray(rt.ray_address, log_file=Path(rt.data_dir) / "logs" / "ray.log")
        if self._embedded is not None and sum(1 for n in ray.nodes() if n.get("Alive")) > 1:
            self._embedded.close()
            self._embedded = None
            raise ConfigError(
                "this Ray cluster has several nodes, but no REDIS_URL is set: the embedded Redis listens on "
                "127.0.0.1 and other nodes cannot reach it. Set REDIS_URL (or LONGWATCH_RUNTIME__REDIS_URL)."
            )
        # Claim this prefix's controller name first: a live runtime with the same prefix must be neither
        # adopted nor have its pools redeployed under it (deploying updates a running Serve app).
        try:
            self.controller = self._claim_controller()
        except BaseException:
            if self._embedded is not None:
                self._embedded.close()
                self._embedded = None
            raise
        try:
            for kind in sorted(backends):  # one pool (Serve app) per backend kind the events use
                self._apps.append(model_pool.app_name(kind, rt.redis_prefix))
                model_pool.deploy(
                    kind,
                    events_text=self.events_text,
                    prefix=rt.redis_prefix,
                    **model_pool.pool_settings(kind, self.settings),
                )
        except BaseException:
            self.close()
            raise
        return self

    def _claim_controller(self):
        """Create this prefix's named controller. One whose name is taken by a live controller (another
        runtime with this prefix on this cluster) is :class:`RuntimeAlreadyRunningError`; a dead one
        that still holds the name is killed and replaced. Other prefixes' controllers are never touched."""
        from ray.exceptions import GetTimeoutError, RayActorError

        prefix = self.settings.runtime.redis_prefix
        name = controller_name(prefix)
        running = RuntimeAlreadyRunningError(
            f"a longwatch runtime with prefix {prefix!r} is already running on this cluster "
            f"(controller actor {name!r}); stop it, or use another prefix (runtime.redis_prefix)"
        )
        for _ in range(2):
            try:
                return Controller.options(name=name).remote(
                    self.settings.model_dump_json(), self.events_text, self.redis_url
                )
            except ValueError:  # the name is taken
                pass
            try:
                existing = ray.get_actor(name)
            except ValueError:  # gone meanwhile: try again
                continue
            try:
                ray.get(existing.status.remote(), timeout=10)
            except RayActorError:  # dead: free the name
                ray.kill(existing, no_restart=True)
                continue
            except GetTimeoutError:  # busy, not dead: never take over a controller that may be live
                raise running from None
            raise running
        raise running

    def add(self, uri: str, *, stream_id: str | None = None, start_at: str | None = None) -> str:
        sid = check_stream_id(stream_id) if stream_id is not None else stream_id_for(uri, set(self.stream_ids))
        ray.get(self.controller.add.remote(sid, uri, start_at))
        self.stream_ids.append(sid)
        return sid

    def wait(self, timeout: float | None = None, stream_ids: list[str] | None = None) -> dict:
        return ray.get(self.controller.wait.remote(timeout, stream_ids))

    def status(self) -> dict:
        return ray.get(self.controller.status.remote())

    def worker(self, stream_id: str):
        return ray.get(self.controller.worker.remote(stream_id))

    def stop(self, stream_id: str | None = None) -> None:
        if self.controller is not None:
            ray.get(self.controller.stop.remote(stream_id))

    def close(self, *, shutdown_ray: bool | None = None) -> None:
        try:
            self.stop()
        finally:
            if self.controller is not None:
                ray.kill(self.controller, no_restart=True)
                self.controller = None
            from ray import serve

            for app in self._apps:  # this runtime's pools only, never another prefix's
                try:
                    serve.delete(app)
                except Exception:
                    pass
            self._apps = []
            if shutdown_ray if shutdown_ray is not None else self._started_ray:
                ray.shutdown()  # takes Serve's actors with it
            if self._embedded is not None:
                self._embedded.close()
                self._embedded = None

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
