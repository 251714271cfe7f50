"""The K-wise reward-model loss of InstructGPT (Ouyang et al. 2022, eq. 1) and its accuracy.

A batch holds B prompts with up to K responses each; a ranking is encoded as a
preference matrix ``prefer[b, w, l] = True`` when response ``w`` is ranked above ``l``.
Tied responses and padding (prompts with fewer than K responses) simply have no pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F


def preference_matrix(
    tie_groups: Sequence[Sequence[Sequence[int]]], k: int, *, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Encode B rankings (tie groups best first) for up to ``k`` responses each.

    Returns ``prefer`` (B, K, K) bool, True where the row response beats the column one,
    and ``distance`` (B, K, K) float, the tie-group distance of each pair (0 elsewhere).
    """
    distance = torch.zeros(len(tie_groups), k, k)
    for b, groups in enumerate(tie_groups):
        rank = torch.empty(k).fill_(float("nan"))  # (K,) group index; NaN marks padding
        for group_index, group in enumerate(groups):
            rank[list(group)] = float(group_index)
        gap = rank[None, :] - rank[:, None]  # (K, K) later group minus earlier: > 0 if row wins
        distance[b] = torch.nan_to_num(gap, nan=0.0).clamp(min=0.0)
    distance = distance.to(device)
    return distance > 0, distance


def kwise_ranking_loss(scores: Tensor, prefer: Tensor, margin: Tensor | None = None) -> Tensor:
    """InstructGPT's loss: ``-1/P E[log sigmoid(r_w - r_l - m)]`` per prompt, mean over prompts.

    scores: (B, K) rewards r(x, y) of each response, each computed once.
    prefer: (B, K, K) bool, ``prefer[b, w, l]`` when y_w is ranked above y_l.
    margin: optional (B, K, K) margins m (Touvron et al. 2023, Llama 2 eq. 2); 0 if None.

    P is the number of pairs of the prompt, C(K, 2) without ties, so every prompt weighs the
    same however many pairs it has ("all pairs of one prompt are one batch element").
    Prompts without pairs (all tied) are left out of the mean.
    """
    diff = scores[:, :, None] - scores[:, None, :]  # (B, K, K) r_w - r_l
    if margin is not None:
        diff = diff - margin
    pair_losses = -F.logsigmoid(diff) * prefer  # (B, K, K), zero off the pairs
    pairs = prefer.sum(dim=(1, 2))  # (B,)
    has_pairs = pairs > 0
    if not bool(has_pairs.any()):
        return scores.sum() * 0.0  # keeps the graph; nothing to learn from this batch
    per_prompt = pair_losses.sum(dim=(1, 2))[has_pairs] / pairs[has_pairs]  # (B',)
    return per_prompt.mean()


def correct_pairs(scores: Tensor, prefer: Tensor) -> Tensor:
    """(B,) number of pairs per prompt whose winner scores strictly higher than its loser."""
    diff = scores[:, :, None] - scores[:, None, :]  # (B, K, K)
    return ((diff > 0) & prefer).sum(dim=(1, 2))


def pairwise_accuracy(scores: Tensor, prefer: Tensor) -> Tensor:
    """Fraction of all pairs in the batch ranked correctly (a score tie counts as wrong)."""
    pairs = prefer.sum()
    if int(pairs) == 0:
        return torch.tensor(float("nan"))
    return correct_pairs(scores, prefer).sum() / pairs
