"""What a model backend is built with, from the settings: the keywords of a pool (:func:`pool_settings`,
for :func:`longwatch.actors.model_pool.deploy`) and so the options of a backend a stream worker hosts
itself (``runtime.model_host: worker``). Free of Ray Serve, which a worker without pools never imports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longwatch.model.backend import DETECTOR, KINDS, QWEN2_5_VL
from longwatch.pipeline.config import Settings
from longwatch.pipeline.errors import ConfigError

# The VLM settings that go to QwenVLBackend.load; the rest of ``vlm`` sizes the pool.
_VLM_OPTIONS = {
    "model",
    "dtype",
    "attn",
    "device",
    "local_files_only",
    "strategy",
    "ground",
    "max_batch_tokens",
    "max_batch_clips",
}


def pool_settings(kind: str, settings: Settings) -> dict[str, Any]:
    """:func:`~longwatch.actors.model_pool.deploy`'s keywords for the pool of ``kind`` from the settings;
    its ``options`` build the backend (in a replica, or in a stream worker that hosts it)."""
    if kind == DETECTOR:
        rt = settings.runtime
        return dict(
            # the detector on as many threads as the replica has CPUs: OpenCV DNN's second thread on a 1-CPU
            # replica bought a shorter forward pass with ~10 % more CPU per frame, plus what the thread
            # burns spinning between frames (40 % of the replica's CPU at 16 cameras)
            options={
                "data_dir": str(Path(rt.data_dir).resolve()),
                "threads": max(1, round(rt.model_num_cpus)),
                "engine": settings.detection.engine,
            },
            replicas=rt.model_replicas,
            num_cpus=rt.model_num_cpus,
            num_gpus=rt.model_num_gpus,
            max_batch_clips=rt.max_batch_clips,
            batch_wait_s=rt.batch_wait_s,
        )
    if kind == QWEN2_5_VL:
        vlm = settings.vlm
        return dict(
            options=vlm.model_dump(include=_VLM_OPTIONS),
            replicas=vlm.replicas,
            num_cpus=vlm.num_cpus,
            num_gpus=vlm.num_gpus,
            max_batch_clips=vlm.max_batch_clips,
            batch_wait_s=vlm.batch_wait_s,
        )
    raise ConfigError(f"no model pool for backend {kind!r}; known: {', '.join(KINDS)}")


def worker_hosted(settings: Settings, kinds) -> set[str]:
    """Of the backend ``kinds`` an event set uses, those a stream worker hosts itself instead of calling a
    pool: the detector where ``runtime.model_host`` is ``worker`` (a runtime resolves ``auto`` to one of
    ``worker`` / ``pool`` before its workers start: :meth:`longwatch.actors.runtime.Runtime.start`)."""
    return {DETECTOR} & set(kinds) if settings.runtime.model_host == "worker" else set()
