"""Consensus rankings, checked on hand-worked examples (letters stand for response ids)."""

import math
from fractions import Fraction

import pytest

from labeling.consensus import (
    BT_PRIOR_TIES,
    METHODS,
    borda,
    borda_scores,
    bradley_terry,
    bradley_terry_strengths,
    consensus_ranking,
    pairwise_wins,
    ranked_pairs,
)

A, B, C = "a", "b", "c"


def _as_sets(groups: list[list[str]]) -> list[set[str]]:
    return [set(group) for group in groups]


def test_pairwise_wins_ignore_pairs_inside_a_tie_group() -> None:
    wins = pairwise_wins([[[A, B], [C]], [[A], [B, C]]])
    assert wins == {(A, C): 2, (B, C): 1, (A, B): 1}


@pytest.mark.parametrize("method", METHODS)
def test_unanimous_rankings_are_kept(method: str) -> None:
    assert consensus_ranking([[[A], [B], [C]]] * 3, method) == [[A], [B], [C]]


@pytest.mark.parametrize("method", METHODS)
def test_one_ranking_with_ties_is_its_own_consensus(method: str) -> None:
    assert _as_sets(consensus_ranking([[[C], [A, B]]], method)) == [{C}, {A, B}]


@pytest.mark.parametrize("method", METHODS)
def test_opposite_rankings_tie(method: str) -> None:
    assert _as_sets(consensus_ranking([[[A], [B]], [[B], [A]]], method)) == [{A, B}]


@pytest.mark.parametrize("method", METHODS)
def test_a_condorcet_cycle_of_equal_strength_is_a_three_way_tie(method: str) -> None:
    # a>b, b>c and c>a each win 2 to 1: no method may break the symmetry by id.
    cycle = [[[A], [B], [C]], [[B], [C], [A]], [[C], [A], [B]]]
    assert _as_sets(consensus_ranking(cycle, method)) == [{A, B, C}]


def test_unknown_method_and_no_rankings() -> None:
    with pytest.raises(ValueError, match="unknown consensus method"):
        consensus_ranking([[[A], [B]]], "kemeny")
    assert consensus_ranking([], "borda") == []


# --- Ranked pairs ------------------------------------------------------------------------


def test_ranked_pairs_skips_the_weakest_majority_of_a_cycle() -> None:
    # 4 x a>b>c, 3 x b>c>a, 2 x c>a>b. Majorities (margins): b>c 7-2 = 5, a>b 6-3 = 3,
    # c>a 5-4 = 1. Lock b>c, then a>b; c>a would close a>b>c>a and is skipped: a > b > c.
    rankings = [[[A], [B], [C]]] * 4 + [[[B], [C], [A]]] * 3 + [[[C], [A], [B]]] * 2
    assert ranked_pairs(rankings) == [[A], [B], [C]]


def test_ranked_pairs_follows_the_condorcet_winner_where_borda_does_not() -> None:
    # 3 x a>b>c, 2 x b>c>a. a beats b 3-2 and c 3-2 (Condorcet winner); b beats c 5-0.
    # Borda: a = 3*2 = 6, b = 3*1 + 2*2 = 7, c = 2*1 = 2, so Borda puts b first.
    rankings = [[[A], [B], [C]]] * 3 + [[[B], [C], [A]]] * 2
    assert ranked_pairs(rankings) == [[A], [B], [C]]
    assert borda(rankings) == [[B], [A], [C]]


def test_ranked_pairs_ties_what_the_locked_graph_does_not_order() -> None:
    # a>b>c and c>a>b: a beats b 2-0; a-c and b-c are 1-1. Only a>b is locked, so c has
    # nothing above it and joins the first layer.
    assert _as_sets(ranked_pairs([[[A], [B], [C]], [[C], [A], [B]]])) == [{A, C}, {B}]


def test_ranked_pairs_with_input_ties() -> None:
    # [a=b > c] and [a > b=c]: a>c 2-0, a>b 1-0, b>c 1-0, all consistent.
    assert ranked_pairs([[[A, B], [C]], [[A], [B, C]]]) == [[A], [B], [C]]


# --- Borda -------------------------------------------------------------------------------


def test_borda_scores_count_half_a_point_per_tied_response() -> None:
    # [a=b > c]: a = 1 + 1/2, b = 1 + 1/2, c = 0. [a > b=c]: a = 2, b = c = 1/2.
    scores = borda_scores([[[A, B], [C]], [[A], [B, C]]])
    assert scores == {A: Fraction(7, 2), B: Fraction(2), C: Fraction(1, 2)}
    assert borda([[[A, B], [C]], [[A], [B, C]]]) == [[A], [B], [C]]


def test_borda_ties_equal_scores() -> None:
    # The ranked-pairs cycle example: a = 4*2 + 2*1 = 10, b = 4*1 + 3*2 = 10, c = 3 + 4 = 7.
    rankings = [[[A], [B], [C]]] * 4 + [[[B], [C], [A]]] * 3 + [[[C], [A], [B]]] * 2
    assert borda_scores(rankings) == {A: 10, B: 10, C: 7}
    assert _as_sets(borda(rankings)) == [{A, B}, {C}]


# --- Bradley-Terry -----------------------------------------------------------------------


def test_bradley_terry_two_responses_closed_form() -> None:
    # a beats b twice, b beats a once. With two items the MLE is p_a / p_b = w_ab / w_ba,
    # each count plus half the prior's virtual tie.
    strengths = bradley_terry_strengths([[[A], [B]], [[A], [B]], [[B], [A]]])
    half_prior = BT_PRIOR_TIES / 2
    expected = math.log((2 + half_prior) / (1 + half_prior))
    assert strengths[A] - strengths[B] == pytest.approx(expected, abs=1e-9)
    assert strengths[A] + strengths[B] == pytest.approx(0.0, abs=1e-9)  # geometric mean 1


def test_bradley_terry_solution_satisfies_the_likelihood_equations() -> None:
    # At the MLE, every item's expected wins equal its observed wins:
    # W_i = sum_j n_ij * p_i / (p_i + p_j)  (Hunter 2004, eq. 2 set to zero).
    rankings = [[[A], [B], [C]]] * 3 + [[[B], [C], [A]]] * 2 + [[[C, A], [B]]]
    theta = bradley_terry_strengths(rankings)
    p = {item: math.exp(value) for item, value in theta.items()}
    wins = pairwise_wins(rankings)
    ties = {(C, A): 1, (A, C): 1}
    for i in p:
        others = [j for j in p if j != i]
        w = {j: wins.get((i, j), 0) + 0.5 * ties.get((i, j), 0) + BT_PRIOR_TIES / 2 for j in others}
        n = {
            j: w[j] + wins.get((j, i), 0) + 0.5 * ties.get((j, i), 0) + BT_PRIOR_TIES / 2
            for j in others
        }
        expected = sum(n[j] * p[i] / (p[i] + p[j]) for j in others)
        assert expected == pytest.approx(sum(w.values()), rel=1e-8)


def test_bradley_terry_orders_by_strength() -> None:
    # a beats b and c in all three rankings, b beats c in two: a > b > c.
    rankings = [[[A], [B], [C]], [[A], [B], [C]], [[A], [C], [B]]]
    assert bradley_terry(rankings) == [[A], [B], [C]]


def test_bradley_terry_all_tied_input_stays_tied() -> None:
    assert _as_sets(bradley_terry([[[A, B, C]]])) == [{A, B, C}]
