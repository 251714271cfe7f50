"""Generalised advantage estimation and masked statistics for PPO on token sequences.

Shapes: B = rollouts in the batch, T = response tokens (right-padded). A mask is 1.0 on
real response tokens and 0.0 on padding. Pure functions; no state, no device choices.
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` over the positions where `mask` is 1 (over `dim`, or all of them)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `values` over the masked positions (Bessel-corrected when `unbiased`)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.to(values.dtype).sum()
        if count < 2:
            raise ValueError("masked_var needs at least two unmasked values for unbiased variance")
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Scale masked values to unit variance, and to zero mean when `shift_mean`.

    Padding positions come out as 0. With fewer than two real values the variance is
    undefined, so the values are only centred (or returned unchanged).
    """
    mask_f = mask.to(values.dtype)
    mean = masked_mean(values, mask_f)
    if mask_f.sum() < 2:
        centred = values - mean if shift_mean else values
        return centred * mask_f
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask_f) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask_f


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) advantages and value targets (Schulman et al. 2016, eq. 16).

    rewards, values, mask: (B, T). Masked positions are skipped: the TD error of the last
    real token bootstraps from 0 (the episode ends there), and a masked position never
    carries value or advantage. The scan runs backwards over T and is vectorised over B:

        delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
        A_t     = delta_t + gamma * lam * A_{t+1}

    Returns (advantages, returns), both (B, T), zero on padding; returns = A + V are the
    critic's regression targets.
    """
    if not (rewards.shape == values.shape == mask.shape) or rewards.dim() != 2:
        raise ValueError(
            f"rewards, values and mask must all be (B, T); got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(mask.shape)}"
        )
    valid = mask.bool()
    batch, length = rewards.shape
    advantages = torch.zeros_like(rewards)
    last_gae = rewards.new_zeros(batch)  # (B,) A_{t+1} of the next real token
    next_value = rewards.new_zeros(batch)  # (B,) V(s_{t+1}) of the next real token
    for t in reversed(range(length)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        gae = delta + gamma * lam * last_gae
        last_gae = torch.where(valid[:, t], gae, last_gae)
        next_value = torch.where(valid[:, t], values[:, t], next_value)
        advantages[:, t] = torch.where(valid[:, t], gae, torch.zeros_like(gae))
    mask_f = mask.to(rewards.dtype)
    returns = (advantages + values) * mask_f
    return advantages, returns
