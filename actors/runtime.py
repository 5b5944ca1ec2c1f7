"""Wiring: Ray (local or a cluster), Redis (given or embedded), the model pool, the controller."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import ray

from longwatch.pipeline.config import Settings
from longwatch.pipeline.errors import ConfigError, ModelError
from longwatch.pipeline.events import load_events
from longwatch.pipeline.identity import check_stream_id, default_stream_id
from longwatch.pipeline.secrets import redact

from .controller import Controller, controller_name
from .logs import route_ray_logs

log = logging.getLogger(__name__)

_ACTIVE = ("starting", "running", "waiting", "restarting")  # a stream's states while its worker runs


class RuntimeAlreadyRunningError(ConfigError):
    """A live longwatch runtime with the same Redis prefix already runs on this Ray cluster."""


@contextlib.contextmanager
def _lean_head():
    """While ``ray.init`` starts a local head: no autoscaler monitor (nothing to scale: the node is this
    machine), no dashboard API server (``include_dashboard=False`` still starts it, and ``ray.init``
    waits ~1.3 s for it), no log monitor (it streams workers' output to the driver, which
    ``log_to_driver=False`` turns away), and the raylet's dashboard agent minimal: no HTTP server and,
    through :mod:`.lean_agent`, none of its modules (as Ray's minimal install runs it; the raylet
    waits for the agent, which spent 0.7 s finding them). Ray's GCS, raylet, its two agents and the workers are
    as always. ``ray.init`` has no switch for these (``ray start --head`` has ``--no-monitor`` only),
    so this patches Ray's private ``Node`` for the duration of the call; Ray is pinned (2.60.0), and
    where these names are gone the head starts as usual."""
    try:
        from ray._private import node as ray_node
        from ray._private import ray_constants, services
        from ray._private import utils as ray_utils
    except ImportError:  # pragma: no cover - another Ray: its full head
        yield
        return
    python_command = services._build_python_executable_command_memory_profileable

    def agent_command(component, *args, **kwargs):
        """The dashboard agent through :mod:`.lean_agent` (no modules: nothing to serve them to)."""
        command = python_command(component, *args, **kwargs)
        # only a plain interpreter (RAY_MEMRAY_PROFILE_COMPONENT may wrap it in a profiler: left as is)
        if component == ray_constants.PROCESS_TYPE_DASHBOARD_AGENT and command[1:] in ([], ["-u"]):
            command = [*command, "-m", f"{__package__}.lean_agent"]
        return command

    patches = [
        (ray_node.Node, "start_monitor", lambda self, *a, **k: None),
        (ray_node.Node, "start_api_server", lambda self, *a, **k: None),
        (ray_node.Node, "start_log_monitor", lambda self, *a, **k: None),
        (ray_utils, "get_dashboard_dependency_error", lambda: ImportError("longwatch: a lean local head")),
        (services, "_build_python_executable_command_memory_profileable", agent_command),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches if hasattr(obj, name)]
    for obj, name, repl in patches:
        if hasattr(obj, name):
            setattr(obj, name, repl)
    try:
        yield
    finally:
        for obj, name, orig in saved:
            setattr(obj, name, orig)


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    log_file: str | Path | None = None,
    lean: bool = True,
) -> bool:
    """Connect to Ray: ``address`` / ``RAY_ADDRESS`` joins a cluster, else a local instance.
    Ray's own log lines go to ``log_file`` (see :mod:`.logs`), not the console. ``lean``: a local
    instance starts without the processes a Ray that lives and dies with one longwatch process has
    no use for (see :func:`_lean_head`).
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
        with _lean_head() if lean else contextlib.nullcontext():
            ray.init(num_cpus=num_cpus, **kwargs)
    route_ray_logs()
    return True


def _stop_autoscaler_monitor() -> None:
    """SIGKILL the autoscaler monitor of the local Ray this process started, just before ``ray.shutdown``.

    ``ray.shutdown`` stops Ray's processes one kind at a time, the GCS before the monitor; on SIGTERM the
    monitor reports its own death through the GCS, which is gone by then, so it never exits and Ray
    waits its full second before killing it: 1.0 of the 1.4 s ``ray.shutdown`` takes here. The
    monitor keeps no state worth a graceful exit. Ray's process table is private API (Ray is pinned,
    2.60.0); if it changes, this does nothing and shutdown only takes that second longer."""
    try:
        from ray._private import ray_constants
        from ray._private import worker as ray_worker

        node = ray_worker._global_node
        infos = node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node is not None else []
        for info in infos:
            if info.process.poll() is None:
                info.process.kill()
                info.process.wait(timeout=2)
    except Exception as exc:  # best effort: ray.shutdown stops it anyway
        log.debug("could not stop Ray's autoscaler monitor early: %s", exc)


def stream_id_for(uri: str, taken: set[str] | None = None) -> str:
    """The default id of a source: :func:`longwatch.pipeline.identity.default_stream_id` (a file's stem
    and a hash of its resolved path; host-port-path of a URL without credentials)."""
    return default_stream_id(uri, taken)


class Runtime:
    """The whole system in one object: ``start()``, ``add(uri)``, ``wait()``, ``close()``.

    ``service=True`` (``longwatch serve``): the controller reconciles every spec of the prefix and is
    detached, so it outlives a crash of this process on a Ray cluster; ``close()`` stops the workers
    but leaves the specs, which the next start resumes. One-shot (``longwatch run``, the default): the
    controller runs only the streams added here, and ``close()`` pauses those of them not finished.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        events_text: str | None = None,
        service: bool = False,
        expected_streams: int | None = None,
    ):
        """``expected_streams``: how many streams a one-shot run will add (``longwatch run`` knows its
        sources); with one, ``runtime.model_host: auto`` hosts the detector in that stream's worker."""
        from longwatch.pipeline.events import default_events_path

        self.settings = settings or Settings()
        self.events_text = events_text if events_text is not None else Path(default_events_path()).read_text()
        self.events = load_events(self.events_text)  # validated before anything starts
        self.service = service
        self.expected_streams = expected_streams
        self.redis_url: str | None = None
        self._embedded = None
        self._started_ray = False
        self._local_ray = False  # this runtime starts a local Ray (its shutdown takes everything with it)
        self.controller = None
        self._apps: list[str] = []  # the Serve applications this runtime deployed (close deletes these only)
        self.stream_ids: list[str] = []
        self.store = None
        self.registry = None
        self._lease = None
        self._pending_pools: list[str] = []  # pool apps deployed but not yet seen RUNNING (see wait_pools)
        self._pool_error: ModelError | None = None

    def start(self, *, wait_pools: bool = True) -> Runtime:
        """Redis (given or embedded), the prefix's lease and the model files first (each fails fast,
        before Ray starts); then where the detector runs (``runtime.model_host``, ``auto`` made concrete:
        :meth:`_resolve_model_host`), Ray (``ray.init``, while Serve's code loads in a thread where a pool
        is needed), the model pools (deployed without blocking, while the controller starts), then it waits for the pools
        to run (:meth:`wait_pools`; a pool that fails to deploy raises its ``ModelError`` here).
        ``wait_pools=False``: return once they are deployed, so the caller's streams start (their
        processes, their first clips) while the replicas do; the caller then calls :meth:`wait_pools`
        (``longwatch run`` does: about two seconds sooner to its first segment)."""
        try:
            self.start_redis()
            self._acquire_lease()
            self._check_models()
            self._start()
            if wait_pools:
                self.wait_pools()
        except BaseException:
            self.close()
            raise
        return self

    def start_redis(self):
        """The configured Redis, or the embedded one in the data dir (started here), and the store on
        it; returns the store. Idempotent: :meth:`start` calls it; a caller may call it first to use the
        store before the rest starts (``longwatch run`` checks stream identities there)."""
        from longwatch.pipeline.registry import Registry
        from longwatch.pipeline.store import SegmentStore

        if self.store is not None:
            return self.store
        rt = self.settings.runtime
        Path(rt.data_dir).mkdir(parents=True, exist_ok=True)
        self.redis_url = rt.redis_url or os.environ.get("REDIS_URL")
        if not self.redis_url:
            from longwatch.pipeline.redis_server import EmbeddedRedis

            self._embedded = EmbeddedRedis(Path(rt.data_dir) / "redis").start()
            self.redis_url = self._embedded.url
        self.store = SegmentStore.from_url(self.redis_url, prefix=rt.redis_prefix)
        self.registry = Registry.of(self.store)
        return self.store

    def _check_models(self) -> None:
        """Check model files on the driver first: a missing or wrong model fails here, before any stream."""
        rt = self.settings.runtime
        backends = set(self.events.model_backends)  # motion runs in the stream workers, not in a pool
        if "detector" in backends:
            from longwatch.model.weights import DetectorWeights

            DetectorWeights.locate(rt.data_dir)
        if "qwen2_5_vl" in backends:
            if not self.settings.vlm.model:
                raise ConfigError(
                    "events with backend qwen2_5_vl need a model: set vlm.model (LONGWATCH_VLM__MODEL=DIR or hub id)"
                )
            from longwatch.model.checkpoint import check_checkpoint

            check_checkpoint(self.settings.vlm.model, local_files_only=self.settings.vlm.local_files_only)

    def _acquire_lease(self) -> None:
        """One live runtime per prefix: a second one is refused, never adopts the first's controller
        or redeploys its pools (deploying updates a running Serve app)."""
        from longwatch.pipeline.lease import LeaseHeldError, ServiceLease

        if self._lease is not None:
            return
        try:
            self._lease = ServiceLease(self.store.r, prefix=self.settings.runtime.redis_prefix).acquire()
        except LeaseHeldError as exc:
            raise RuntimeAlreadyRunningError(str(exc)) from None

    def _resolve_model_host(self) -> None:
        """``runtime.model_host: auto`` made concrete in :attr:`settings` (which the controller hands
        every worker): ``worker`` for a one-shot run of one stream on a local Ray whose detector pool is
        not configured (one replica, no GPU): with one stream there is nothing to batch across, and a
        model server costs seconds to start (Serve's controller, a replica process, Serve's code
        imported three times) on a machine that is starting everything else; else ``pool``."""
        rt = self.settings.runtime
        host = rt.model_host
        if host == "auto":
            alone = not self.service and self._local_ray and self.expected_streams == 1
            host = "worker" if alone and rt.model_replicas == 1 and not rt.model_num_gpus else "pool"
        if host != rt.model_host:
            self.settings = self.settings.model_copy(update={"runtime": rt.model_copy(update={"model_host": host})})

    def _start(self) -> None:
        from .model_settings import worker_hosted

        rt = self.settings.runtime
        self._local_ray = not ray.is_initialized() and not (rt.ray_address or os.environ.get("RAY_ADDRESS"))
        self._resolve_model_host()
        pooled = sorted(set(self.events.model_backends) - worker_hosted(self.settings, self.events.model_backends))
        # Ray Serve's code (a second or so to import) loads while ray.init starts Ray's processes. Not the
        # other way round: Ray's head processes get a parent-death signal bound to the THREAD that starts
        # them, so a ray.init in a thread that ends kills them.
        preload = threading.Thread(target=importlib.import_module, args=(f"{__package__}.model_pool",), daemon=True)
        if pooled:
            preload.start()
        self._started_ray = init_ray(rt.ray_address, log_file=Path(rt.data_dir) / "logs" / "ray.log", lean=rt.ray_lean)
        if pooled:
            preload.join()

        if self._embedded is not None and sum(1 for n in ray.nodes() if n.get("Alive")) > 1:
            raise ConfigError(
                "this Ray cluster has several nodes, but no REDIS_URL is set: the embedded Redis listens on "
                "127.0.0.1 and other nodes cannot reach it. Set REDIS_URL (or LONGWATCH_RUNTIME__REDIS_URL)."
            )
        if not self.service:
            # A one-shot controller starts no stream before ``add``: its process starts while Serve does.
            # The service's reconciles every spec at once, so it comes after the pools exist.
            self.controller = self._claim_controller()
        for kind in pooled:  # one pool (Serve app) per backend kind a worker does not host
            from . import model_pool  # (an import error of the preload thread's is raised here)

            name = model_pool.app_name(kind, rt.redis_prefix)
            self._apps.append(name)
            model_pool.deploy(
                kind,
                events_text=self.events_text,
                prefix=rt.redis_prefix,
                wait=False,  # the replicas start while the controller and the streams do
                **model_pool.pool_settings(kind, self.settings),
            )
            self._pending_pools.append(name)
        if self.controller is None:
            self.controller = self._claim_controller()

    def check_pools(self) -> bool:
        """True when every pool this runtime deployed runs; False while one still deploys. A pool that
        failed to deploy (its replica's constructor raised, e.g. bad model options) raises
        :class:`~longwatch.pipeline.errors.ModelError`, now and at every later call."""
        if self._pool_error is not None:
            raise self._pool_error
        if not self._pending_pools:
            return True
        from . import model_pool

        for name, state, message in model_pool.app_states(self._pending_pools):
            if state == "RUNNING":
                self._pending_pools.remove(name)
            elif state in ("DEPLOY_FAILED", "MISSING"):
                why = "is gone" if state == "MISSING" else "failed to deploy"
                self._pool_error = ModelError(f"model pool {name} {why}: {message or 'no message'}")
                raise self._pool_error
        return not self._pending_pools

    def wait_pools(self, timeout: float | None = None, poll_s: float = 0.2) -> None:
        """Wait until every pool this runtime deployed runs (:meth:`check_pools`); ``timeout``: raise
        :class:`TimeoutError` past it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.check_pools():
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"model pools {', '.join(self._pending_pools)} not running after {timeout:g} s")
            time.sleep(poll_s)

    def _claim_controller(self):
        """This prefix's named, detached controller. We hold the prefix's lease, so a controller
        already under that name was left by a runtime that died: a live one on our Redis is adopted
        (the service's streams run on, untouched); a dead one, or one of another Redis, is replaced."""
        from ray.exceptions import GetTimeoutError, RayActorError

        name = controller_name(self.settings.runtime.redis_prefix)
        for _ in range(3):
            try:
                existing = ray.get_actor(name)
            except ValueError:
                existing = None
            if existing is not None:
                try:
                    url = ray.get(existing.ping.remote(), timeout=30)
                except (RayActorError, GetTimeoutError):
                    url = None
                if url == self.redis_url and self.service:
                    return existing
                ray.kill(existing, no_restart=True)
                time.sleep(0.5)
            try:
                # The service's controller outlives this process (on a cluster); a one-shot run's
                # dies with it, like the rest of the run.
                return Controller.options(name=name, lifetime="detached" if self.service else None).remote(
                    self.settings.model_dump_json(),
                    self.events_text,
                    self.redis_url,
                    one_shot=not self.service,
                )
            except ValueError:  # the name is still taken (the old one is going away): again
                time.sleep(1.0)
        raise RuntimeAlreadyRunningError(f"the controller name {name!r} stays taken on this Ray cluster")

    def add(
        self,
        uri: str,
        *,
        stream_id: str | None = None,
        start_at: str | None = None,
        events_text: str | None = None,
        sampler: dict | None = None,
        replace: bool = False,
    ) -> str:
        """Write the stream's spec (desired state: running) and have the controller start it."""
        from longwatch.pipeline.registry import StreamSpec

        if self._pool_error is not None:  # a pool already known to have failed: no stream can run
            raise self._pool_error

        sid = check_stream_id(stream_id) if stream_id is not None else stream_id_for(uri, set(self.stream_ids))
        spec = StreamSpec(id=sid, source=redact(str(uri)), events=events_text, sampler=sampler or {}, start_at=start_at)
        # The service keeps a literal credential apart (:mod:`longwatch.pipeline.registry`) to reconnect
        # after a restart; a one-shot run hands the source to its controller in memory only.
        self.registry.put(spec, source=str(uri) if self.service else None, replace_existing=replace or not self.service)
        ray.get(self.controller.manage.remote(sid, None if self.service else str(uri)))
        if sid not in self.stream_ids:
            self.stream_ids.append(sid)
        return sid

    def wait(self, timeout: float | None = None, stream_ids: list[str] | None = None) -> dict:
        """Wait until the given (default: all) streams have ended, or ``timeout``; their status. While a
        pool still deploys, the wait goes in short slices, and a pool that fails to deploy raises
        :class:`~longwatch.pipeline.errors.ModelError` (its streams would otherwise wait for it forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.check_pools():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            status = ray.get(self.controller.wait.remote(1.0 if left is None else min(1.0, left), stream_ids))
            ids = stream_ids or list(status)
            if all(status.get(sid, {}).get("state") not in _ACTIVE for sid in ids):
                return status
            if deadline is not None and time.monotonic() >= deadline:
                return status
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return ray.get(self.controller.wait.remote(left, stream_ids))

    def status(self) -> dict:
        return ray.get(self.controller.status.remote())

    def worker(self, stream_id: str):
        return ray.get(self.controller.worker.remote(stream_id))

    def stop(self, stream_id: str | None = None, *, timeout: float | None = None) -> None:
        """Stop one stream (its spec paused) or all (``None``, at shutdown); waits for the workers,
        at most ``timeout`` s (default: the controller's, 30 s)."""
        if self.controller is not None:
            if timeout is None:
                ray.get(self.controller.stop.remote(stream_id))
            else:
                ray.get(self.controller.stop.remote(stream_id, timeout))

    def close(self, *, shutdown_ray: bool | None = None, keep_redis: bool = False) -> None:
        """Stop the streams (watermarks saved), pause a one-shot run's unfinished ones, remove the
        controller and this runtime's pools, shut Ray down if this runtime started it (default), release
        the lease, and close the store and the embedded Redis. ``keep_redis``: leave the store and the
        embedded Redis up (to read the results); a later ``close()`` closes them."""
        try:
            if self.controller is not None:
                try:
                    # With a pool that failed to deploy, a worker is stuck in a model call that cannot be
                    # answered (it has nothing to commit): do not wait the controller's 30 s for it.
                    self.stop(timeout=2.0 if self._pool_error is not None else None)
                finally:
                    if not self.service:
                        self._pause_unfinished()
        finally:
            if self.controller is not None:
                ray.kill(self.controller, no_restart=True)
                self.controller = None
            shutdown = shutdown_ray if shutdown_ray is not None else self._started_ray
            # Shutting down a local Ray this runtime started takes Serve's actors with it: deleting the
            # pools first would only cost seconds. Where Ray stays (a cluster we merely disconnect from,
            # a Ray the caller started), this runtime's pools are deleted.
            if self._apps and not (shutdown and self._local_ray):
                from ray import serve

                for app in self._apps:  # this runtime's pools only, never another prefix's
                    try:
                        serve.delete(app)
                    except Exception:
                        pass
            self._apps = []
            self._pending_pools = []
            if shutdown and ray.is_initialized():
                _stop_autoscaler_monitor()
                ray.shutdown()
            if shutdown:
                self._started_ray = False
            if self._lease is not None:
                self._lease.release()
                self._lease = None
            if not keep_redis:
                if self.store is not None:
                    self.store.close()
                    self.store = None
                    self.registry = None
                if self._embedded is not None:
                    self._embedded.close()
                    self._embedded = None

    def _pause_unfinished(self) -> None:
        """One-shot: a stream this run added and did not finish is paused, so a later ``serve`` on the
        same data does not pick it up unasked (``run`` again resumes it). Read from Redis (what the
        workers wrote last), not from the controller, which may be gone already."""
        if self.registry is None or self.store is None:
            return
        for sid in self.stream_ids:
            try:
                if self.store.meta(sid).get("state") not in ("done", "failed"):
                    self.registry.set_state(sid, "paused")
            except Exception as exc:  # Redis away at shutdown: the spec stays as it was
                log.warning("stream %s: could not pause its spec at shutdown: %s", sid, exc)

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
