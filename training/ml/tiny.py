"""``tiny`` and ``tiny:SEED``: a small random Llama over the real SmolLM2 vocabulary (tests).

Built in memory from its seed, so two loads of one spec are the same model and no folder
is ever written for it.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.ml.model_files import ModelLoadError

TINY_SEED = 0


def is_tiny(spec: str) -> bool:
    return spec == "tiny" or spec.startswith("tiny:")


def tiny_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """A 2-block Llama (hidden 64) over the full SmolLM2 vocabulary (49152 tokens)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny(
    spec: str, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype
) -> PreTrainedModel:
    """The random model of ``spec`` (``tiny`` or ``tiny:SEED``) for ``tokenizer``."""
    seed_text = spec.partition(":")[2]
    if seed_text and not seed_text.isdigit():
        raise ModelLoadError(f"bad tiny spec {spec!r}: use tiny or tiny:SEED")
    with torch.random.fork_rng(devices=[]):  # deterministic init, global RNG untouched
        torch.manual_seed(int(seed_text or TINY_SEED))
        model = AutoModelForCausalLM.from_config(tiny_config(tokenizer), dtype=dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
