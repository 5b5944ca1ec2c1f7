"""Qwen2.5-VL checkpoint resolution: where a checkpoint is (a local directory or a hub id in the cache,
offline as told), that it is a Qwen2.5-VL with the language-model head, and its processor constants,
checked against the pipeline's patch layout. Small files only (config and processor JSON), no weights and
no torch: :func:`check_checkpoint` is the cheap start-up check, :class:`~.qwen_vl.QwenVLBackend` loads.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from longwatch.pipeline.config import (
    CLIP_MEAN,
    CLIP_STD,
    MERGE_SIZE,
    PATCH_SIZE,
    TEMPORAL_PATCH_SIZE,
    TOKENS_PER_SECOND,
)
from longwatch.pipeline.errors import (
    ModelArchitectureError,
    ModelNotFoundError,
    ModelUnavailableError,
    ModelWeightsError,
)

log = logging.getLogger("longwatch.model.checkpoint")

MODEL_TYPE = "qwen2_5_vl"
ARCHITECTURE = "Qwen2_5_VLForConditionalGeneration"


@dataclass(frozen=True)
class VisionConstants:
    """The model's processor constants (preprocessor_config.json + config.vision_config)."""

    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    patch_size: int = PATCH_SIZE
    merge_size: int = MERGE_SIZE
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE
    tokens_per_second: float = TOKENS_PER_SECOND


def _env_offline() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _looks_like_path(model: str) -> bool:
    return (
        model.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or model in (".", "..")
        or "\\" in model
        or model.count("/") > 1
        or model.endswith("/")
        or bool(re.match(r"^[A-Za-z]:[\\/]", model))
    )


_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class _Files:
    """Reads a checkpoint's small files from a local directory or the hub cache (offline as told)."""

    def __init__(self, model: str, *, offline: bool):
        self.model = model
        self.offline = offline
        path = Path(model).expanduser()
        if path.exists():
            if not path.is_dir():
                raise ModelNotFoundError(
                    f"model path {path} is a file; pass the checkpoint directory that holds config.json"
                )
            if not (path / "config.json").is_file():
                raise ModelNotFoundError(
                    f"model directory {path} has no config.json: not a transformers checkpoint "
                    "(expected config.json, *.safetensors, tokenizer files, preprocessor_config.json)"
                )
            self.local: Path | None = path.resolve()
            self.where = str(self.local)
            return
        if _looks_like_path(model) or not _HUB_ID_RE.match(model):
            raise ModelNotFoundError(f"model directory {path} does not exist")
        self.local = None
        try:
            from transformers.utils import cached_file

            cfg = cached_file(model, "config.json", local_files_only=offline)
        except Exception as exc:  # OSError / EnvironmentError / hub errors
            how = (
                "downloads are off (local_files_only=True or HF_HUB_OFFLINE=1) and it is not in the local hub cache"
                if offline
                else f"it could not be fetched ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            )
            raise ModelUnavailableError(
                f"model {model!r} is not a local directory, and as a hub id {how}. Download it first "
                f"(`huggingface-cli download {model} --local-dir DIR`) and pass DIR, or allow downloads "
                "(local_files_only=False without HF_HUB_OFFLINE)"
            ) from None
        if cfg is None:
            raise ModelUnavailableError(f"hub id {model!r} has no config.json in the local cache")
        self.where = model

    def path(self, name: str) -> str | None:
        if self.local is not None:
            p = self.local / name
            return str(p) if p.is_file() else None
        from transformers.utils import cached_file

        try:
            return cached_file(
                self.model, name, local_files_only=self.offline, _raise_exceptions_for_missing_entries=False
            )
        except Exception:
            return None

    def json(self, name: str) -> dict | None:
        p = self.path(name)
        if p is None:
            return None
        try:
            data = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelWeightsError(f"{self.where}: {name} cannot be read as JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ModelWeightsError(f"{self.where}: {name} is not a JSON object")
        return data


def _check_architecture(files: _Files, cfg: dict) -> None:
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if model_type != MODEL_TYPE or (archs and ARCHITECTURE not in archs):
        hint = ""
        if model_type == "qwen2_vl":
            hint = " (Qwen2-VL encodes time differently: it has no tokens_per_second / second_per_grid_ts)"
        elif model_type == MODEL_TYPE:
            hint = f" (a {MODEL_TYPE} checkpoint without the language-model head cannot answer questions)"
        raise ModelArchitectureError(
            f"{files.where}: config.json says model_type={model_type!r}, architectures={archs}; the qwen2_5_vl "
            f"backend needs a Qwen2.5-VL checkpoint (model_type {MODEL_TYPE!r}, {ARCHITECTURE}){hint}"
        )


def _constants(files: _Files, cfg: dict) -> VisionConstants:
    """The model's processor constants, checked against the pipeline's patch layout."""
    vc = cfg.get("vision_config") or {}
    pre = files.json("preprocessor_config.json") or {}
    vid = files.json("video_preprocessor_config.json") or {}
    merged = {**pre, **vid}

    problems = []
    sizes = {}
    for ours, cfg_key, pre_key, expected in (
        ("patch_size", "patch_size", "patch_size", PATCH_SIZE),
        ("merge_size", "spatial_merge_size", "merge_size", MERGE_SIZE),
        ("temporal_patch_size", "temporal_patch_size", "temporal_patch_size", TEMPORAL_PATCH_SIZE),
    ):
        seen = {}
        if cfg_key in vc:
            seen[f"config.json vision_config.{cfg_key}"] = vc[cfg_key]
        for fname, src in (("preprocessor_config.json", pre), ("video_preprocessor_config.json", vid)):
            if pre_key in src:
                seen[f"{fname} {pre_key}"] = src[pre_key]
        for where, v in seen.items():
            if v != expected:
                problems.append(f"{where} = {v!r}, the pipeline's patches use {expected}")
        sizes[ours] = expected
    mean = tuple(float(x) for x in merged.get("image_mean", CLIP_MEAN))
    std = tuple(float(x) for x in merged.get("image_std", CLIP_STD))
    if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
        problems.append(f"image_mean {mean} / image_std {std} must be three numbers each (std > 0)")
    tps = vc.get("tokens_per_second", TOKENS_PER_SECOND)
    if not isinstance(tps, (int, float)) or isinstance(tps, bool) or not tps > 0:
        problems.append(f"config.json vision_config.tokens_per_second = {tps!r} must be a positive number")
    if problems:
        raise ModelArchitectureError(
            f"{files.where}: the model's processor constants do not match longwatch's patches: " + "; ".join(problems)
        )
    if not pre and not vid:
        log.warning("%s has no preprocessor_config.json: using Qwen2.5-VL's CLIP mean/std", files.where)
    if mean != CLIP_MEAN or std != CLIP_STD:
        log.info("%s normalises with mean %s std %s (not the Qwen2.5-VL defaults)", files.where, mean, std)
    if tps != TOKENS_PER_SECOND:
        log.info(
            "%s uses tokens_per_second=%s (released Qwen2.5-VL checkpoints use %s)", files.where, tps, TOKENS_PER_SECOND
        )
    assert len(mean) == 3 and len(std) == 3  # checked above
    return VisionConstants(
        mean, std, sizes["patch_size"], sizes["merge_size"], sizes["temporal_patch_size"], float(tps)
    )


def check_checkpoint(model: str | os.PathLike, *, local_files_only: bool = True) -> str:
    """Cheap start-up check of a checkpoint (config and processor files only, no weights): raises
    the same typed errors as :meth:`QwenVLBackend.load` for a missing path, a hub id that cannot be
    had offline, or another architecture. Returns where the checkpoint is."""
    files = _Files(os.fspath(model), offline=bool(local_files_only) or _env_offline())
    cfg = files.json("config.json") or {}
    _check_architecture(files, cfg)
    _constants(files, cfg)
    return files.where
