"""Freezing blocks and LoRA adapters (the memory options of every trainer)."""

from __future__ import annotations

import torch

from training.ml.chat import encode_prompt
from training.ml.loading import load_causal_lm
from training.ml.memory import (
    apply_lora,
    count_trainable,
    decoder_layers,
    freeze_all_but_top_layers,
)
from training.ml.saving import save_pretrained_atomic


def _logits(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor([encode_prompt(tokenizer, "Hello there", 64)])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_freeze_all_but_top_layers(fresh_tiny_lm):
    model, _ = fresh_tiny_lm
    n = freeze_all_but_top_layers(model, 1)
    top, bottom = decoder_layers(model)[1], decoder_layers(model)[0]
    expected = sum(p.numel() for p in top.parameters()) + model.model.norm.weight.numel()
    assert n == expected == count_trainable(model)
    assert all(p.requires_grad for p in top.parameters())
    assert not any(p.requires_grad for p in bottom.parameters())
    assert not model.model.embed_tokens.weight.requires_grad  # tied lm_head stays frozen
    every_block = freeze_all_but_top_layers(model, 5)
    assert all(p.requires_grad for p in decoder_layers(model).parameters())
    assert every_block == count_trainable(model) > n
    assert freeze_all_but_top_layers(model, 0) == model.model.norm.weight.numel()


def test_lora_trains_adapters_only_and_saves_merged(fresh_tiny_lm, tmp_path):
    model, tokenizer = fresh_tiny_lm
    wrapped = apply_lora(model, r=4, alpha=8)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # make the adapters do something
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    expected = _logits(wrapped, tokenizer)
    out = save_pretrained_atomic(wrapped, tokenizer, tmp_path / "lora")
    reloaded, _ = load_causal_lm(str(out))
    assert torch.allclose(_logits(reloaded, tokenizer), expected, atol=1e-4)
