"""Qwen2.5-VL backend: transformers' ``Qwen2_5_VLForConditionalGeneration`` fed with OUR inputs.

What the model gets is built here, never by transformers' processor or rope index:

* ``pixel_values_videos`` from :func:`pipeline.patches.patchify` (normalised with the model's own
  ``image_mean``/``image_std``), ``video_grid_thw``, ``second_per_grid_ts`` (``2 / fps`` as a float),
* ``input_ids``: the model's chat template with ``grid_t·grid_h·grid_w / merge²`` ``<|video_pad|>`` tokens
  between ``<|vision_start|>`` and ``<|vision_end|>``; ``mm_token_type_ids`` (0 text, 2 video); ``attention_mask``,
* ``position_ids`` of shape ``(3, B, L)`` from :mod:`model.position_ids`: temporal ids from the frames' own
  PTS (``floor((ts[2k] − ts[0]) × tokens_per_second)``, the original Qwen2.5-VL rule) and text after the
  video at ``max + 1``. Every forward pass gets them explicitly (:meth:`QwenVLBackend._forward` refuses
  anything else), so transformers' own ``get_rope_index`` — which in 5.x continues text after a video at
  ``start + max(h, w) / merge`` instead — never runs, and neither does its 1-D fallback.

transformers 5.23's text model takes ``position_ids`` as ``(3, B, L)`` (t, h, w) or ``(4, B, L)`` where row 0
is a text-only position used to detect *packed* sequences for the attention mask. We do not pack (batches are
left-padded with an attention mask), so we pass ``(3, B, L)``; the mask then comes from ``attention_mask``.

Scoring: per clip and per natural-language event, P(yes) = softmax over the next-token logits of the
model's "yes"/"no" tokens after ``Does this happen in the video: "<prompt>"? Answer yes or no.``. The video
is encoded once per clip (one vision-tower call per batch of clips) and reused for every question:

* ``strategy="prefix"`` (default): the LLM runs once over the shared prefix (template head + video tokens)
  keeping the KV cache; each question's suffix then runs over that cache, which is cropped back after it.
* ``strategy="batched"``: every (clip, question) row is one sequence; the rows share the clip's vision
  embeddings (``inputs_embeds``) and go through the LLM in one padded forward.
* ``strategy="reencode"``: the transformers path (``input_ids`` + ``pixel_values_videos``) per question,
  re-encoding the video each time: the baseline the other two are measured against (``bench/model.py``).

Grounding: for clips whose P(yes) reaches the event's ``on`` threshold (``ground="positive"``), the model is
asked for start and end seconds; the short greedy answer is parsed robustly (:func:`parse_span`), mapped
through ``clip.stream_seconds`` (clip-relative → stream seconds → UTC) and clamped to the clip. Text that does
not parse is counted (``stats["malformed"]``) and dropped; it never raises.

Batching: clips of any sizes and streams go into one batch, left-padded, with their pixel values
concatenated and per-row position ids, up to ``max_batch_tokens`` padded LLM tokens per forward pass.

Around it: :mod:`.checkpoint` finds and checks the checkpoint (no weights, no torch), :mod:`.answers` parses
the model's grounding text; tests build a tiny random checkpoint with ``tests/tiny_qwen.py``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from longwatch.pipeline.errors import (
    ConfigError,
    ModelArchitectureError,
    ModelError,
    ModelWeightsError,
)
from longwatch.pipeline.events import EventSpec, EventsSpec
from longwatch.pipeline.patches import VideoPatches, patchify
from longwatch.pipeline.types import Clip

from .answers import GroundedSpan, clip_span, frame_scores, parse_span, says_absent
from .checkpoint import VisionConstants, _check_architecture, _constants, _env_offline, _Files
from .position_ids import VideoSpan, position_ids, temporal_ids

log = logging.getLogger("longwatch.model.qwen_vl")

VISION_START, VIDEO_PAD, VISION_END = "<|vision_start|>", "<|video_pad|>", "<|vision_end|>"
VIDEO_MARK = VISION_START + VIDEO_PAD + VISION_END
TEXT, VIDEO = 0, 2  # mm_token_type_ids values (1 would be an image)

DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}
ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")
STRATEGIES = ("prefix", "batched", "reencode")
GROUND_MODES = ("never", "positive", "always")

# The released Qwen2.5-VL chat template, for a checkpoint directory that carries none.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SCORE_QUESTION = 'Does this happen in the video: "{prompt}"? Answer yes or no.'
GROUND_QUESTION = (
    'The video is {duration:.1f} seconds long. When does this happen in it: "{prompt}"? '
    'Answer with the start and end time in seconds, like "2.5-6.0". If it does not happen, answer "none".'
)
_YES = ("Yes", "yes", " Yes", " yes", "YES")
_NO = ("No", "no", " No", " no", "NO")


# ----------------------------------------------------------------------------------------------
# Prepared clips, results


@dataclass(frozen=True)
class PreparedClip:
    """A clip with its patches and the 3-D position-id layout of its video tokens."""

    clip: Clip
    patches: VideoPatches
    span: VideoSpan

    @property
    def num_tokens(self) -> int:
        return self.span.num_tokens


@dataclass
class ClipResult:
    """Everything the backend says about one clip."""

    stream_id: str
    clip_index: int
    probs: dict[str, float] = field(default_factory=dict)
    spans: dict[str, list[GroundedSpan]] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class _Row:
    """One token sequence: a clip's video inside a question's chat template."""

    ids: list[int]
    pos: np.ndarray  # (3, L)
    video_start: int
    n_video: int
    clip: int  # index into the batch's prepared clips

    @property
    def prefix_len(self) -> int:
        """Tokens up to and including the last video token (the part every question of a clip shares)."""
        return self.video_start + self.n_video

    def __len__(self) -> int:
        return len(self.ids)


# ----------------------------------------------------------------------------------------------
# Device


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but torch sees no CUDA GPU (torch {torch.__version__})")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    return dev


# ----------------------------------------------------------------------------------------------
# The backend


class QwenVLBackend:
    """Scores natural-language events on clips with Qwen2.5-VL; a :class:`~.backend.Backend`, like the detector.

    ``score(clips)`` → per clip ``{event: per-frame scores aligned with clip.times}`` for the events whose
    backend is ``qwen2_5_vl``; :meth:`infer` gives the clip-level probabilities and grounded spans as well.
    Build it with :meth:`load` (checks everything before any stream is touched).
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        events: EventsSpec | Sequence[EventSpec] | None = None,
        constants: VisionConstants = VisionConstants(),
        chat_template: str | None = None,
        name: str = "",
        strategy: str = "prefix",
        ground: str = "positive",
        max_batch_tokens: int = 32768,
        max_batch_clips: int = 16,
        max_new_tokens: int = 24,
        extra_eos: Sequence[int] = (),
    ):
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if ground not in GROUND_MODES:
            raise ConfigError(f"ground must be one of {GROUND_MODES}, got {ground!r}")
        if max_batch_tokens < 1 or max_batch_clips < 1 or max_new_tokens < 1:
            raise ConfigError("max_batch_tokens, max_batch_clips and max_new_tokens must be >= 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.constants = constants
        self.name = name or str(getattr(model.config, "_name_or_path", "") or "qwen2_5_vl")
        self.strategy = strategy
        self.ground_mode = ground
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_batch_clips = int(max_batch_clips)
        self.max_new_tokens = int(max_new_tokens)
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE
        # counts and float seconds (``*_s``); a Counter, so that a key not seen yet reads 0 (typeshed
        # types a Counter's values as int, hence the cast)
        self.stats = cast("dict[str, float]", Counter())
        self._text_cache: dict[str, tuple[list[int], list[int]]] = {}

        cfg = model.config
        vocab = tokenizer.get_vocab()
        ids = {}
        for tok, key in (
            (VISION_START, "vision_start_token_id"),
            (VIDEO_PAD, "video_token_id"),
            (VISION_END, "vision_end_token_id"),
        ):
            if tok not in vocab:
                raise ModelArchitectureError(
                    f"{self.name}: the tokenizer has no {tok} token: not a Qwen2.5-VL tokenizer"
                )
            ids[tok] = vocab[tok]
            want = getattr(cfg, key, None)
            if want is not None and want != vocab[tok]:
                raise ModelArchitectureError(
                    f"{self.name}: tokenizer id of {tok} is {vocab[tok]} but config.{key} is {want}: tokenizer and weights disagree"
                )
        self.vision_start_id, self.video_id, self.vision_end_id = ids[VISION_START], ids[VIDEO_PAD], ids[VISION_END]
        self.pad_id = next(
            (
                i
                for i in (
                    tokenizer.pad_token_id,
                    getattr(cfg.text_config, "pad_token_id", None),
                    tokenizer.eos_token_id,
                )
                if i is not None
            ),
            0,
        )
        self.yes_ids = self._answer_ids(_YES)
        self.no_ids = self._answer_ids(_NO)
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise ModelArchitectureError(f"{self.name}: the tokenizer has no single-token 'yes'/'no' answers")
        stops = {tokenizer.eos_token_id, vocab.get("<|im_end|>"), vocab.get("<|endoftext|>"), *extra_eos}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stops.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
        self.stop_ids = sorted(i for i in stops if i is not None)

        # The video must come first in the rendered prompt, and the text before it must not depend on the
        # question: that is what lets every question of a clip share the clip's prefix.
        head_a, _ = self._render_split("a")
        head_b, _ = self._render_split("b c")
        if head_a != head_b and self.strategy == "prefix":
            log.warning(
                "%s: the chat template puts question-dependent text before the video; using strategy 'batched'",
                self.name,
            )
            self.strategy = "batched"
        self.events: list[EventSpec] = []
        if events is not None:
            self.set_events(events)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model: str | os.PathLike,
        *,
        events: EventsSpec | Sequence[EventSpec] | None = None,
        dtype: str = "bf16",
        attn: str = "sdpa",
        device: str = "auto",
        local_files_only: bool = True,
        **options,
    ) -> QwenVLBackend:
        """Load a Qwen2.5-VL checkpoint (local directory or hub id) with its tokenizer and chat template.

        Raises, before any stream is touched: :class:`~pipeline.errors.ModelNotFoundError` (a path that does not
        exist / holds no config.json), :class:`~pipeline.errors.ModelUnavailableError` (a hub id not in the cache
        while offline), :class:`~pipeline.errors.ModelArchitectureError` (another model type, or processor
        constants that do not match our patches), :class:`~pipeline.errors.ModelWeightsError` (weights missing
        or not fitting the config), :class:`~pipeline.errors.ConfigError` (bad dtype/attn/device values).
        ``options`` go to the constructor (``strategy``, ``ground``, ``max_batch_tokens`` …).
        """
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of bf16, fp16, fp32, got {dtype!r}")
        if attn not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(f"attn must be one of {ATTN_IMPLEMENTATIONS}, got {attn!r}")
        dev = _resolve_device(str(device))
        if attn == "flash_attention_2":
            if dev.type != "cuda":
                raise ConfigError("attn='flash_attention_2' needs a CUDA device; use 'sdpa' on CPU")
            try:
                import flash_attn  # noqa: F401
            except ImportError:
                raise ModelError(
                    "attn='flash_attention_2' needs the flash-attn package (pip install flash-attn); or use 'sdpa'"
                ) from None
        torch_dtype = DTYPES[dtype]
        offline = bool(local_files_only) or _env_offline()
        model = os.fspath(model)
        files = _Files(model, offline=offline)
        cfg = files.json("config.json") or {}
        _check_architecture(files, cfg)
        constants = _constants(files, cfg)

        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        try:
            tokenizer = AutoTokenizer.from_pretrained(files.where, local_files_only=offline)
        except Exception as exc:
            raise ModelWeightsError(
                f"{files.where}: the tokenizer cannot be loaded: {type(exc).__name__}: {exc}"
            ) from None
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            cj = files.json("chat_template.json")
            template = (cj or {}).get("chat_template")
        if not template and (p := files.path("chat_template.jinja")):
            template = Path(p).read_text(encoding="utf-8")
        t0 = time.perf_counter()
        try:
            loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                files.where,
                dtype=torch_dtype,
                attn_implementation=attn,
                local_files_only=offline,
                output_loading_info=True,
            )
            # with output_loading_info=True it returns (model, loading info); its annotation says model only.
            # The model as an nn.Module: transformers' @wraps(nn.Module.to) hides its own .to's binding from mypy.
            net, info = cast("tuple[torch.nn.Module, dict[str, Any]]", loaded)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelWeightsError(
                f"{files.where}: Qwen2.5-VL weights cannot be loaded: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        missing = [
            k for k in info.get("missing_keys", []) if not k.startswith("lm_head") or not cfg.get("tie_word_embeddings")
        ]
        mismatched = info.get("mismatched_keys", [])
        if missing or mismatched:
            what = (
                f"{len(missing)} missing (e.g. {list(missing)[:3]})"
                if missing
                else f"{len(mismatched)} of the wrong shape"
            )
            raise ModelWeightsError(
                f"{files.where}: the weights do not fit a Qwen2.5-VL model: {what}; they would be random. Are they the right checkpoint?"
            )
        net = net.to(dev).eval()
        log.info("loaded %s (%s, %s, %s) in %.1f s", files.where, dtype, attn, dev, time.perf_counter() - t0)
        return cls(
            net, tokenizer, events=events, constants=constants, chat_template=template, name=files.where, **options
        )

    def set_events(self, events: EventsSpec | Sequence[EventSpec]) -> None:
        """Use the ``qwen2_5_vl`` events of an events file (others belong to other backends)."""
        items = events.events if isinstance(events, EventsSpec) else list(events)
        self.events = [e for e in items if e.backend == "qwen2_5_vl"]

    @property
    def event_names(self) -> list[str]:
        return [e.event for e in self.events]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- text -----------------------------------------------------------------------------------

    def _answer_ids(self, words: Iterable[str]) -> list[int]:
        out: list[int] = []
        unk = self.tokenizer.unk_token_id
        for w in words:
            ids = self.tokenizer.encode(w, add_special_tokens=False)
            if len(ids) == 1 and ids[0] != unk and ids[0] not in out:
                out.append(ids[0])
        return out

    def render(self, question: str) -> str:
        """The full prompt text for one video + question, with ONE ``<|video_pad|>`` (as a processor expects)."""
        msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        text = self.tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=True, chat_template=self.chat_template
        )
        if text.count(VIDEO_MARK) != 1:
            msgs = [{"role": "user", "content": VIDEO_MARK + question}]
            text = self.tokenizer.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=True, chat_template=self.chat_template
            )
        if text.count(VIDEO_MARK) != 1 or text.count(VIDEO_PAD) != 1:
            raise ModelArchitectureError(f"{self.name}: the chat template does not place one {VIDEO_MARK} for a video")
        return text

    def _render_split(self, question: str) -> tuple[list[int], list[int]]:
        """Token ids before ``<|vision_start|>`` and after ``<|vision_end|>`` (special tokens split cleanly)."""
        hit = self._text_cache.get(question)
        if hit is None:
            head, tail = self.render(question).split(VIDEO_MARK)
            enc = self.tokenizer
            hit = (enc.encode(head, add_special_tokens=False), enc.encode(tail, add_special_tokens=False))
            if len(self._text_cache) > 4096:
                self._text_cache.clear()
            self._text_cache[question] = hit
        return hit

    @staticmethod
    def score_question(prompt: str) -> str:
        return SCORE_QUESTION.format(prompt=prompt.strip())

    @staticmethod
    def ground_question(prompt: str, duration: float) -> str:
        return GROUND_QUESTION.format(prompt=prompt.strip(), duration=duration)

    # -- inputs ---------------------------------------------------------------------------------

    def prepare(self, clip: Clip) -> PreparedClip:
        """Patches (normalised with the model's constants) and the temporal ids of a clip."""
        c = self.constants
        patches = patchify(
            clip,
            mean=c.image_mean,
            std=c.image_std,
            patch_size=c.patch_size,
            merge_size=c.merge_size,
            temporal_patch_size=c.temporal_patch_size,
        )
        t_ids = temporal_ids(
            clip.times, tokens_per_second=c.tokens_per_second, temporal_patch_size=c.temporal_patch_size
        )
        return PreparedClip(clip, patches, VideoSpan(patches.grid_thw, t_ids, merge_size=c.merge_size))

    def _row(self, prepared: PreparedClip, question: str, clip_idx: int) -> _Row:
        head, tail = self._render_split(question)
        n = prepared.num_tokens
        ids = head + [self.vision_start_id] + [self.video_id] * n + [self.vision_end_id] + tail
        pos = position_ids([len(head) + 1, prepared.span, len(tail) + 1])
        return _Row(ids, pos, len(head) + 1, n, clip_idx)

    def _pad(self, rows: Sequence[_Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded (input_ids, attention_mask, position_ids (3, B, L), mm_token_type_ids)."""
        B, L = len(rows), max(len(r) for r in rows)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, L), dtype=torch.long)
        pos = torch.zeros((3, B, L), dtype=torch.long)
        mm = torch.zeros((B, L), dtype=torch.int32)
        for b, r in enumerate(rows):
            off = L - len(r)
            ids[b, off:] = torch.tensor(r.ids, dtype=torch.long)
            mask[b, off:] = 1
            pos[:, b, off:] = torch.from_numpy(r.pos)
            mm[b, off + r.video_start : off + r.video_start + r.n_video] = VIDEO
        dev = self.device
        return ids.to(dev), mask.to(dev), pos.to(dev), mm.to(dev)

    def build_inputs(self, clips: Sequence[Clip | PreparedClip], questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """The complete transformers-style inputs, one row per (clip, question), clip-major, left-padded:
        ``input_ids``, ``attention_mask``, ``position_ids`` (3, B, L), ``mm_token_type_ids``,
        ``pixel_values_videos`` (each row's video, concatenated), ``video_grid_thw``, ``second_per_grid_ts``."""
        prepared = [c if isinstance(c, PreparedClip) else self.prepare(c) for c in clips]
        rows = [self._row(p, q, i) for i, p in enumerate(prepared) for q in questions]
        ids, mask, pos, mm = self._pad(rows)
        dev = self.device
        vis_dtype = self.model.model.visual.dtype
        pv = np.concatenate([prepared[r.clip].patches.pixel_values for r in rows])
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": pos,
            "mm_token_type_ids": mm,
            "pixel_values_videos": torch.from_numpy(pv).to(dev, vis_dtype),
            "video_grid_thw": torch.tensor(
                [prepared[r.clip].patches.grid_thw for r in rows], dtype=torch.long, device=dev
            ),
            "second_per_grid_ts": torch.tensor(
                [prepared[r.clip].patches.second_per_grid_t for r in rows], dtype=torch.float32, device=dev
            ),
        }

    # -- model calls ----------------------------------------------------------------------------

    def _forward(self, *, position_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs):
        """The one door to the model: always OUR (3, B, L) position ids, so transformers' rope index never runs."""
        if position_ids is None or position_ids.ndim != 3 or position_ids.shape[0] != 3:
            raise ModelError(
                f"position_ids must be (3, B, L), got {None if position_ids is None else tuple(position_ids.shape)}"
            )
        ref = kwargs.get("input_ids")
        if ref is None:
            ref = kwargs["inputs_embeds"]
        if tuple(position_ids.shape[1:]) != tuple(ref.shape[:2]):
            raise ModelError(f"position_ids {tuple(position_ids.shape)} do not match the inputs {tuple(ref.shape[:2])}")
        self.stats["forward_passes"] += 1
        return self.model(position_ids=position_ids, attention_mask=attention_mask, **kwargs)

    @torch.inference_mode()
    def encode_videos(self, prepared: Sequence[PreparedClip]) -> list[torch.Tensor]:
        """One vision-tower call for several clips; their merged embeddings (tokens × hidden), one per clip."""
        dev = self.device
        vis = self.model.model.visual
        t0 = time.perf_counter()
        pv = torch.from_numpy(np.concatenate([p.patches.pixel_values for p in prepared])).to(dev, vis.dtype)
        grid = torch.tensor([p.patches.grid_thw for p in prepared], dtype=torch.long, device=dev)
        out = self.model.model.get_video_features(pv, grid, return_dict=True)
        embeds = list(out.pooler_output)
        for p, e in zip(prepared, embeds):
            if e.shape[0] != p.num_tokens:
                raise ModelError(f"vision tower gave {e.shape[0]} tokens for a clip with {p.num_tokens}")
        self.stats["vision_calls"] += 1
        self.stats["vision_patches"] += int(pv.shape[0])
        self.stats["vision_tokens"] += sum(p.num_tokens for p in prepared)
        self.stats["vision_s"] += time.perf_counter() - t0
        return embeds

    def _embed(self, rows: Sequence[_Row], video_embeds: Sequence[torch.Tensor], prefix_only: bool = False):
        """Left-padded (inputs_embeds, attention_mask, position_ids) with each row's clip embeddings in its video
        slots; ``prefix_only`` keeps each row's shared prefix (template head + video) only."""
        if prefix_only:
            rows = [
                _Row(r.ids[: r.prefix_len], r.pos[:, : r.prefix_len], r.video_start, r.n_video, r.clip) for r in rows
            ]
        ids, mask, pos, _ = self._pad(rows)
        emb = self.model.get_input_embeddings()(ids)
        L = ids.shape[1]
        for b, r in enumerate(rows):
            s = L - len(r) + r.video_start
            emb[b, s : s + r.n_video] = video_embeds[r.clip].to(emb.dtype)
        return emb, mask, pos

    def _p_yes(self, logits: torch.Tensor) -> np.ndarray:
        """P(yes) from next-token logits (..., V): softmax restricted to the yes/no tokens."""
        lg = logits.float()
        yes = torch.logsumexp(lg[..., self.yes_ids], dim=-1)
        no = torch.logsumexp(lg[..., self.no_ids], dim=-1)
        return torch.sigmoid(yes - no).cpu().numpy().astype(np.float64)

    @torch.inference_mode()
    def _question_logits(
        self, prepared: Sequence[PreparedClip], questions: Sequence[str], embeds: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Next-token logits (n_clips, n_questions, V), float32, for clips that go in ONE batch."""
        n, E = len(prepared), len(questions)
        t0 = time.perf_counter()
        out: torch.Tensor | None
        if self.strategy == "reencode":
            out = torch.empty(0)
            for qi, q in enumerate(questions):
                inputs = self.build_inputs(prepared, [q])
                pos = inputs.pop("position_ids")
                mask = inputs.pop("attention_mask")
                lg = (
                    self._forward(position_ids=pos, attention_mask=mask, logits_to_keep=1, **inputs)
                    .logits[:, -1]
                    .float()
                )
                if qi == 0:
                    out = torch.empty((n, E, lg.shape[-1]), dtype=torch.float32, device=lg.device)
                out[:, qi] = lg
            self.stats["llm_s"] += time.perf_counter() - t0
            return out
        if embeds is None:
            embeds = self.encode_videos(prepared)
        if self.strategy == "batched":
            rows = [self._row(p, q, i) for i, p in enumerate(prepared) for q in questions]
            emb, mask, pos = self._embed(rows, embeds)
            lg = (
                self._forward(inputs_embeds=emb, attention_mask=mask, position_ids=pos, logits_to_keep=1)
                .logits[:, -1]
                .float()
            )
            self.stats["llm_s"] += time.perf_counter() - t0
            return lg.view(n, E, -1)
        # prefix: the shared part once (KV cache), then each question's suffix over it
        rows0 = [self._row(p, questions[0], i) for i, p in enumerate(prepared)]
        emb, pmask, ppos = self._embed(rows0, embeds, prefix_only=True)
        res = self._forward(
            inputs_embeds=emb, attention_mask=pmask, position_ids=ppos, use_cache=True, logits_to_keep=1
        )
        cache = res.past_key_values
        out = None
        for qi, q in enumerate(questions):
            rows = [self._row(p, q, i) for i, p in enumerate(prepared)]
            suffix = [r.ids[r.prefix_len :] for r in rows]
            Ls = len(suffix[0])
            ids = torch.tensor(suffix, dtype=torch.long, device=self.device)
            spos = torch.from_numpy(np.stack([r.pos[:, r.prefix_len :] for r in rows], axis=1)).to(self.device)
            mask = torch.cat([pmask, torch.ones((n, Ls), dtype=pmask.dtype, device=pmask.device)], dim=1)
            lg = (
                self._forward(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=spos,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                .logits[:, -1]
                .float()
            )
            cache.crop(-Ls)
            if out is None:
                out = torch.empty((n, E, lg.shape[-1]), dtype=torch.float32, device=lg.device)
            out[:, qi] = lg
        self.stats["llm_s"] += time.perf_counter() - t0
        assert out is not None  # set in the loop: there is a question (questions[0] above)
        return out

    @torch.inference_mode()
    def _generate(self, rows: Sequence[_Row], embeds: Sequence[torch.Tensor]) -> list[str]:
        """Greedy answers for rows (shared vision embeddings), with our positions for every new token."""
        if not rows:
            return []
        t0 = time.perf_counter()
        emb, mask, pos = self._embed(rows, embeds)
        B = len(rows)
        res = self._forward(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache = res.past_key_values
        next_pos = pos.amax(dim=(0, 2)) + 1  # (B,): text continues at max + 1
        stops = torch.tensor(self.stop_ids, dtype=torch.long, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        out: list[list[int]] = [[] for _ in range(B)]
        logits = res.logits[:, -1]
        for step in range(self.max_new_tokens):
            tok = logits.argmax(-1)
            for b in range(B):
                if not done[b] and tok[b].item() not in self.stop_ids:
                    out[b].append(int(tok[b]))
            done |= torch.isin(tok, stops)
            if bool(done.all()) or step == self.max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=mask.device)], dim=1)
            p = (next_pos + step).view(1, B, 1).expand(3, B, 1)
            res = self._forward(
                input_ids=tok[:, None], attention_mask=mask, position_ids=p, past_key_values=cache, use_cache=True
            )
            cache = res.past_key_values
            logits = res.logits[:, -1]
        self.stats["generate_s"] += time.perf_counter() - t0
        return [self.tokenizer.decode(o, skip_special_tokens=True) for o in out]

    # -- batching -------------------------------------------------------------------------------

    def _cost(self, prepared: Sequence[PreparedClip], n_questions: int) -> int:
        """Padded LLM tokens of the largest forward pass for these clips."""
        if not prepared:
            return 0
        head, tail = self._render_split(self.score_question("x"))
        longest = max(p.num_tokens for p in prepared) + len(head) + len(tail) + 2
        rows = len(prepared) * (n_questions if self.strategy == "batched" else 1)
        return rows * longest

    def plan_batches(self, prepared: Sequence[PreparedClip], n_questions: int = 1) -> list[list[int]]:
        """Clip indices per batch, in order: at most ``max_batch_clips`` clips and ``max_batch_tokens`` padded
        tokens per forward pass (a clip larger than the budget on its own goes alone)."""
        batches: list[list[int]] = []
        cur: list[int] = []
        for i, p in enumerate(prepared):
            trial = cur + [i]
            if cur and (
                len(trial) > self.max_batch_clips
                or self._cost([prepared[j] for j in trial], n_questions) > self.max_batch_tokens
            ):
                batches.append(cur)
                trial = [i]
            cur = trial
            if len(cur) == 1 and self._cost([p], n_questions) > self.max_batch_tokens:
                self.stats["over_budget_clips"] += 1
        if cur:
            batches.append(cur)
        return batches

    # -- public scoring -------------------------------------------------------------------------

    def next_token_logits(self, clips: Sequence[Clip | PreparedClip], questions: Sequence[str]) -> torch.Tensor:
        """Next-token logits (n_clips, n_questions, V) on CPU, float32, batched by the token budget."""
        prepared = [c if isinstance(c, PreparedClip) else self.prepare(c) for c in clips]
        parts: list[torch.Tensor | None] = [None] * len(prepared)
        for batch in self.plan_batches(prepared, len(questions)):
            lg = self._question_logits([prepared[i] for i in batch], questions).cpu()
            for k, i in enumerate(batch):
                parts[i] = lg[k]
        return torch.stack(parts)  # type: ignore[arg-type]

    def yes_probs(self, clips: Sequence[Clip | PreparedClip], prompts: Sequence[str]) -> np.ndarray:
        """P(yes) (n_clips, n_prompts) for natural-language event prompts."""
        questions = [self.score_question(p) for p in prompts]
        prepared = [c if isinstance(c, PreparedClip) else self.prepare(c) for c in clips]
        out = np.zeros((len(prepared), len(questions)))
        for batch in self.plan_batches(prepared, len(questions)):
            lg = self._question_logits([prepared[i] for i in batch], questions)
            out[batch] = self._p_yes(lg)
        return out

    def ground(
        self,
        clips: Sequence[Clip | PreparedClip],
        prompts: Sequence[str],
        *,
        events: Sequence[str] | None = None,
        probs: np.ndarray | None = None,
    ) -> list[list[list[GroundedSpan]]]:
        """Ask for start/end seconds of every prompt in every clip: ``[clip][prompt] → spans`` (0 or 1 each)."""
        prepared = [c if isinstance(c, PreparedClip) else self.prepare(c) for c in clips]
        names = list(events) if events is not None else list(prompts)
        todo = [(i, j) for i in range(len(prepared)) for j in range(len(prompts))]
        result: list[list[list[GroundedSpan]]] = [[[] for _ in prompts] for _ in prepared]
        for batch in self.plan_batches(prepared, len(prompts)):
            embeds = self.encode_videos([prepared[i] for i in batch])
            local = {i: k for k, i in enumerate(batch)}
            pairs = [(i, j) for i, j in todo if i in local]
            self._ground_pairs(prepared, embeds, local, pairs, prompts, names, probs, result)
        return result

    def _ground_pairs(self, prepared, embeds, local, pairs, prompts, names, probs, result) -> None:
        if not pairs:
            return
        rows = []
        for i, j in pairs:
            clip = prepared[i].clip
            q = self.ground_question(prompts[j], clip.end - clip.start)
            rows.append(self._row(prepared[i], q, local[i]))
        longest = max(len(r) for r in rows) + self.max_new_tokens
        step = max(1, self.max_batch_tokens // longest)
        for a in range(0, len(rows), step):
            texts = self._generate(rows[a : a + step], embeds)
            for (i, j), text in zip(pairs[a : a + step], texts):
                span = self._span_from_text(
                    prepared[i].clip, names[j], text, 1.0 if probs is None else float(probs[i, j])
                )
                if span is not None:
                    result[i][j].append(span)

    def _span_from_text(self, clip: Clip, event: str, text: str, prob: float) -> GroundedSpan | None:
        """Parse, clamp and place one answer in stream time; malformed text is counted and dropped."""
        try:
            self.stats["ground_answers"] += 1
            parsed = parse_span(text)
            if parsed is None:
                self.stats["absent" if says_absent(text) else "malformed"] += 1
                if not says_absent(text):
                    log.debug(
                        "unparseable grounding answer for %s clip %s/%d: %r",
                        event,
                        clip.stream_id,
                        clip.index,
                        text[:200],
                    )
                return None
            clamped = clip_span(clip, *parsed)
            if clamped is None:
                self.stats["malformed"] += 1
                log.debug(
                    "grounding answer outside the clip for %s clip %s/%d: %r",
                    event,
                    clip.stream_id,
                    clip.index,
                    text[:200],
                )
                return None
            rs, re_ = clamped
            s, e = clip.stream_seconds(rs), clip.stream_seconds(re_)
            s, e = max(clip.start, min(s, clip.end)), max(clip.start, min(e, clip.end))
            self.stats["grounded"] += 1
            return GroundedSpan(
                event, clip.stream_id, clip.index, rs, re_, s, e, clip.utc(rs), clip.utc(re_), prob, text
            )
        except Exception:
            self.stats["malformed"] += 1
            log.debug("grounding answer could not be placed: %r", text, exc_info=True)
            return None

    def infer(self, clips: Sequence[Clip], events: EventsSpec | Sequence[EventSpec] | None = None) -> list[ClipResult]:
        """Clip-level P(yes), grounded spans and per-frame scores for every qwen2_5_vl event on every clip."""
        evs = (
            self.events
            if events is None
            else [e for e in (events.events if isinstance(events, EventsSpec) else events) if e.backend == "qwen2_5_vl"]
        )
        results = [ClipResult(c.stream_id, c.index) for c in clips]
        if not evs or not clips:
            return results
        prompts = [e.prompt or e.event for e in evs]
        questions = [self.score_question(p) for p in prompts]
        prepared = [self.prepare(c) for c in clips]
        probs = np.zeros((len(clips), len(evs)))
        for batch in self.plan_batches(prepared, len(questions)):
            sub = [prepared[i] for i in batch]
            embeds = None if self.strategy == "reencode" else self.encode_videos(sub)
            probs[batch] = self._p_yes(self._question_logits(sub, questions, embeds))
            self.stats["clips"] += len(batch)
            self.stats["questions"] += len(batch) * len(questions)
            self.stats["batches"] += 1
            if self.ground_mode == "never":
                continue
            pairs = [
                (i, j)
                for i in batch
                for j, ev in enumerate(evs)
                if self.ground_mode == "always" or probs[i, j] >= float(ev.on_score)
            ]
            if pairs:
                if embeds is None:
                    embeds = self.encode_videos(sub)
                spans: list[list[list[GroundedSpan]]] = [[[] for _ in evs] for _ in clips]
                self._ground_pairs(
                    prepared,
                    embeds,
                    {i: k for k, i in enumerate(batch)},
                    pairs,
                    prompts,
                    [e.event for e in evs],
                    probs,
                    spans,
                )
                for i, j in pairs:
                    if spans[i][j]:
                        results[i].spans[evs[j].event] = spans[i][j]
        for i, clip in enumerate(clips):
            for j, ev in enumerate(evs):
                results[i].probs[ev.event] = float(probs[i, j])
                results[i].scores[ev.event] = frame_scores(clip, probs[i, j], results[i].spans.get(ev.event, []))
        return results

    def score(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        """Per clip ``{event: per-frame scores aligned with clip.times}`` (:class:`~.backend.Backend`'s verb)."""
        if not self.events:
            return [{} for _ in clips]
        return [r.scores for r in self.infer(clips)]
