"""Using a trained reward model: held-out accuracy, scoring texts, the offset calibration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from training.ml.chat import encode_prompt
from training.ml.losses import correct_pairs, kwise_ranking_loss
from training.ml.preferences import Prompt, RankedExample
from training.ml.reward.batches import (
    collate_rankings,
    encode_rankings,
    encode_sequence,
    pad_right,
    score_rankings,
)
from training.ml.reward.model import RewardModel


@torch.no_grad()
def evaluate_reward_model(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[RankedExample],
    *,
    max_length: int = 512,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Held-out pairwise accuracy (strict wins), K-wise loss, and both split by labeler."""
    was_training = model.training
    model.eval()
    rankings = encode_rankings(tokenizer, examples, max_length)
    per_labeler: dict[str | None, list[float]] = {}
    loss_sum, prompts_with_pairs = 0.0, 0
    for start in range(0, len(rankings), batch_size):
        part = rankings[start : start + batch_size]
        batch = collate_rankings(part, tokenizer.pad_token_id, model.device)
        scores = score_rankings(model, batch)  # (B, K)
        correct = correct_pairs(scores, batch.prefer).tolist()  # (B,)
        with_pairs = sum(1 for r in part if r.pair_count)
        if with_pairs:
            loss_sum += kwise_ranking_loss(scores, batch.prefer).item() * with_pairs
            prompts_with_pairs += with_pairs
        for ranking, right in zip(part, correct, strict=True):
            tally = per_labeler.setdefault(ranking.labeler, [0, 0])
            tally[0] += right
            tally[1] += ranking.pair_count
    model.train(was_training)
    right = sum(t[0] for t in per_labeler.values())
    pairs = int(sum(t[1] for t in per_labeler.values()))
    return {
        "accuracy": right / pairs if pairs else float("nan"),
        "pairs": pairs,
        "loss": loss_sum / prompts_with_pairs if prompts_with_pairs else float("nan"),
        "by_labeler": {
            name: {"accuracy": t[0] / t[1] if t[1] else float("nan"), "pairs": int(t[1])}
            for name, t in per_labeler.items()
            if name is not None
        },
    }


@torch.no_grad()
def score_texts(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    samples: Sequence[tuple[Prompt, str]],
    *,
    max_length: int = 512,
    batch_size: int = 32,
) -> Tensor:
    """(N,) rewards of (prompt, response) pairs, tokenised exactly as in training."""
    was_training = model.training
    model.eval()
    scores = []
    for start in range(0, len(samples), batch_size):
        flat = [
            encode_sequence(tokenizer, encode_prompt(tokenizer, prompt, 0), text, max_length)
            for prompt, text in samples[start : start + batch_size]
        ]
        input_ids, attention_mask = pad_right(flat, tokenizer.pad_token_id, model.device)
        scores.append(model(input_ids, attention_mask).cpu())
    model.train(was_training)
    return torch.cat(scores) if scores else torch.zeros(0)


def calibrate_offset(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts_and_sft_samples: Sequence[tuple[Prompt, str]],
    *,
    max_length: int = 512,
    batch_size: int = 32,
) -> float:
    """Set the offset so the given SFT samples score 0 on average (InstructGPT 3.5);
    returns the new offset."""
    if not prompts_and_sft_samples:
        raise ValueError("calibration needs at least one (prompt, SFT sample) pair")
    raw = score_texts(
        model, tokenizer, prompts_and_sft_samples, max_length=max_length, batch_size=batch_size
    )
    model.reward_offset = model.reward_offset - float(raw.double().mean())
    return model.reward_offset
