"""Reward-model training with the K-wise loss of InstructGPT (Ouyang et al. 2022, 3.5).

Each step takes B prompts, forwards each of their K responses ONCE as one flat batch,
and forms all pairs between tie groups from the (B, K) scores: the paper's guard against
over-fitting, and why it needs K forwards per prompt where pairwise trainers need
2 x C(K, 2). One epoch, cosine decay to 10% of the lr; afterwards an offset makes SFT
samples score 0 on average.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from training.ml import models
from training.ml.configs import RMConfig
from training.ml.losses import correct_pairs, kwise_ranking_loss
from training.ml.precision import FP32, Precision, master_weights
from training.ml.preferences import Prompt, RankedExample
from training.ml.reward_model import (
    OFFSET_KEY,
    RewardModel,
    is_reward_model_folder,
    load_reward_model,
    save_reward_model,
)
from training.ml.rm_batches import (
    EncodedRanking,
    RankingBatch,
    collate_rankings,
    encode_rankings,
    encode_sequence,
    length_bucketed_batches,
    micro_batches,
    pad_right,
)

__all__ = [
    "OFFSET_KEY",
    "RMConfig",
    "RewardModel",
    "calibrate_offset",
    "evaluate_reward_model",
    "is_reward_model_folder",
    "load_reward_model",
    "save_reward_model",
    "score_texts",
    "split_eval",
    "train_reward_model",
]

Tally = defaultdict[str, float]  # summed step figures: loss, correct, pairs, tokens...
MetricsCallback = Callable[[int, dict[str, Any]], None]


def score_rankings(model: RewardModel, batch: RankingBatch) -> Tensor:
    """(B, K) scores: every response forwarded once in ONE flat batch, then regrouped."""
    flat = model(batch.input_ids, batch.attention_mask)  # (N,)
    b, k = batch.prefer.shape[:2]
    grid = flat.new_zeros(b * k).index_copy(0, batch.slots, flat)  # padding slots stay 0
    return grid.view(b, k)


def split_eval(
    examples: Sequence[RankedExample], fraction: float, seed: int
) -> tuple[list[RankedExample], list[RankedExample]]:
    """A seeded random (train, eval) split of rankings; whole prompts stay on one side."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    n_eval = round(len(order) * fraction)
    if fraction > 0 and n_eval == 0:
        n_eval = 1
    return order[n_eval:], order[:n_eval]


def cosine_with_warmup(step: int, total: int, warmup: int, floor: float) -> float:
    """lr multiplier: linear warmup, then cosine from 1 down to ``floor`` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup - 1)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _optimizer(model: nn.Module, config: RMConfig) -> torch.optim.AdamW:
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def _prepare(model: RewardModel, config: RMConfig) -> None:
    memory = models.MemoryConfig(
        train_top_layers=config.train_top_layers,
        gradient_checkpointing=config.gradient_checkpointing,
        lora_r=config.lora_r,
        lora_modules_to_save=["score"] if config.lora_r else None,
    )
    if memory.lora_r or memory.train_top_layers is not None or memory.gradient_checkpointing:
        model.seq = models.prepare_for_training(model._base(), memory)


def _step(
    model: RewardModel,
    batch: list[EncodedRanking],
    pad_id: int,
    config: RMConfig,
    precision: Precision,
    scaler: torch.amp.GradScaler,
) -> Tally:
    """Forward/backward one optimizer step's prompts; returns its tallies (loss, correct,
    pairs, tokens = attended tokens, padded_tokens = tokens including padding)."""
    weight = sum(1 for r in batch if r.pair_count)
    tally: Tally = defaultdict(float, steps=1, prompts=len(batch))
    for part in micro_batches(batch, config.max_sequences_per_forward):
        rb = collate_rankings(part, pad_id, model.device)
        with precision.autocast():
            scores = score_rankings(model, rb).float()  # (B, K); the loss in fp32
        margin = config.margin * rb.distance if config.margin else None
        loss = kwise_ranking_loss(scores, rb.prefer, margin)
        share = sum(1 for r in part if r.pair_count) / weight
        scaler.scale(loss * share).backward()
        tally["loss"] += loss.item() * share
        tally["correct"] += int(correct_pairs(scores.detach(), rb.prefer).sum())
        tally["pairs"] += rb.pairs
        tally["tokens"] += int(rb.attention_mask.sum())
        tally["padded_tokens"] += rb.attention_mask.numel()
    return tally


def train_reward_model(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Sequence[RankedExample],
    *,
    config: RMConfig,
    eval: Sequence[RankedExample] | None = None,
    on_metrics: MetricsCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    precision: Precision = FP32,
) -> dict[str, Any]:
    """Train ``model`` in place on rankings; returns the final metrics.

    Each step takes ``config.batch_size`` prompts, forwards their K responses once as one
    flat batch and applies the K-wise loss to the (B, K) scores (PRODUCT.md 1.3). Without
    ``eval``, ``config.eval_fraction`` of the rankings is held out. ``should_stop`` is
    checked before every step; a stop returns ``status="cancelled"``. The weights train in
    fp32; ``precision`` sets the autocast dtype of forward and backward.
    """
    config.validate()
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    master_weights(model)
    scaler = precision.grad_scaler()
    if eval is None and config.eval_fraction > 0:
        train, eval = split_eval(train, config.eval_fraction, config.seed)
    _prepare(model, config)
    rankings = [r for r in encode_rankings(tokenizer, train, config.max_length) if r.pair_count]
    if not rankings:
        raise ValueError("no training ranking has a pair (every ranking is one tie group)")
    plan = _plan_batches(rankings, config, random.Random(config.seed))
    optimizer = _optimizer(model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: cosine_with_warmup(s, len(plan), config.warmup_steps, config.min_lr_ratio),
    )
    model.train()
    totals: Tally = defaultdict(float)
    for step, batch in enumerate(plan, start=1):
        if should_stop is not None and should_stop():
            break
        lr = schedule.get_last_lr()[0]
        tally = _optimizer_step(
            model, batch, tokenizer.pad_token_id, config, optimizer, precision, scaler
        )
        schedule.step()
        for key, value in tally.items():
            totals[key] += value
        metrics = {
            "rm/loss": tally["loss"],
            "rm/accuracy": tally["correct"] / max(tally["pairs"], 1),
            "rm/lr": lr,
            "charts/pairs_per_s": totals["pairs"] / (time.perf_counter() - start),
            "total_steps": len(plan),
        }
        if eval and config.eval_every and step % config.eval_every == 0 and step < len(plan):
            metrics["rm/eval_accuracy"] = _eval_accuracy(model, tokenizer, eval, config)
        if on_metrics is not None:
            on_metrics(step, metrics)
    model.eval()
    result = _summary(totals, time.perf_counter() - start, cancelled=totals["steps"] < len(plan))
    if eval and result["status"] == "completed":
        evaluation = evaluate_reward_model(
            model, tokenizer, eval, max_length=config.max_length, batch_size=config.batch_size
        )
        result.update(
            {
                "rm/eval_accuracy": evaluation["accuracy"],
                "rm/eval_loss": evaluation["loss"],
                "eval": evaluation,
            }
        )
    return result


def _optimizer_step(
    model: RewardModel,
    batch: list[EncodedRanking],
    pad_id: int,
    config: RMConfig,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    scaler: torch.amp.GradScaler,
) -> Tally:
    optimizer.zero_grad(set_to_none=True)
    tally = _step(model, batch, pad_id, config, precision, scaler)
    scaler.unscale_(optimizer)  # clip the true gradients (a no-op unless fp16)
    if config.max_grad_norm:
        trainable = [p for p in model.parameters() if p.requires_grad]
        nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return tally


def _summary(totals: Tally, seconds: float, *, cancelled: bool) -> dict[str, Any]:
    steps = int(totals["steps"])
    return {
        "rm/loss": totals["loss"] / steps if steps else float("nan"),
        "rm/accuracy": totals["correct"] / totals["pairs"] if totals["pairs"] else float("nan"),
        "charts/pairs_per_s": totals["pairs"] / seconds,
        "charts/tokens_per_s": totals["tokens"] / seconds,
        "steps": steps,
        "pairs": int(totals["pairs"]),
        "prompts": int(totals["prompts"]),
        "tokens": int(totals["tokens"]),
        "padded_tokens": int(totals["padded_tokens"]),
        "seconds": seconds,
        "status": "cancelled" if cancelled else "completed",
    }


def _plan_batches(
    rankings: list[EncodedRanking], config: RMConfig, rng: random.Random
) -> list[list[EncodedRanking]]:
    """The step plan: ``epochs`` passes (a fraction cuts the last one short)."""
    plan: list[list[EncodedRanking]] = []
    per_epoch = math.ceil(len(rankings) / config.batch_size)
    for _ in range(math.ceil(config.epochs)):
        if config.length_bucketing:
            plan += length_bucketed_batches(rankings, config.batch_size, rng)
        else:
            order = list(rankings)
            rng.shuffle(order)
            plan += [
                order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)
            ]
    return plan[: max(1, round(config.epochs * per_epoch))]


def _eval_accuracy(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    eval: Sequence[RankedExample],
    config: RMConfig,
) -> float:
    return float(
        evaluate_reward_model(
            model, tokenizer, eval, max_length=config.max_length, batch_size=config.batch_size
        )["accuracy"]
    )


# --------------------------------------------------------------------------- evaluation


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
            encode_sequence(tokenizer, models.encode_prompt(tokenizer, prompt, 0), text, max_length)
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
