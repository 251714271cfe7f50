"""PPO over several processes: the statistics of a step taken over the GLOBAL batch.

Under ``accelerate launch`` every rank builds the same step (the same prompts, in the same
order, from the same seed), rolls out its contiguous slice of the episodes (each episode
sampled with its own seed, so the rollouts are those of one process) and keeps its slice
of every minibatch of the update. What one process computes over the whole batch is then
taken over the ranks: the whitening of advantages (and rewards), the token count that
normalises each minibatch's losses, the step's metrics. Gradients are summed over the
ranks before clipping (``Distributed.sum_gradients``), so every rank takes the optimizer
step of one process. With ``SINGLE`` every helper is the one-process computation.

Shapes: B episodes of this rank (``size``), G of the global batch, R response tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from training.ml.distributed import Distributed
from training.ml.gae import masked_whiten


@dataclass(frozen=True)
class EpisodeShard:
    """This rank's episodes of one step: ``size`` rows starting at global row ``offset``,
    and the response-token count of every one of the G episodes (all ranks')."""

    offset: int
    size: int
    token_counts: torch.Tensor  # (G,) float64, on the CPU

    @property
    def global_size(self) -> int:
        return int(self.token_counts.shape[0])

    def local_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows of global indices ``rows`` that this rank holds, as indices into its
        rollout (in the order of ``rows``; possibly none)."""
        mine = (rows >= self.offset) & (rows < self.offset + self.size)
        return rows[mine] - self.offset

    def tokens(self, rows: torch.Tensor) -> float:
        """Response tokens of the global episodes ``rows``, over all ranks."""
        return float(self.token_counts[rows.cpu()].sum())


def shard_episodes(dist: Distributed, global_batch: int) -> tuple[int, int]:
    """(offset, size) of this rank's contiguous slice of a step's ``global_batch``."""
    rows = dist.shard(range(global_batch))
    return (rows[0], len(rows)) if rows else (0, 0)


def episode_shard(
    dist: Distributed, response_mask: torch.Tensor, offset: int, global_batch: int
) -> EpisodeShard:
    """The shard of this rank's rollout (``response_mask`` (B, R)) with every rank's
    per-episode token counts (one all-reduce)."""
    size = int(response_mask.shape[0])
    counts = [0.0] * global_batch
    counts[offset : offset + size] = response_mask.sum(-1).tolist()
    return EpisodeShard(offset, size, torch.tensor(dist.sum(counts), dtype=torch.float64))


def whiten_over_ranks(
    dist: Distributed,
    values: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """``masked_whiten`` (B, R) with the mean and the Bessel-corrected variance of the
    masked values of ALL ranks (two all-reduces); ``masked_whiten`` itself when alone."""
    if not dist.enabled:
        return masked_whiten(values, mask, shift_mean=shift_mean, eps=eps)
    mask_f = mask.to(values.dtype)
    total, count = dist.sum([float((values * mask_f).sum()), float(mask_f.sum())])
    mean = total / max(count, 1.0)
    if count < 2:  # the variance is undefined: only centre, as masked_whiten does
        return (values - mean if shift_mean else values) * mask_f
    (squares,) = dist.sum([float((((values - mean) ** 2) * mask_f).sum())])
    variance = squares / (count - 1)
    whitened = (values - mean) * (variance + eps) ** -0.5
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask_f


def sum_over_ranks(
    dist: Distributed, series: Mapping[str, Sequence[float]]
) -> dict[str, list[float]]:
    """Each series summed element-wise over the ranks, in one all-reduce (every rank must
    pass the same keys and lengths)."""
    keys = sorted(series)
    flat = [value for key in keys for value in series[key]]
    summed = iter(dist.sum(flat))
    return {key: [next(summed) for _ in series[key]] for key in keys}
