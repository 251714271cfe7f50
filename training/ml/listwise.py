"""The likelihood of a ranking with ties under Plackett-Luce, and the listwise DPO loss.

A labeler's ranking of K responses is a list of tie groups, best first: G_1 > G_2 > ... >
G_m. Plackett-Luce (PL) with scores s_i draws responses one at a time, each with probability
exp(s_i) over the sum of exp(s) of those not yet drawn. Tied members are exchangeable: the
ranking says which responses come before which, not in what order tied ones were drawn.
So the ranking's likelihood is the probability that the first |G_1| draws are G_1 in any
order, the next |G_2| draws are G_2 in any order, and so on:

    P(G_1 > ... > G_m) = prod_{j<m} P(first |G_j| draws from R_j are G_j),
    R_j = G_j u G_{j+1} u ... u G_m

(the last group is what remains: probability 1). Each factor sums PL over the |G_j|!
orders of the group; a dynamic programme over the subsets of G_j already drawn computes it
in 2^|G_j| steps, in log space (section "Listwise DPO" of docs/concepts.md derives it).
Without ties it is PL's likelihood; for K = 2 it is sigmoid(s_w - s_l), the Bradley-Terry
model of DPO. With DPO's implicit reward s_i = beta * (log pi(y_i|x) - log pi_ref(y_i|x))
the loss -log P is listwise DPO: each response is forwarded once, however many pairs the
ranking holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

TieGroups = Sequence[Sequence[int]]


def log_prob_group_first(group: Tensor, rest: Tensor) -> Tensor:
    """log P(the first len(group) PL draws are exactly the members of ``group``, in any
    order), from scores ``group`` (s,) and ``rest`` (r,) of the others still undrawn."""
    size = group.shape[0]
    rest_mass = torch.logsumexp(rest, dim=0) if rest.numel() else group.new_tensor(-torch.inf)
    # f[mask] = log P(the draws so far are exactly the members in `mask`)
    f: dict[int, Tensor] = {0: group.new_zeros(())}
    for mask in range(1 << size):
        if mask not in f:
            continue
        undrawn = [i for i in range(size) if not mask >> i & 1]
        if not undrawn:
            break
        members = group[undrawn]  # (u,)
        log_norm = torch.logaddexp(torch.logsumexp(members, dim=0), rest_mass)
        for position, i in enumerate(undrawn):
            step = f[mask] + members[position] - log_norm
            nxt = mask | 1 << i
            f[nxt] = step if nxt not in f else torch.logaddexp(f[nxt], step)
    return f[(1 << size) - 1]


def ranking_log_likelihood(scores: Tensor, tie_groups: TieGroups) -> Tensor:
    """log P(tie_groups) under PL with tied members exchangeable; ``scores`` (K,)."""
    total = scores.new_zeros(())
    remaining = [i for group in tie_groups for i in group]
    for group in tie_groups[:-1]:
        remaining = [i for i in remaining if i not in group]
        total = total + log_prob_group_first(scores[list(group)], scores[remaining])
    return total


def listwise_loss(scores: Tensor, rankings: Sequence[TieGroups]) -> Tensor:
    """Mean over prompts of -log P(ranking) / (number of draws that carry information).

    ``scores`` (B, K) are a prompt's K responses' scores (padding slots are never named in
    a ranking); rankings with a single tie group carry nothing and are skipped. The
    division by the informative draws (K minus the last group's size) keeps the scale of
    the per-pair losses: for K = 2 it is DPO's -log sigmoid(s_w - s_l) exactly.
    """
    losses = []
    for row, groups in zip(scores, rankings, strict=True):
        if len(groups) < 2:
            continue
        draws = sum(len(g) for g in groups[:-1])
        losses.append(-ranking_log_likelihood(row, groups) / draws)
    if not losses:
        return scores.sum() * 0.0  # keeps the graph: no ranking had two groups
    return torch.stack(losses).mean()


def dpo_scores(policy_logps: Tensor, ref_logps: Tensor, beta: float) -> Tensor:
    """DPO's implicit reward beta * (log pi(y|x) - log pi_ref(y|x)), elementwise."""
    return beta * (policy_logps - ref_logps)
