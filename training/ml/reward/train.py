"""Reward-model training with the K-wise loss of InstructGPT (Ouyang et al. 2022, 3.5).

Each step takes B prompts, forwards each of their K responses ONCE as one flat batch,
and forms all pairs between tie groups from the (B, K) scores: the paper's guard against
over-fitting, and why it needs K forwards per prompt where pairwise trainers need
2 x C(K, 2). One epoch, cosine decay to 10% of the lr; afterwards an offset makes SFT
samples score 0 on average (``training.ml.reward.evaluate.calibrate_offset``).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from training.ml.configs import RMConfig
from training.ml.distributed import SINGLE, Distributed
from training.ml.losses import correct_pairs, kwise_ranking_loss
from training.ml.memory import MemoryConfig, prepare_for_training
from training.ml.precision import FP32, Precision, master_weights
from training.ml.preferences import RankedExample
from training.ml.reward.batches import (
    EncodedRanking,
    collate_rankings,
    encode_rankings,
    length_bucketed_batches,
    micro_batches,
    score_rankings,
)
from training.ml.reward.embedding_grad import install_embedding_grad_buffer
from training.ml.reward.evaluate import evaluate_reward_model
from training.ml.reward.model import RewardModel
from training.ml.schedules import cosine_with_warmup

Tally = defaultdict[str, float]  # summed step figures: loss, correct, pairs, tokens...
MetricsCallback = Callable[[int, dict[str, Any]], None]
FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch 2.13 has a fused AdamW kernel


def split_eval(
    examples: Sequence[RankedExample], fraction: float, seed: int
) -> tuple[list[RankedExample], list[RankedExample]]:
    """A seeded random (train, eval) split by prompt: every ranking of one prompt (same
    content) lands on the same side, so eval measures prompts the model never trained on.

    ``fraction`` is the share of distinct prompts held out (at least one when > 0).
    """
    groups: dict[str, list[RankedExample]] = {}
    for example in examples:
        groups.setdefault(_prompt_key(example.prompt), []).append(example)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    n_eval = round(len(keys) * fraction)
    if fraction > 0 and n_eval == 0:
        n_eval = 1
    held_out = set(keys[:n_eval])
    train = [e for key in keys[n_eval:] for e in groups[key]]
    eval_ = [e for key in keys if key in held_out for e in groups[key]]
    return train, eval_


def _prompt_key(prompt: Any) -> str:
    """A prompt's content as text: a string itself, a chat its canonical JSON."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def plan_steps(n_rankings: int, config: RMConfig) -> int:
    """Optimizer steps of a run on ``n_rankings`` rankings with pairs: ``epochs`` passes of
    ``batch_size`` prompts (a fraction cuts the last pass short), at least one."""
    per_epoch = math.ceil(n_rankings / config.batch_size)
    return max(1, round(config.epochs * per_epoch))


def _optimizer(model: nn.Module, config: RMConfig) -> torch.optim.AdamW:
    """AdamW over the trainable tensors (weight decay on matrices only), as ONE fused kernel
    per group on CPU and CUDA: the same update as the reference single-tensor loop (which
    torch picks by default on CPU) in a fraction of its passes over memory (a 15M-parameter
    step: 0.23 s -> 0.02 s at 1 thread; ``tests/ml/test_reward_optimizer.py``)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = all(p.device.type in FUSED_ADAMW_DEVICES for p in trainable)
    return torch.optim.AdamW(groups, lr=config.lr, fused=fused or None)


def _prepare(model: RewardModel, config: RMConfig) -> None:
    memory = MemoryConfig(
        train_top_layers=config.train_top_layers,
        gradient_checkpointing=config.gradient_checkpointing,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_modules_to_save=["score"] if config.lora_r else None,
    )
    if memory.lora_r or memory.train_top_layers is not None or memory.gradient_checkpointing:
        model.seq = prepare_for_training(model._base(), memory)


REDUCED = ("loss", "correct", "pairs", "tokens", "padded_tokens")  # summed over the ranks


def _step(
    model: RewardModel,
    batch: list[EncodedRanking],
    pad_id: int,
    config: RMConfig,
    precision: Precision,
    scaler: torch.amp.GradScaler,
    dist: Distributed = SINGLE,
    runner: nn.Module | None = None,
) -> Tally:
    """Forward/backward one optimizer step's prompts; returns its tallies (loss, correct,
    pairs, tokens = the sequences' tokens, padded_tokens = positions forwarded including
    padding, each prompt's shared prefix once: ``reward.batches.SharedPrefix``).

    Under several processes this rank forwards its slice of ``batch`` through ``runner``
    (DDP) and scales the loss by the world size over the GLOBAL count of prompts with
    pairs, so DDP's average is the one-process gradient; the tallies are global. A rank
    left without prompts (a short last step) backpropagates a zero-weighted one, so
    every rank syncs once."""
    runner = runner if runner is not None else model
    weight = sum(1 for r in batch if r.pair_count)  # over the global batch
    tally: Tally = defaultdict(float, steps=1, prompts=len(batch))
    local = dist.shard(batch)
    parts = micro_batches(local, config.max_sequences_per_forward) if local else [batch[:1]]
    for index, part in enumerate(parts):
        rb = collate_rankings(part, pad_id, model.device)
        with dist.no_sync(runner, skip=index < len(parts) - 1):
            with precision.autocast():
                # (B, K) scores; the loss in fp32
                scores = score_rankings(cast(RewardModel, runner), rb).float()
            margin = config.margin * rb.distance if config.margin else None
            loss = kwise_ranking_loss(scores, rb.prefer, margin)
            share = sum(1 for r in part if r.pair_count) / weight if local else 0.0
            scaler.scale(loss * (share * dist.world_size)).backward()
        if not local:
            continue
        tally["loss"] += loss.item() * share
        tally["correct"] += int(correct_pairs(scores.detach(), rb.prefer).sum())
        tally["pairs"] += rb.pairs
        tally["tokens"] += rb.tokens
        tally["padded_tokens"] += rb.positions
    if dist.enabled:
        tally.update(zip(REDUCED, dist.sum([tally[key] for key in REDUCED]), strict=True))
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
    dist: Distributed = SINGLE,
) -> dict[str, Any]:
    """Train ``model`` in place on rankings; returns the final metrics.

    Each step takes ``config.batch_size`` prompts, forwards their K responses once as one
    flat batch and applies the K-wise loss to the (B, K) scores (PRODUCT.md 1.3). Without
    ``eval``, ``config.eval_fraction`` of the rankings is held out. ``should_stop`` is
    checked before every step; a stop returns ``status="cancelled"``. The weights train in
    fp32; ``precision`` sets the autocast dtype of forward and backward. Under several
    processes (``dist``) ``config.batch_size`` is the global batch, each rank trains on its
    slice of every step and the metrics are global (``training.ml.distributed``).
    """
    config.validate()
    dist.check_global_batch(config.batch_size)
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
    embedding_grad = install_embedding_grad_buffer(model._base())
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: cosine_with_warmup(
            s,
            warmup=config.warmup_steps,
            decay_steps=len(plan) - config.warmup_steps - 1,  # the last step at the floor
            floor=config.min_lr_ratio,
        ),
    )
    try:
        runner = dist.prepare_model(model)  # DDP under several processes, else ``model``
        runner.train()
        totals: Tally = defaultdict(float)
        for step, batch in enumerate(plan, start=1):
            if should_stop is not None and dist.any(should_stop()):
                break
            lr = schedule.get_last_lr()[0]
            tally = _optimizer_step(
                model,
                batch,
                tokenizer.pad_token_id,
                config,
                optimizer,
                precision,
                scaler,
                dist,
                runner,
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
    finally:
        if embedding_grad is not None:  # the caller's model as it was, even on error
            embedding_grad.remove()
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
    dist: Distributed = SINGLE,
    runner: nn.Module | None = None,
) -> Tally:
    optimizer.zero_grad(set_to_none=True)
    tally = _step(model, batch, pad_id, config, precision, scaler, dist, runner)
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
    for _ in range(math.ceil(config.epochs)):
        if config.length_bucketing:
            plan += length_bucketed_batches(rankings, config.batch_size, rng)
        else:
            order = list(rankings)
            rng.shuffle(order)
            plan += [
                order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)
            ]
    return plan[: plan_steps(len(rankings), config)]


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
