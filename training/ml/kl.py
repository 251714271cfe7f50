"""The KL coefficient beta of the PPO reward, and the KL estimators PPO uses.

The per-token penalty is k1 = log pi(y_t) - log pi_ref(y_t) (InstructGPT eq. 2): unbiased,
but a single sample can be negative. The KL we *report* (and feed to the adaptive
controller) uses Schulman's k3 = (r - 1) - log r with r = pi_ref / pi, which is also
unbiased for KL(pi || pi_ref) on samples from pi and is never negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FixedKLController:
    """A constant beta: `update` does nothing."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


class AdaptiveKLController:
    """Proportional controller of Ziegler et al. 2019 (section 2.2, "dynamically adapt beta").

        e_t    = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta  <- beta * (1 + K_beta * e_t),   K_beta = n_steps / horizon

    `n_steps` is the number of episodes (rollouts) since the last update, so the horizon
    is counted in episodes as in the paper (horizon 10,000). The gain K_beta is capped at
    `MAX_GAIN` (4), so one update multiplies beta by a factor in [0.2, 1.8] and beta stays
    positive even when a horizon shorter than a quarter of the episodes per update is set
    (uncapped, 1 - 0.2 * K_beta is negative for K_beta > 5).
    """

    MAX_GAIN = 4.0

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0:
            raise ValueError(f"kl target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"kl horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        gain = min(n_steps / self.horizon, self.MAX_GAIN)
        self.value *= 1.0 + error * gain
        return self.value


KLController = FixedKLController | AdaptiveKLController


def make_kl_controller(init_kl_coef: float, target: float | None, horizon: int) -> KLController:
    """An adaptive controller when a target is given, else a fixed beta."""
    if target is None:
        return FixedKLController(float(init_kl_coef))
    return AdaptiveKLController(init_kl_coef, target, horizon)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k1 = log pi - log pi_ref, (B, T): the term beta multiplies in the reward."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 = (r - 1) - log r, r = pi_ref / pi, (B, T); >= 0 elementwise.

    Computed as expm1(d) - d with d = log r, which is exact near d = 0 (where r - 1 - log r
    would cancel catastrophically); the clamp only removes rounding below zero.
    """
    log_ratio = ref_logprobs - logprobs
    log_ratio = log_ratio.to(torch.promote_types(log_ratio.dtype, torch.float32))  # no bf16 math
    return (torch.expm1(log_ratio) - log_ratio).clamp(min=0.0)
