"""Listwise DPO's likelihood of rankings with ties, against hand-computed numbers and two
independent references: TRL's sigmoid DPO loss (from its formula) and the exponential-race
identity of Plackett-Luce."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from training.ml.listwise import (
    dpo_scores,
    listwise_loss,
    log_prob_group_first,
    ranking_log_likelihood,
)


def trl_sigmoid_dpo_loss(pc, pr, rc, rr, beta):
    """TRL DPOTrainer's `loss_type="sigmoid"` (label_smoothing 0), from its formula:
    logits = (pi_c - pi_r) - (ref_c - ref_r); loss = -logsigmoid(beta * logits)."""
    logits = (pc - pr) - (rc - rr)
    return (-F.logsigmoid(beta * logits)).mean()


def test_k2_without_ties_is_trls_sigmoid_dpo_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    policy = torch.randn(16, 2, generator=gen, dtype=torch.float64) * 5 - 40  # (B, K) log-probs
    ref = torch.randn(16, 2, generator=gen, dtype=torch.float64) * 5 - 40
    for beta in (0.1, 0.5):
        ours = listwise_loss(dpo_scores(policy, ref, beta), [[[0], [1]]] * 16)
        theirs = trl_sigmoid_dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta)
        assert abs(float(ours) - float(theirs)) < 1e-5


def test_k3_with_a_tie_in_last_place_by_hand() -> None:
    a, b, c = 1.0, 0.5, -2.0
    expected = -math.log(math.exp(a) / (math.exp(a) + math.exp(b) + math.exp(c)))
    got = listwise_loss(torch.tensor([[a, b, c]], dtype=torch.float64), [[[0], [1, 2]]])
    assert float(got) == pytest.approx(expected, abs=1e-12)


def test_k3_with_a_tie_in_first_place_by_hand() -> None:
    a, b, c = 1.0, 0.5, -2.0
    ea, eb, ec = math.exp(a), math.exp(b), math.exp(c)
    total = ea + eb + ec
    both_first = ea / total * eb / (eb + ec) + eb / total * ea / (ea + ec)  # either order
    expected = -math.log(both_first) / 2  # two informative draws
    got = listwise_loss(torch.tensor([[a, b, c]], dtype=torch.float64), [[[0, 1], [2]]])
    assert float(got) == pytest.approx(expected, abs=1e-12)
    # a tie ranked first at well separated scores is near certain (loss -> 0)
    sure = listwise_loss(torch.tensor([[9.0, 9.0, -9.0]], dtype=torch.float64), [[[0, 1], [2]]])
    assert float(sure) < 1e-6


def test_without_ties_it_is_plackett_luce() -> None:
    s = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=torch.float64)
    order = [2, 3, 0, 1]
    expected = sum(float(s[i] - torch.logsumexp(s[order[n:]], 0)) for n, i in enumerate(order[:-1]))
    got = ranking_log_likelihood(s, [[i] for i in order])
    assert float(got) == pytest.approx(expected, abs=1e-12)


def exponential_race(group: list[float], rest: list[float]) -> float:
    """P(all of `group` before all of `rest`) for PL = exponential clocks of rates e^s, by
    inclusion-exclusion: sum over S in group of (-1)^|S| L_rest / (L_rest + L_S)."""
    lam_rest = sum(math.exp(x) for x in rest)
    total = 0.0
    for size in range(len(group) + 1):
        for subset in itertools.combinations(group, size):
            total += (-1) ** size * lam_rest / (lam_rest + sum(math.exp(x) for x in subset))
    return total


@pytest.mark.parametrize("sizes", [(2, 1), (3, 2), (4, 3), (1, 5)])
def test_group_first_matches_the_exponential_race(sizes: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(sum(sizes))
    group = torch.randn(sizes[0], generator=gen, dtype=torch.float64)
    rest = torch.randn(sizes[1], generator=gen, dtype=torch.float64)
    got = math.exp(float(log_prob_group_first(group, rest)))
    assert got == pytest.approx(exponential_race(group.tolist(), rest.tolist()), rel=1e-9)


def test_tied_members_are_exchangeable_and_probabilities_sum_to_one() -> None:
    s = torch.tensor([0.4, -0.3, 1.1, 0.0], dtype=torch.float64)
    one = ranking_log_likelihood(s, [[0, 2], [1, 3]])
    assert float(one) == pytest.approx(float(ranking_log_likelihood(s, [[2, 0], [3, 1]])))
    # over every way to split 4 responses into (first pair, last pair), P sums to 1
    splits = [list(p) for p in itertools.combinations(range(4), 2)]
    total = sum(
        math.exp(float(ranking_log_likelihood(s, [p, [i for i in range(4) if i not in p]])))
        for p in splits
    )
    assert total == pytest.approx(1.0, abs=1e-12)


def test_single_group_rankings_carry_no_loss_and_keep_the_graph() -> None:
    scores = torch.zeros(2, 3, requires_grad=True)
    loss = listwise_loss(scores, [[[0, 1, 2]], [[0, 1, 2]]])
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert scores.grad is not None
