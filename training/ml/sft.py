"""Supervised fine-tuning on demonstrations (InstructGPT section 3.5, "SFT").

"We fine-tune GPT-3 on our labeler demonstrations using supervised learning ... cosine
learning rate decay". The loss is the token-mean negative log-likelihood of the response
tokens only: prompt tokens and padding carry the label -100.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from training.ml.chat import encode_prompt
from training.ml.configs import SFTConfig
from training.ml.data import Demonstration
from training.ml.distributed import SINGLE, Distributed
from training.ml.memory import disable_gradient_checkpointing, prepare_for_training
from training.ml.precision import FP32, Precision, master_weights
from training.ml.schedules import cosine_with_warmup

IGNORE_INDEX = -100

__all__ = ["Demonstration", "SFTConfig", "build_sft_example", "train_sft"]

# --------------------------------------------------------------------------- data


def build_sft_example(
    tokenizer: PreTrainedTokenizerBase, demo: Demonstration, max_length: int
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)``: chat-templated prompt + response + EOS; prompt labels -100.

    When too long, the response keeps at least half of ``max_length`` and the prompt
    keeps its last tokens (its assistant opening).
    """
    prompt = encode_prompt(tokenizer, demo.prompt, max_length=0)
    response = tokenizer(demo.response, add_special_tokens=False)["input_ids"]
    response = [*response, tokenizer.eos_token_id]
    response = response[: max_length - min(len(prompt), max_length // 2)]
    prompt = prompt[len(prompt) - (max_length - len(response)) :] if prompt else prompt
    return prompt + response, [IGNORE_INDEX] * len(prompt) + response


def collate_right_padded(
    examples: Sequence[tuple[list[int], list[int]]], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``labels``: each ``(B, T)``, padded on the right."""
    width = max(len(ids) for ids, _ in examples)
    batch = {
        "input_ids": torch.full((len(examples), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(examples), width), dtype=torch.long),
        "labels": torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long),
    }
    for row, (ids, labels) in enumerate(examples):
        batch["input_ids"][row, : len(ids)] = torch.tensor(ids)
        batch["attention_mask"][row, : len(ids)] = 1
        batch["labels"][row, : len(labels)] = torch.tensor(labels)
    return {name: tensor.to(device) for name, tensor in batch.items()}


def response_nll(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed NLL of the labelled tokens and their count (next-token prediction)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]  # (B, T-1): token t+1 is predicted at position t
    loss = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),  # (B*(T-1), V)
        targets.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((targets != IGNORE_INDEX).sum())


def _split(demos: list[Demonstration], config: SFTConfig) -> tuple[list, list]:
    shuffled = list(demos)
    random.Random(config.seed).shuffle(shuffled)
    if config.eval_fraction <= 0 or len(shuffled) < 2:
        return shuffled, []
    n_eval = min(max(1, round(len(shuffled) * config.eval_fraction)), len(shuffled) - 1)
    return shuffled[n_eval:], shuffled[:n_eval]


def _micro_batches(
    examples: list[tuple[list[int], list[int]]], batch_size: int, seed: int
) -> Iterator[list[tuple[list[int], list[int]]]]:
    """Shuffled micro-batches, epoch after epoch, forever."""
    epoch = 0
    while True:
        order = list(range(len(examples)))
        random.Random(seed + epoch).shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [examples[i] for i in order[start : start + batch_size]]
        epoch += 1


# --------------------------------------------------------------------------- training


@torch.no_grad()
def evaluate_sft_loss(
    model: nn.Module,
    examples: list[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int = 8,
) -> float:
    """Token-mean response NLL over ``examples`` (NaN when empty)."""
    if not examples:
        return float("nan")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate_right_padded(examples[start : start + batch_size], pad_id, device)
        loss, n = response_nll(model, batch)
        total, count = total + float(loss), count + n
    model.train(was_training)
    return total / max(count, 1)


def _target_count(labels: list[int]) -> int:
    """Tokens of one example that the loss predicts (labels after the first, not -100)."""
    return sum(1 for label in labels[1:] if label != IGNORE_INDEX)


def _optimizer_step(
    model: nn.Module,
    micro: list[list[tuple[list[int], list[int]]]],
    pad_id: int,
    params: list[nn.Parameter],
    config: SFTConfig,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    scaler: torch.amp.GradScaler,
    dist: Distributed = SINGLE,
) -> tuple[float, float, int]:
    """One AdamW step's gradients: token-mean loss over all micro-batches; (loss, norm, tokens).

    The mean is over the target tokens of the GLOBAL step, which every rank counts from
    the plan. Under several processes each rank forwards its slice of every micro-batch
    through ``model`` (DDP) with its loss scaled by the world size, so DDP's average is the
    one-process gradient; a rank left without examples (a short last micro-batch)
    backpropagates a zero-weighted one, so every rank syncs once a step. Leaves the
    gradients unscaled (fp16) so they can be clipped; the caller steps."""
    device = params[0].device
    n_targets = sum(_target_count(labels) for examples in micro for _, labels in examples)
    total = 0.0
    for index, examples in enumerate(micro):
        local = dist.shard(examples)
        batch = collate_right_padded(local or examples[:1], pad_id, device)
        with dist.no_sync(model, skip=index < len(micro) - 1):
            with precision.autocast():
                loss, _ = response_nll(model, batch)
            scale = dist.world_size if local else 0
            scaler.scale(loss * scale / max(n_targets, 1)).backward()
        if local:
            total += float(loss.detach())
    scaler.unscale_(optimizer)
    norm = (
        float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
        if config.max_grad_norm > 0
        else float("nan")
    )
    tokens = sum(len(ids) for examples in micro for ids, _ in examples)
    return dist.sum([total])[0] / max(n_targets, 1), norm, tokens


@dataclass
class _Plan:
    """Tokenized data and step counts of one run."""

    train: list[tuple[list[int], list[int]]]
    held_out: list[tuple[list[int], list[int]]]
    pad_id: int
    steps_per_epoch: int
    total_steps: int


def _plan(
    tokenizer: PreTrainedTokenizerBase,
    demos: list[Demonstration],
    eval_demos: list[Demonstration] | None,
    config: SFTConfig,
) -> _Plan:
    if not demos:
        raise ValueError("SFT needs at least one demonstration")
    train, held_out = (demos, eval_demos) if eval_demos is not None else _split(demos, config)
    pad_id = tokenizer.pad_token_id
    steps_per_epoch = math.ceil(len(train) / (config.batch_size * config.grad_accum_steps))
    return _Plan(
        train=[build_sft_example(tokenizer, d, config.max_length) for d in train],
        held_out=[build_sft_example(tokenizer, d, config.max_length) for d in held_out],
        pad_id=pad_id if pad_id is not None else tokenizer.eos_token_id,
        steps_per_epoch=steps_per_epoch,
        total_steps=max(1, math.ceil(config.epochs * steps_per_epoch)),
    )


def _optimizer(
    params: list[nn.Parameter], config: SFTConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with a linear warm-up then cosine decay (InstructGPT: cosine lr decay)."""
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = round(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: cosine_with_warmup(
            s,
            warmup=warmup,
            decay_steps=total_steps - warmup,  # the last step keeps lr > floor
            floor=config.min_lr_ratio,
        ),
    )
    return optimizer, scheduler


def train_sft(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: list[Demonstration],
    config: SFTConfig,
    *,
    eval_demos: list[Demonstration] | None = None,
    on_metrics: Callable[[int, dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    precision: Precision = FP32,
    dist: Distributed = SINGLE,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``demos``; returns the final metrics.

    ``on_metrics(step, values)`` gets ``sft/loss``, ``sft/lr``, ``sft/grad_norm``,
    ``sft/epoch``, ``charts/tokens_per_s``, ``step`` and ``total_steps`` every step, plus
    ``sft/eval_loss`` on evaluation steps. ``should_stop()`` is checked before every
    step; the result's ``status`` is then ``"cancelled"`` (else ``"completed"``).
    Held-out data: ``eval_demos`` if given, else ``config.eval_fraction`` of ``demos``.
    With LoRA the adapters are merged into ``model`` at the end. The weights train in fp32;
    ``precision`` sets the autocast dtype of forward and backward. Under several processes
    (``dist``) ``config.batch_size`` is the global micro-batch, each rank trains on its
    slice and the metrics are global (``training.ml.distributed``).
    """
    config.validate()
    dist.check_global_batch(config.batch_size)
    plan = _plan(tokenizer, demos, eval_demos, config)
    master_weights(model)
    trained = prepare_for_training(model, config.memory())  # type: ignore[arg-type]
    params = [p for p in trained.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters (check train_top_layers / LoRA options)")
    result: dict[str, Any] = {
        "sft/train_examples": len(plan.train),
        "sft/eval_examples": len(plan.held_out),
        "sft/trainable_params": sum(p.numel() for p in params),
        "sft/eval_loss_initial": evaluate_sft_loss(
            trained, plan.held_out, plan.pad_id, config.batch_size
        ),
    }
    result.update(
        _train_loop(trained, params, plan, config, on_metrics, should_stop, precision, dist)
    )
    result["sft/eval_loss"] = evaluate_sft_loss(
        trained, plan.held_out, plan.pad_id, config.batch_size
    )
    _finish(model, trained, config)
    return result


def _train_loop(
    trained: nn.Module,
    params: list[nn.Parameter],
    plan: _Plan,
    config: SFTConfig,
    on_metrics: Callable[[int, dict[str, Any]], None] | None,
    should_stop: Callable[[], bool] | None,
    precision: Precision,
    dist: Distributed = SINGLE,
) -> dict[str, Any]:
    optimizer, scheduler = _optimizer(params, config, plan.total_steps)
    runner = dist.prepare_model(trained)  # DDP under several processes, else ``trained``
    scaler = precision.grad_scaler()
    stream = _micro_batches(plan.train, config.batch_size, config.seed)
    losses: list[float] = []
    tokens_seen, started, status = 0, time.perf_counter(), "completed"
    runner.train()
    for step in range(1, plan.total_steps + 1):
        if should_stop is not None and dist.any(should_stop()):
            status = "cancelled"
            break
        micro = [next(stream) for _ in range(config.grad_accum_steps)]
        loss, norm, tokens = _optimizer_step(
            runner, micro, plan.pad_id, params, config, optimizer, precision, scaler, dist
        )
        lr = scheduler.get_last_lr()[0]
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss)
        tokens_seen += tokens
        values = {
            "sft/loss": loss,
            "sft/lr": lr,
            "sft/grad_norm": norm,
            "sft/epoch": step / plan.steps_per_epoch,
            "charts/tokens_per_s": tokens_seen / (time.perf_counter() - started),
            "step": step,
            "total_steps": plan.total_steps,
        }
        if plan.held_out and _eval_due(step, plan.total_steps, config.eval_every):
            values["sft/eval_loss"] = evaluate_sft_loss(
                trained, plan.held_out, plan.pad_id, config.batch_size
            )
        if on_metrics is not None:
            on_metrics(step, values)
    seconds = time.perf_counter() - started
    window = losses[-10:]  # the reported train loss: mean of the last (up to) 10 steps
    return {
        "status": status,
        "sft/steps": len(losses),
        "total_steps": plan.total_steps,
        "sft/loss": sum(window) / len(window) if window else float("nan"),
        "sft/first_loss": losses[0] if losses else float("nan"),
        "sft/tokens": tokens_seen,
        "sft/seconds": seconds,
        "charts/tokens_per_s": tokens_seen / seconds if seconds > 0 else 0.0,
    }


def _eval_due(step: int, total_steps: int, every: int) -> bool:
    return step == total_steps or (every > 0 and step % every == 0)


def _finish(model: nn.Module, trained: nn.Module, config: SFTConfig) -> None:
    """Merge LoRA into ``model``, undo checkpointing and freezing; leave it in eval mode."""
    merge = getattr(trained, "merge_and_unload", None)
    if trained is not model and callable(merge):
        merge()  # replaces the LoRA layers inside ``model`` in place
    if config.gradient_checkpointing:
        disable_gradient_checkpointing(model)
    for param in model.parameters():
        param.requires_grad_(True)
    model.eval()
