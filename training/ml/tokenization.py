"""Tokenizers as every trainer and sampler expects them: a pad token, left padding."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from training.ml.model_files import ModelLoadError


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Pad token set (to EOS if missing, never adding embeddings); left padding."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def tokenizer_from_folder(folder: Path) -> PreTrainedTokenizerBase:
    """The prepared tokenizer saved in ``folder``."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise ModelLoadError(f"cannot load tokenizer from {folder}: {exc}") from exc
    return prepare_tokenizer(tokenizer)
