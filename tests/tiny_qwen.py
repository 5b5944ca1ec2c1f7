"""A tiny randomly initialised Qwen2.5-VL checkpoint for tests and benchmarks (no download).

Not part of the product: tests import :func:`make_tiny_checkpoint` from here, ``bench/model.py`` too (it puts
the repository root on ``sys.path``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from longwatch.model.checkpoint import ARCHITECTURE
from longwatch.model.qwen_vl import DEFAULT_CHAT_TEMPLATE, VIDEO_PAD, VISION_END, VISION_START
from longwatch.pipeline.config import MERGE_SIZE, PATCH_SIZE, TEMPORAL_PATCH_SIZE

TINY_WORDS = (
    "yes no Yes No none the a an this that it in on of to is are does do did happen happens video person "
    "falls fall ground car truck enters room dock backs into answer with start end time seconds second "
    "long when if not like from between and or you helpful assistant system user walks door opens red "
    "blue green dog cat runs stops moves people open close"
)


# The published architectures (Qwen/Qwen2.5-VL-{3B,7B}-Instruct config.json): the sizes of every layer. The
# token ids are not taken from there: the random model uses the tiny tokenizer's ids, which change nothing
# about the cost of a forward pass (the vocabulary size, hence the embedding and LM-head sizes, is kept).
_VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
    hidden_act="silu",
)
PUBLISHED: dict[str, dict] = {
    "3b": dict(
        text=dict(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
        vision=dict(_VISION, out_hidden_size=2048),
    ),
    "7b": dict(
        text=dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
        ),
        vision=dict(_VISION, out_hidden_size=3584),
    ),
}
SIZES = ("tiny", *PUBLISHED)


def _tokenizer():
    """A WordLevel tokenizer with the Qwen special tokens and our chat template, and its special ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", VISION_START, VISION_END, "<|image_pad|>", VIDEO_PAD]
    words = ["[UNK]"] + list("0123456789.,:;-–{}[]()\"'?!/") + TINY_WORDS.split()
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=special,
        chat_template=DEFAULT_CHAT_TEMPLATE,
    )
    return fast, {t: fast.convert_tokens_to_ids(t) for t in special}


def _config(
    size: str, ids: dict[str, int], *, vocab_size: int, tokens_per_second: float, text_layers: int, vision_depth: int
):
    from transformers import Qwen2_5_VLConfig

    token_ids = dict(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]
    )
    rope = {"rope_type": "default", "rope_theta": 1e6}
    if size == "tiny":
        text = dict(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=text_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=8192,
            rope_parameters={**rope, "mrope_section": [2, 3, 3]},
        )
        vision = dict(
            depth=vision_depth,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            tokens_per_second=tokens_per_second,
            window_size=56,
            fullatt_block_indexes=[vision_depth - 1],
        )
        tie = {}  # the config's default, as the tiny checkpoints have always been built
    elif size in PUBLISHED:
        text = dict(PUBLISHED[size]["text"], rope_parameters={**rope, "mrope_section": [16, 24, 24]})
        tie = {"tie_word_embeddings": bool(text.pop("tie_word_embeddings"))}
        vision = dict(PUBLISHED[size]["vision"])
    else:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return Qwen2_5_VLConfig(
        text_config={**text, **token_ids},
        vision_config=dict(
            vision, patch_size=PATCH_SIZE, spatial_merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        **tie,
        architectures=[ARCHITECTURE],
    )


def make_random_model(
    size: str, *, dtype: torch.dtype = torch.bfloat16, device: str = "cpu", attn: str = "sdpa", seed: int = 0
):
    """``(model, tokenizer)``: Qwen2.5-VL of the published ``size`` (``"3b"``, ``"7b"``) with random weights,
    built in memory on ``device`` (nothing is downloaded or written). For throughput only: what it answers
    is noise, but its cost per token is the real model's."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    fast, ids = _tokenizer()
    cfg = _config(size, ids, vocab_size=0, tokens_per_second=2, text_layers=0, vision_depth=0)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype, attn_implementation=attn).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model, fast


def make_tiny_checkpoint(
    path: str | os.PathLike, *, seed: int = 0, tokens_per_second: float = 2, text_layers: int = 2, vision_depth: int = 2
) -> Path:
    """Write a tiny randomly initialised Qwen2.5-VL checkpoint (config, weights, a WordLevel tokenizer with the
    Qwen special tokens and chat template, the Qwen2-VL image/video processor configs) to ``path``."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    fast, ids = _tokenizer()
    cfg = _config(
        "tiny",
        ids,
        vocab_size=len(fast),
        tokens_per_second=tokens_per_second,
        text_layers=text_layers,
        vision_depth=vision_depth,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    fast.save_pretrained(out)
    Qwen2VLImageProcessor().save_pretrained(out)
    Qwen2VLVideoProcessor().save_pretrained(out)
    return out
