"""The K-wise loss against the plain mean of pairwise losses, on hand-computed numbers."""

import math

import pytest
import torch

from formats.preferences import pairs_from_tie_groups
from training.ml.losses import (
    correct_pairs,
    kwise_ranking_loss,
    pairwise_accuracy,
    preference_matrix,
)


def pair_loss(diff: float) -> float:
    """-log sigmoid(diff), written out: log(1 + e^-diff)."""
    return math.log(1.0 + math.exp(-diff))


def test_preference_matrix_marks_winners_rows_and_group_distance() -> None:
    prefer, distance = preference_matrix([[[3], [2], [0, 1]]], 4)
    expected = {(3, 2): 1, (3, 0): 2, (3, 1): 2, (2, 0): 1, (2, 1): 1}
    for w in range(4):
        for loser in range(4):
            assert bool(prefer[0, w, loser]) == ((w, loser) in expected)
            assert distance[0, w, loser].item() == expected.get((w, loser), 0)


def test_one_prompt_equals_the_mean_of_its_pairwise_losses() -> None:
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    prefer, _ = preference_matrix([[[0], [2], [1]]], 3)
    # Pairs 0>2 (diff 1), 0>1 (diff 2), 2>1 (diff 1).
    expected = (pair_loss(1.0) + pair_loss(2.0) + pair_loss(1.0)) / 3
    assert expected == pytest.approx(0.25115046202647276, abs=1e-15)
    assert kwise_ranking_loss(scores, prefer).item() == pytest.approx(expected, abs=1e-6)


def test_every_prompt_weighs_the_same_whatever_its_number_of_pairs() -> None:
    # Prompt A: K=3, no ties, 3 pairs. Prompt B: K=2 padded to 3, one pair (1 beats 0).
    scores = torch.tensor([[0.5, -0.5, 1.5], [0.0, 3.0, 0.0]])
    prefer, _ = preference_matrix([[[2], [0], [1]], [[1], [0]]], 3)
    loss_a = (pair_loss(1.0) + pair_loss(2.0) + pair_loss(1.0)) / 3
    loss_b = pair_loss(3.0)
    loss = kwise_ranking_loss(scores, prefer)
    assert loss.item() == pytest.approx((loss_a + loss_b) / 2, abs=1e-6)


def test_equal_pair_counts_give_the_plain_mean_over_all_pairs() -> None:
    scores = torch.tensor([[1.0, -1.0], [0.2, 0.7]])
    prefer, _ = preference_matrix([[[0], [1]], [[0], [1]]], 2)
    expected = (pair_loss(2.0) + pair_loss(-0.5)) / 2
    assert kwise_ranking_loss(scores, prefer).item() == pytest.approx(expected, abs=1e-6)


def test_ties_give_no_pairs() -> None:
    prefer, _ = preference_matrix([[[0, 1], [2]]], 3)
    assert prefer.sum().item() == 2 and not prefer[0, 0, 1] and not prefer[0, 1, 0]
    assert sorted(pairs_from_tie_groups([[0, 1], [2]])) == [(0, 2, 1), (1, 2, 1)]
    base = kwise_ranking_loss(torch.tensor([[1.0, 1.0, 0.0]]), prefer)
    moved = kwise_ranking_loss(torch.tensor([[1.0, 5.0, 0.0]]), prefer)
    assert base.item() == pytest.approx(pair_loss(1.0), abs=1e-6)
    assert moved.item() == pytest.approx((pair_loss(1.0) + pair_loss(5.0)) / 2, abs=1e-6)


def test_a_fully_tied_prompt_adds_nothing_and_an_all_tied_batch_has_zero_loss() -> None:
    scores = torch.tensor([[3.0, -2.0], [1.0, 0.0]], requires_grad=True)
    prefer, _ = preference_matrix([[[0, 1]], [[0], [1]]], 2)
    loss = kwise_ranking_loss(scores, prefer)
    assert loss.item() == pytest.approx(pair_loss(1.0), abs=1e-6)
    loss.backward()
    assert scores.grad is not None and scores.grad[0].abs().sum().item() == 0.0

    all_tied, _ = preference_matrix([[[0, 1]]], 2)
    zero = kwise_ranking_loss(torch.tensor([[3.0, -2.0]], requires_grad=True), all_tied)
    assert zero.item() == 0.0 and zero.requires_grad


def test_margin_shifts_each_pair_by_its_margin() -> None:
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    prefer, distance = preference_matrix([[[0], [2], [1]]], 3)
    loss = kwise_ranking_loss(scores, prefer, margin=0.5 * distance)
    # 0>2 is one group apart (m=0.5), 0>1 two (m=1.0), 2>1 one (m=0.5).
    expected = (pair_loss(0.5) + pair_loss(1.0) + pair_loss(0.5)) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_gradient_matches_the_pairwise_reference() -> None:
    scores = torch.tensor([[0.3, -0.2, 0.9, 0.1]], requires_grad=True)
    prefer, _ = preference_matrix([[[2], [0, 3], [1]]], 4)
    kwise_ranking_loss(scores, prefer).backward()
    reference = scores.detach().clone().requires_grad_(True)
    pairs = pairs_from_tie_groups([[2], [0, 3], [1]])
    losses = [
        -torch.nn.functional.logsigmoid(reference[0, win] - reference[0, lose])
        for win, lose, _ in pairs
    ]
    torch.stack(losses).mean().backward()
    assert scores.grad is not None and reference.grad is not None
    assert torch.allclose(scores.grad, reference.grad, atol=1e-7)


def test_pairwise_accuracy_counts_strict_wins_over_all_pairs() -> None:
    scores = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    prefer, _ = preference_matrix([[[0], [1], [2]], [[1], [0], [2]]], 3)
    # Prompt 1: 0>1 yes, 0>2 yes, 1>2 no. Prompt 2: 1>0 tie (wrong), 1>2 yes, 0>2 yes.
    assert correct_pairs(scores, prefer).tolist() == [2, 2]
    assert pairwise_accuracy(scores, prefer).item() == pytest.approx(4 / 6)
    assert math.isnan(pairwise_accuracy(scores, torch.zeros_like(prefer)).item())
