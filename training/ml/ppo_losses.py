"""The pure pieces of the PPO objective: per-token rewards, the clipped losses, PPO-ptx.

Shapes: B episodes, R response tokens (right-padded, `mask` 1.0 on real tokens).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from training.ml.data import Demonstration, PromptInput
from training.ml.distributed import SINGLE, Distributed
from training.ml.gae import masked_mean
from training.ml.kl import kl_penalty
from training.ml.sft import IGNORE_INDEX, build_sft_example, collate_right_padded, response_nll

PtxItem = str | tuple[PromptInput, str] | Demonstration
PtxExample = tuple[list[int], list[int]]  # (input_ids, labels), labels -100 where no loss


def token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """(B, R) per-token reward: -beta * (log pi - log pi_SFT) on every response token, plus
    the sequence score at the final response token (InstructGPT eq. 2, Ziegler 2019)."""
    rewards = -kl_coef * kl_penalty(logprobs, ref_logprobs) * response_mask
    last = (response_mask.sum(-1).long() - 1).clamp(min=0)  # (B,) index of the final token
    has_tokens = response_mask.sum(-1) > 0
    rewards[torch.arange(rewards.shape[0]), last] += torch.where(has_tokens, scores, 0.0)
    return rewards


def policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    count: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate (Schulman et al. 2017, eq. 7) over masked tokens, all (B, R).

    The loss and stats are token means; with ``count`` they are token sums divided by
    ``count`` (a minibatch's tokens over all ranks: this rank's share of its mean)."""
    log_ratio = new_logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    loss = token_mean(torch.maximum(unclipped, clipped), mask, count)
    with torch.no_grad():
        stats = {
            "clipfrac": token_mean((clipped > unclipped).float(), mask, count).item(),
            "approx_kl": token_mean((ratio - 1) - log_ratio, mask, count).item(),  # k3, CleanRL
        }
    return loss, stats


def value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
    count: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss 0.5 * max((V - R)^2, (V_clip - R)^2) over masked tokens (token
    sums over ``count`` when given, as in ``policy_loss``)."""
    clipped = old_values + (new_values - old_values).clamp(-cliprange_value, cliprange_value)
    losses = torch.maximum((new_values - returns) ** 2, (clipped - returns) ** 2)
    loss = 0.5 * token_mean(losses, mask, count)
    with torch.no_grad():
        worse = ((clipped - returns) ** 2 > (new_values - returns) ** 2).float()
        frac = token_mean(worse, mask, count)
    return loss, {"vf_clipfrac": frac.item()}


def token_mean(values: torch.Tensor, mask: torch.Tensor, count: float | None) -> torch.Tensor:
    """``masked_mean(values, mask)``, or the masked sum over ``count`` tokens when given."""
    if count is None:
        return masked_mean(values, mask)
    return (values * mask.to(values.dtype)).sum() / max(count, 1.0)


def prompt_batch(n_items: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of the items of `step`: epochs over the set, each in its own shuffled order
    (seeded by seed and epoch), so a resumed run sees exactly the same batches."""
    orders: dict[int, list[int]] = {}
    indices = []
    for i in range(step * batch_size, (step + 1) * batch_size):
        epoch, position = divmod(i, n_items)
        if epoch not in orders:
            orders[epoch] = list(range(n_items))
            random.Random(seed * 1_000_003 + epoch).shuffle(orders[epoch])
        indices.append(orders[epoch][position])
    return indices


def ptx_examples(tokenizer: Any, items: Sequence[PtxItem], max_length: int) -> list[PtxExample]:
    """(input_ids, labels) of each PPO-ptx item, as SFT builds them. A str is pretraining
    text (every token is a label); a (prompt, response) pair or a Demonstration is chat-
    templated with the loss on the response and its EOS."""
    examples = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            ids = tokenizer(item, add_special_tokens=False)["input_ids"][:max_length]
            example = (list(ids), list(ids))
        elif isinstance(item, Demonstration):
            example = build_sft_example(tokenizer, item, max_length)
        elif isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], str):
            demo = Demonstration(prompt=item[0], response=item[1])
            example = build_sft_example(tokenizer, demo, max_length)
        else:
            raise ValueError(f"ptx item {i}: expected a text or a (prompt, response) pair")
        if len(example[0]) < 2:
            raise ValueError(f"ptx item {i}: fewer than 2 tokens, nothing to predict")
        examples.append(example)
    return examples


def ptx_loss(
    policy: nn.Module,
    examples: list[PtxExample],
    draw: int,
    batch_size: int,
    seed: int,
    pad_id: int,
    dist: Distributed = SINGLE,
) -> torch.Tensor | None:
    """PPO-ptx: mean NLL of the labelled tokens of the `draw`-th ptx batch (InstructGPT
    eq. 2's gamma * E[log pi(x)] term, as a loss). Under several processes this rank
    forwards its slice of the batch, its NLL sum over the batch's labelled tokens of all
    ranks (its share of the mean); None when its slice is empty."""
    picks = [examples[i] for i in prompt_batch(len(examples), batch_size, draw, seed)]
    count = sum(sum(label != IGNORE_INDEX for label in labels[1:]) for _, labels in picks)
    local = dist.shard(picks)
    if not local:
        return None
    device = next(policy.parameters()).device
    nll, _ = response_nll(policy, collate_right_padded(local, pad_id, device))
    return nll / max(count, 1)
