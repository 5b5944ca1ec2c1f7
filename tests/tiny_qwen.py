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


def make_tiny_checkpoint(
    path: str | os.PathLike, *, seed: int = 0, tokens_per_second: float = 2, text_layers: int = 2, vision_depth: int = 2
) -> Path:
    """Write a tiny randomly initialised Qwen2.5-VL checkpoint (config, weights, a WordLevel tokenizer with the
    Qwen special tokens and chat template, the Qwen2-VL image/video processor configs) to ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
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
    ids = {t: fast.convert_tokens_to_ids(t) for t in special}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(fast),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=text_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            patch_size=PATCH_SIZE,
            spatial_merge_size=MERGE_SIZE,
            temporal_patch_size=TEMPORAL_PATCH_SIZE,
            tokens_per_second=tokens_per_second,
            window_size=56,
            fullatt_block_indexes=[vision_depth - 1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        architectures=[ARCHITECTURE],
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
