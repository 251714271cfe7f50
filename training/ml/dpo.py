"""Listwise DPO: the policy learns labelers' K-wise rankings with ties directly, no RM.

DPO (Rafailov et al. 2023) reads s = beta * (log pi(y|x) - log pi_ref(y|x)) as an implicit
reward; ``training.ml.listwise`` scores a ranking's tie groups under Plackett-Luce with
those rewards (for K = 2 without ties: DPO's -log sigmoid(s_w - s_l)). Each step takes B
prompts and forwards each of their K responses ONCE through the policy, as one flat
batch with the prompts left-padded and the responses right-padded, so only the response
positions reach the LM head. The reference's sequence log-probs are computed once before
training, without gradients (the reference may be stored in bf16; None means the policy
as it is before the first step, so no second copy is held).

Shapes: N sequences (the K_b responses of the step's prompts), P prompt tokens, R
response tokens, V vocabulary.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from training.ml.configs import DPOConfig
from training.ml.distributed import SINGLE, Distributed
from training.ml.dpo_batches import (
    EncodedList,
    attach_reference_logps,
    encode_rankings,
    evaluate_implicit_reward,
    micro_batches,
    pack_rankings,
    pair_tally,
    sequence_logps,
)
from training.ml.listwise import dpo_scores, listwise_loss
from training.ml.memory import disable_gradient_checkpointing, prepare_for_training
from training.ml.precision import FP32, Precision, master_weights
from training.ml.preferences import RankedExample
from training.ml.reward.train import split_eval
from training.ml.schedules import cosine_with_warmup

__all__ = ["DPOConfig", "DPOResult", "plan_steps", "train_dpo"]

MetricsCallback = Callable[[int, dict[str, Any]], None]
Tally = defaultdict[str, float]  # summed step figures: loss, pairs, correct, margin...
FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch has a fused AdamW kernel

# --------------------------------------------------------------------------- training


@dataclass
class DPOResult:
    """What a run did: ``status`` "completed" or "cancelled", the steps taken of
    ``total_steps``, and the final figures in ``metrics`` (see ``train_dpo``)."""

    status: str
    steps: int
    total_steps: int
    metrics: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """One flat dict (the CLI's JSON line, a run's stored metrics)."""
        return {"status": self.status, "steps": self.steps, "total_steps": self.total_steps,
                **self.metrics}  # fmt: skip


def plan_steps(n_rankings: int, config: DPOConfig) -> int:
    """Optimizer steps: ``epochs`` passes of ``batch_size`` prompts, at least one."""
    return max(1, round(config.epochs * math.ceil(n_rankings / config.batch_size)))


def plan_batches(rankings: list[EncodedList], config: DPOConfig) -> list[list[EncodedList]]:
    """The step plan: each epoch a seeded shuffle cut into batches of ``batch_size``
    prompts; a fractional ``epochs`` cuts the last pass short."""
    rng = random.Random(config.seed)
    plan: list[list[EncodedList]] = []
    for _ in range(math.ceil(config.epochs)):
        order = list(rankings)
        rng.shuffle(order)
        plan += [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    return plan[: plan_steps(len(rankings), config)]


def _optimizer(params: list[nn.Parameter], config: DPOConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only, one fused kernel per group on CPU/CUDA."""
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = all(p.device.type in FUSED_ADAMW_DEVICES for p in params)
    return torch.optim.AdamW(groups, lr=config.lr, fused=fused or None)


def _step(
    runner: nn.Module,
    batch: list[EncodedList],
    pad_id: int,
    config: DPOConfig,
    precision: Precision,
    scaler: torch.amp.GradScaler,
    dist: Distributed,
) -> Tally:
    """Forward/backward one step's prompts; returns its global tallies (loss, pairs,
    correct, margin, sequences, tokens).

    The loss is the mean over the GLOBAL batch's prompts: this rank's part of the sum,
    times the world size (DDP averages the ranks' gradients). A rank left without prompts
    (a short last step) backpropagates a zero-weighted one, so every rank syncs once."""
    device = next(runner.parameters()).device
    local = dist.shard(batch)
    parts = micro_batches(local, config.max_sequences_per_forward) if local else [batch[:1]]
    tally: Tally = defaultdict(float)
    for index, part in enumerate(parts):
        packed = pack_rankings(part, pad_id, device)
        with dist.no_sync(runner, skip=index < len(parts) - 1):
            with precision.autocast():
                logps = sequence_logps(runner, packed)  # (N,) fp32
            scores = packed.grid(dpo_scores(logps, packed.ref_logps, config.beta))  # (B', K)
            loss = listwise_loss(scores, packed.tie_groups)
            share = len(part) / len(batch) if local else 0.0
            scaler.scale(loss * (share * dist.world_size)).backward()
        if not local:
            continue
        tally["loss"] += float(loss.detach()) * share
        for key, value in pair_tally(scores.detach(), packed.tie_groups).items():
            tally[key] += value
        tally["sequences"] += len(packed.slots)
        tally["tokens"] += float(packed.attention_mask.sum())
    keys = ("loss", "pairs", "correct", "margin", "sequences", "tokens")
    if dist.enabled:
        tally.update(zip(keys, dist.sum([tally[key] for key in keys]), strict=True))
    return tally


def train_dpo(
    policy: nn.Module,
    reference: nn.Module | None,
    tokenizer: PreTrainedTokenizerBase,
    rankings: Sequence[RankedExample],
    config: DPOConfig,
    *,
    precision: Precision = FP32,
    progress: MetricsCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    dist: Distributed = SINGLE,
    eval_rankings: Sequence[RankedExample] | None = None,
) -> DPOResult:
    """Train ``policy`` in place on K-wise ``rankings`` with listwise DPO.

    ``reference``: the frozen model of the implicit reward (any dtype, e.g. bf16); None
    uses ``policy`` as it is before training. Its sequence log-probs are computed once.
    Held-out data: ``eval_rankings`` if given, else ``config.eval_fraction`` of the
    prompts. Rankings with a single tie group carry nothing and are left out.

    ``progress(step, values)`` gets ``dpo/loss``, ``dpo/accuracy`` (pairs the implicit
    reward orders right in the step's batch), ``dpo/reward_margin`` (mean s_w - s_l),
    ``dpo/lr``, ``dpo/grad_norm``, ``charts/pairs_per_s``, ``step`` and ``total_steps``
    every step, plus ``dpo/eval_accuracy`` every ``config.eval_every`` steps.
    ``should_stop()`` is checked before every step (then ``status`` is "cancelled").
    The result's ``metrics``: ``dpo/loss`` (mean of the last 10 steps), ``dpo/first_loss``,
    ``dpo/accuracy``, ``dpo/eval_accuracy_initial``, ``dpo/eval_accuracy``,
    ``dpo/eval_loss``, ``dpo/eval_margin``, counts (``dpo/train_prompts``,
    ``dpo/eval_prompts``, ``dpo/pairs``, ``dpo/sequences``, ``dpo/trainable_params``),
    ``seconds`` and ``charts/pairs_per_s``.

    The weights train in fp32 (``master_weights``); ``precision`` sets the autocast dtype
    of the forwards. With LoRA the adapters are merged into ``policy`` at the end, so it
    saves as plain weights. Under several processes (``dist``) ``config.batch_size`` is
    the global batch, each rank forwards its slice of every step's prompts and the
    metrics are global; every rank ends with the same weights.
    """
    config.validate()
    dist.check_global_batch(config.batch_size)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    if eval_rankings is None and config.eval_fraction > 0:
        train_examples, held_examples = split_eval(rankings, config.eval_fraction, config.seed)
    else:
        train_examples, held_examples = list(rankings), list(eval_rankings or [])
    train = encode_rankings(tokenizer, train_examples, config.max_length)
    held_out = encode_rankings(tokenizer, held_examples, config.max_length)
    if not train:
        raise ValueError("no training ranking orders anything (every one is a single tie group)")
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    master_weights(policy)
    attach_reference_logps(
        reference if reference is not None else policy,
        train + held_out,
        pad_id,
        precision=precision,
        dist=dist,
        max_sequences=config.max_sequences_per_forward,
    )
    trained = prepare_for_training(policy, config.memory())  # type: ignore[arg-type]
    params = [p for p in trained.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters (check train_top_layers / LoRA options)")

    def evaluate() -> dict[str, float]:
        return evaluate_implicit_reward(
            trained, held_out, pad_id, config.beta, precision=precision, dist=dist,
            max_sequences=config.max_sequences_per_forward,
        )  # fmt: skip

    initial = evaluate()
    plan = plan_batches(train, config)
    loop = _train_loop(trained, params, plan, pad_id, config, precision, dist, evaluate,
                       progress, should_stop, started)  # fmt: skip
    final = evaluate() if held_out else initial
    _finish(policy, trained, config)
    steps = int(loop.pop("dpo/steps"))
    metrics = {
        **loop,
        "dpo/eval_accuracy_initial": initial["accuracy"],
        "dpo/eval_accuracy": final["accuracy"],
        "dpo/eval_loss": final["loss"],
        "dpo/eval_margin": final["margin"],
        "dpo/eval_pairs": int(final["pairs"]),
        "dpo/train_prompts": len(train),
        "dpo/eval_prompts": len(held_out),
        "dpo/trainable_params": sum(p.numel() for p in params),
        "seconds": time.perf_counter() - started,
    }
    return DPOResult(
        status="completed" if steps == len(plan) else "cancelled",
        steps=steps,
        total_steps=len(plan),
        metrics=metrics,
    )


def _train_loop(
    trained: nn.Module,
    params: list[nn.Parameter],
    plan: list[list[EncodedList]],
    pad_id: int,
    config: DPOConfig,
    precision: Precision,
    dist: Distributed,
    evaluate: Callable[[], dict[str, float]],
    progress: MetricsCallback | None,
    should_stop: Callable[[], bool] | None,
    started: float,
) -> dict[str, Any]:
    optimizer = _optimizer(params, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: cosine_with_warmup(
            s,
            warmup=config.warmup_steps,
            decay_steps=len(plan) - config.warmup_steps - 1,  # the last step at the floor
            floor=config.min_lr_ratio,
        ),
    )
    scaler = precision.grad_scaler()
    runner = dist.prepare_model(trained)  # DDP under several processes, else ``trained``
    runner.train()
    totals: Tally = defaultdict(float)
    losses: list[float] = []
    accuracies: list[float] = []
    for step, batch in enumerate(plan, start=1):
        if should_stop is not None and dist.any(should_stop()):
            break
        lr = schedule.get_last_lr()[0]
        optimizer.zero_grad(set_to_none=True)
        tally = _step(runner, batch, pad_id, config, precision, scaler, dist)
        scaler.unscale_(optimizer)  # clip the true gradients (a no-op unless fp16)
        norm = (
            float(nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            if config.max_grad_norm
            else math.nan
        )
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        for key, value in tally.items():
            totals[key] += value
        accuracy = tally["correct"] / tally["pairs"] if tally["pairs"] else math.nan
        losses.append(tally["loss"])
        accuracies.append(accuracy)
        values: dict[str, Any] = {
            "dpo/loss": tally["loss"],
            "dpo/accuracy": accuracy,
            "dpo/reward_margin": tally["margin"] / tally["pairs"] if tally["pairs"] else math.nan,
            "dpo/lr": lr,
            "dpo/grad_norm": norm,
            "charts/pairs_per_s": totals["pairs"] / (time.perf_counter() - started),
            "step": step,
            "total_steps": len(plan),
        }
        if config.eval_every and step % config.eval_every == 0 and step < len(plan):
            values["dpo/eval_accuracy"] = evaluate()["accuracy"]
        if progress is not None:
            progress(step, values)
    seconds = time.perf_counter() - started
    window = losses[-10:]
    return {
        "dpo/steps": len(losses),
        "dpo/loss": sum(window) / len(window) if window else math.nan,
        "dpo/first_loss": losses[0] if losses else math.nan,
        "dpo/accuracy": _mean(accuracies[-10:]),
        "dpo/pairs": int(totals["pairs"]),
        "dpo/sequences": int(totals["sequences"]),
        "dpo/tokens": int(totals["tokens"]),
        "charts/pairs_per_s": totals["pairs"] / seconds if seconds > 0 else 0.0,
    }


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _finish(policy: nn.Module, trained: nn.Module, config: DPOConfig) -> None:
    """Merge LoRA into ``policy``, undo checkpointing and freezing; leave it in eval mode."""
    merge = getattr(trained, "merge_and_unload", None)
    if trained is not policy and callable(merge):
        merge()  # replaces the LoRA layers inside ``policy`` in place
    if config.gradient_checkpointing:
        disable_gradient_checkpointing(policy)
    for param in policy.parameters():
        param.requires_grad_(True)
    policy.eval()
