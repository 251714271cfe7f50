from __future__ import annotations

import math

import pytest
import torch

from training.ml.memory import decoder_layers, is_gradient_checkpointing
from training.ml.sft import (
    IGNORE_INDEX,
    Demonstration,
    SFTConfig,
    build_sft_example,
    train_sft,
)

WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "melon"]
DEMOS = [Demonstration(prompt=f"Say {w}.", response=f"{w} {w}") for w in WORDS]


def test_prompt_tokens_are_masked(tiny_lm):
    _, tokenizer = tiny_lm
    demo = Demonstration(prompt=[{"role": "user", "content": "Say fig."}], response="fig fig")
    ids, labels = build_sft_example(tokenizer, demo, max_length=512)
    n_prompt = labels.count(IGNORE_INDEX)
    assert tokenizer.decode(ids[:n_prompt]).endswith("Say fig.<|im_end|>\n<|im_start|>assistant\n")
    assert all(label == IGNORE_INDEX for label in labels[:n_prompt])
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.decode(labels[n_prompt:]) == "fig fig<|im_end|>"


def test_truncation_keeps_the_response_and_the_prompt_end(tiny_lm):
    _, tokenizer = tiny_lm
    demo = Demonstration(prompt="word " * 300, response="short answer")
    ids, labels = build_sft_example(tokenizer, demo, max_length=32)
    assert len(ids) == len(labels) == 32
    assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == "short answer<|im_end|>"
    assert tokenizer.decode(ids[:-3]).endswith("<|im_start|>assistant\n")


def test_sft_lowers_training_loss_and_reports_metrics(fresh_tiny_lm):
    model, tokenizer = fresh_tiny_lm
    seen: list[tuple[int, dict]] = []
    config = SFTConfig(epochs=8, batch_size=4, lr=3e-3, eval_fraction=0.25, warmup_ratio=0.1)
    result = train_sft(model, tokenizer, DEMOS, config, on_metrics=lambda s, v: seen.append((s, v)))
    assert result["status"] == "completed"
    assert result["sft/train_examples"] == 6 and result["sft/eval_examples"] == 2
    assert result["sft/steps"] == result["total_steps"] == 16 == len(seen)
    assert result["sft/loss"] < result["sft/first_loss"] - 2.0
    assert math.isfinite(result["sft/eval_loss"]) and result["charts/tokens_per_s"] > 0
    assert "sft/eval_loss" in seen[-1][1] and seen[-1][1]["step"] == 16
    assert not model.training


def test_every_trainable_parameter_changes_in_one_step(fresh_tiny_lm):
    model, tokenizer = fresh_tiny_lm
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_sft(model, tokenizer, DEMOS[:4], SFTConfig(epochs=1, batch_size=4, lr=1e-3))
    for name, param in model.named_parameters():
        assert not torch.equal(param, before[name]), f"{name} did not change"


def test_top_layer_training_changes_only_the_top(fresh_tiny_lm):
    model, tokenizer = fresh_tiny_lm
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = SFTConfig(epochs=1, batch_size=4, lr=1e-3, train_top_layers=1)
    result = train_sft(model, tokenizer, DEMOS[:4], config)
    top = {f"model.layers.{len(decoder_layers(model)) - 1}.", "model.norm."}
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        assert changed == any(name.startswith(prefix) for prefix in top), name
    assert result["sft/trainable_params"] < sum(p.numel() for p in model.parameters()) / 2


def test_should_stop_cancels_before_the_next_step(fresh_tiny_lm):
    model, tokenizer = fresh_tiny_lm
    calls = iter([False, False, True])
    result = train_sft(
        model, tokenizer, DEMOS, SFTConfig(epochs=5, batch_size=2), should_stop=lambda: next(calls)
    )
    assert result["status"] == "cancelled" and result["sft/steps"] == 2


def test_explicit_eval_demos_and_gradient_checkpointing(fresh_tiny_lm):
    model, tokenizer = fresh_tiny_lm
    config = SFTConfig(epochs=1, batch_size=4, gradient_checkpointing=True)
    during: list[bool] = []
    result = train_sft(
        model,
        tokenizer,
        DEMOS[:4],
        config,
        eval_demos=DEMOS[4:],
        on_metrics=lambda step, values: during.append(is_gradient_checkpointing(model)),
    )
    assert during == [True]
    assert result["sft/train_examples"] == 4 and result["sft/eval_examples"] == 4
    assert not is_gradient_checkpointing(model) and model.config.use_cache


def test_lora_sft_merges_adapters_into_the_model(fresh_tiny_lm):
    model, tokenizer = fresh_tiny_lm
    q_before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    embed_before = model.model.embed_tokens.weight.detach().clone()
    train_sft(model, tokenizer, DEMOS[:4], SFTConfig(epochs=2, batch_size=2, lr=1e-2, lora_r=4))
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear  # merged, unwrapped
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, q_before)
    assert torch.equal(model.model.embed_tokens.weight, embed_before)


def test_bad_config_is_refused(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="eval_fraction"):
        train_sft(model, tokenizer, DEMOS, SFTConfig(eval_fraction=1.5))
    with pytest.raises(ValueError, match="demonstration"):
        train_sft(model, tokenizer, [], SFTConfig())
